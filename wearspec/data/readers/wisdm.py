"""WISDM phone accelerometer data: v1.1 (``WISDM_ar_v1.1_raw.txt``) and the 2019 release.

Inputs:

* **v1.1** (Kwapisz et al. 2010): ``WISDM_ar_v1.1_raw.txt`` or the folder that holds it. Records
  ``user,activity,timestamp,x,y,z;`` (phone in the trouser pocket, m/s², 20 Hz nominal); activities
  Walking, Jogging, Upstairs, Downstairs, Sitting, Standing → labels ``walking`` … ``standing``.
* **2019** (WISDM Smartphone and Smartwatch Activity and Biometrics): one
  ``data_<subject>_<accel|gyro>_<phone|watch>.txt`` file, a folder of them (such as
  ``wisdm-dataset/raw/phone/accel``; one sensor and device per store) or the ``wisdm-dataset``
  folder (→ ``raw/phone/accel``). Activity codes A–S (no N) → 18 labels (``ACTIVITIES_2019``).
  Accelerometer channels are ``acc_x/y/z`` (m/s²), gyroscope ``gyro_x/y/z`` (rad/s).

Quirks of the raw text and the policy for each:

* records end with ``;``; a line may hold several records, and empty records (blank lines, the
  text after the last ``;``) are skipped;
* a record with an extra empty field (``…,z,;``) is accepted; an empty x/y/z value is a missing
  sample (NaN, left for the NaN policy); any other field count is an error naming the line;
* non-numeric values, a non-integer user or timestamp, an unknown activity: errors naming the line;
* timestamp 0 marks a record without a valid time: such records are dropped (with a warning that
  counts them).

Timing policy. WISDM timestamps (ns) are known to be unreliable: intervals jitter widely around the
nominal 50 ms, some repeat, and the clock restarts between sessions. As in the dataset's own
papers, consecutive records of one user and activity are taken as consecutive samples at 20 Hz.
The timestamps are used (1) to split: a new recording starts where the user or activity changes,
where the timestamp goes backwards, and at a gap over ``MAX_GAP_S`` = 1 s; and (2) to check the
rate, per file, with :func:`~wearspec.data.windowing.uniform_from_timestamps` on the pooled forward
intervals inside recordings: the median must imply 20 Hz within ``RATE_TOLERANCE`` = 60 % (8–32 Hz:
catches other units or another data set) while irregular intervals are tolerated
(``max_irregular_fraction=1``). Recordings are named ``<user>_<activity>_<k>``; the subject is the
user id.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from wearspec.data.readers import Source
from wearspec.data.readers.chunks import (
    read_chunks,
    split_delimited,
)
from wearspec.data.readers.tables import check_file, files_matching, require_path
from wearspec.data.windowing import Recording, uniform_from_timestamps
from wearspec.errors import WearspecError

RATE = 20.0
MAX_GAP_S = 1.0
RATE_TOLERANCE = 0.6
COLUMNS = ["user", "activity", "timestamp", "x", "y", "z"]
ACTIVITIES_V11 = {
    "Walking": "walking", "Jogging": "jogging", "Upstairs": "upstairs", "Downstairs": "downstairs",
    "Sitting": "sitting", "Standing": "standing",
}  # fmt: skip
ACTIVITIES_2019 = {
    "A": "walking", "B": "jogging", "C": "stairs", "D": "sitting", "E": "standing", "F": "typing",
    "G": "brushing_teeth", "H": "eating_soup", "I": "eating_chips", "J": "eating_pasta",
    "K": "drinking", "L": "eating_sandwich", "M": "kicking", "O": "playing_catch",
    "P": "dribbling", "Q": "writing", "R": "clapping", "S": "folding_clothes",
}  # fmt: skip
_V11_FILE = r"WISDM_ar_v1\.\d+_raw\.txt"
_2019_FILE = r"data_(\d+)_(accel|gyro)_(phone|watch)\.txt"
EXPECTED = (
    "WISDM_ar_v1.1_raw.txt (or its folder), or WISDM 2019 data_<id>_<sensor>_<device>.txt files "
    "(a raw/<device>/<sensor> folder, or the wisdm-dataset folder)"
)


def find_files(path: Path) -> tuple[str, list[Path]]:
    """(format '1.1' or '2019', files) for ``path``."""
    if path.is_file():
        if re.fullmatch(_2019_FILE, path.name, re.IGNORECASE):
            return "2019", [path]
        if re.fullmatch(_V11_FILE, path.name, re.IGNORECASE):
            return "1.1", [path]
        return _sniff(path), [path]
    v11 = files_matching(path, _V11_FILE)
    if v11:
        return "1.1", v11[:1]
    folder = path
    if not files_matching(folder, _2019_FILE) and (path / "raw" / "phone" / "accel").is_dir():
        folder = path / "raw" / "phone" / "accel"
    found = files_matching(folder, _2019_FILE)
    if not found:
        raise WearspecError(f"{path}: no WISDM files found; expected {EXPECTED}")
    kinds = {re.fullmatch(_2019_FILE, p.name, re.IGNORECASE).group(2, 3) for p in found}
    if len(kinds) > 1:
        raise WearspecError(
            f"{folder}: holds files of several sensors/devices {sorted(kinds)}; expected one "
            "(point the input at one raw/<device>/<sensor> folder)"
        )
    return "2019", found


def _sniff(path: Path) -> str:
    """Format of a file with another name, from the activity field of its first record."""
    check_file(path)
    for text, first, last in read_chunks(path, 1 << 16):
        rec = text.split(b";", 1)[0].split(b"\n", 1)[0].split(b",")
        if len(rec) >= 2 and rec[1].strip():
            return "2019" if len(rec[1].strip()) == 1 else "1.1"
    raise WearspecError(f"{path}: no WISDM records found; expected {EXPECTED}")


def _sensor(files: list[Path], fmt: str) -> tuple[str, str]:
    if fmt == "2019":
        m = re.fullmatch(_2019_FILE, files[0].name, re.IGNORECASE)
        if m:
            return m.group(2).lower(), m.group(3).lower()
    return "accel", "phone"


def read_file(path: Path, activities: dict[str, str]):
    """All records of one file → users (n,), activity codes (n,), timestamps ns (n,), xyz (3, n), lines."""
    check_file(path)
    codes_of = {name: i for i, name in enumerate(activities)}
    cache: dict[bytes, int] = {}
    users, acts, times, data, lines = [], [], [], [], []
    for text, first, last in read_chunks(path):
        tab = split_delimited(
            text, first, len(COLUMNS), path, COLUMNS, record_ends=b";\n", trailing_delimiter_ok=True, is_last=last
        )
        if not len(tab):
            continue
        values = tab.bytes_list(1)
        for v in set(values).difference(cache):
            code = codes_of.get(v.strip().decode("utf-8", "replace"), -1)
            if code < 0:
                i = values.index(v)
                raise tab.error(i, 1, f"unknown activity {tab.value(i, 1)!r}; expected one of {', '.join(activities)}")
            cache[v] = code
        acts.append(np.fromiter(map(cache.__getitem__, values), np.int32, count=len(values)))
        users.append(tab.ints(0))
        t = tab.ints(2)
        if (t < 0).any():
            i = int(np.argmax(t < 0))
            raise tab.error(i, 2, f"expected a timestamp in ns (≥ 0), got {tab.value(i, 2)!r}")
        times.append(t)
        data.append(np.stack([tab.floats(j, empty_is_nan=True, dtype=np.float32) for j in (3, 4, 5)]))
        lines.append(tab.lines)
    if not users:
        raise WearspecError(f"{path}: no WISDM records found")
    return (
        np.concatenate(users),
        np.concatenate(acts),
        np.concatenate(times),
        np.concatenate(data, axis=1),
        np.concatenate(lines),
    )


def split_runs(users: np.ndarray, acts: np.ndarray, t_ns: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges of recordings: breaks where user/activity change, time goes back, or a gap > 1 s."""
    n = users.shape[0]
    if n == 0:
        return []
    dt = np.diff(t_ns).astype(np.float64) / 1e9
    brk = (users[1:] != users[:-1]) | (acts[1:] != acts[:-1]) | (dt < 0) | (dt > MAX_GAP_S)
    bounds = np.concatenate([[0], np.flatnonzero(brk) + 1, [n]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def check_rate(t_ns: np.ndarray, runs: list[tuple[int, int]], source: Path) -> None:
    """The pooled forward intervals inside recordings must imply 20 Hz (see the module docstring)."""
    inner = [np.diff(t_ns[a:b]) for a, b in runs if b - a > 1]
    if not inner:
        return
    dt = np.concatenate(inner).astype(np.float64) / 1e9
    dt = dt[dt > 0]
    if dt.size == 0:
        return
    pooled = np.concatenate([[0.0], np.cumsum(dt)])
    for _ in uniform_from_timestamps(
        pooled, RATE, str(source), max_gap_s=np.inf, rate_tolerance=RATE_TOLERANCE, max_irregular_fraction=1.0
    ):
        pass


def open_source(path: Path | None, cfg) -> Source:
    """WISDM files → one recording per run of one user and activity (see the module docstring)."""
    path = require_path(path, EXPECTED)
    fmt, files = find_files(path)
    activities = ACTIVITIES_V11 if fmt == "1.1" else ACTIVITIES_2019
    sensor, device = _sensor(files, fmt)
    prefix = "acc" if sensor == "accel" else "gyro"
    label_names = list(activities.values())

    def items():
        for f in files:
            users, acts, t_ns, data, lines = read_file(f, activities)
            valid = t_ns != 0
            if not valid.all():
                warnings.warn(f"{f}: dropped {int((~valid).sum())} records with timestamp 0 (no valid time)")
                users, acts, t_ns, data = users[valid], acts[valid], t_ns[valid], data[:, valid]
            runs = split_runs(users, acts, t_ns)
            check_rate(t_ns, runs, f)
            counter: dict[tuple[int, int], int] = {}
            for a, b in runs:
                key = (int(users[a]), int(acts[a]))
                k = counter[key] = counter.get(key, -1) + 1
                yield Recording(
                    subject=str(key[0]),
                    recording=f"{key[0]}_{label_names[key[1]]}_{k}",
                    data=np.ascontiguousarray(data[:, a:b]),
                    rate=RATE,
                    labels=np.full(b - a, key[1], np.int32),
                    start=float(t_ns[a]) / 1e9,
                    source=str(f),
                )

    return Source(
        name="wisdm",
        channels=[f"{prefix}_{a}" for a in "xyz"],
        label_names=label_names,
        items=items(),
        inputs=files,
        meta={
            "dataset": f"WISDM {fmt}",
            "sensor": sensor,
            "device": device,
            "units": "m/s^2" if sensor == "accel" else "rad/s",
        },
    )
