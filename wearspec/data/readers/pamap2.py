"""PAMAP2 Physical Activity Monitoring: ``PAMAP2_Dataset/Protocol/subject101.dat`` …

Input: one ``.dat`` file, a folder of them (``Protocol`` or ``Optional``), or the
``PAMAP2_Dataset`` folder (``Protocol/``, plus ``Optional/`` with ``pamap2.include_optional=true``).

Each line holds 54 space-separated values at 100 Hz: timestamp (s), activityID, heart rate (bpm,
mostly NaN), then three IMUs (hand, chest, ankle) × 17 values: temperature (°C), acc16 x/y/z
(±16 g, m/s²), acc6 x/y/z (±6 g, m/s²), gyro x/y/z (rad/s), mag x/y/z (µT) and a 4-value
orientation that the dataset marks invalid (not offered). ``pamap2.imus`` and ``pamap2.sensors``
choose the channels, named ``<imu>_<sensor>_<axis>`` (``hand_acc16_x``) or ``<imu>_temperature``,
ordered IMU by IMU, sensor by sensor as listed in the config. Values stay in their native units;
NaN (dropped wireless packets) is left for the NaN policy.

Labels: one fixed list for every store, so that stores from different subjects or folders share
codes: the 12 Protocol activities in ID order, then the 6 Optional ones (see ``LABEL_NAMES``).
ActivityID 0 (transient) is unlabelled (-1); any other ID is an error naming the line.
Subject: the number in the file name (``subject101`` → ``101``). Recording: the file name
(``subject101``, ``subject101_optional`` for the Optional folder); timestamp gaps (> 1 s) split a
file into parts (``subject101_part2``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from wearspec.data.readers import Source
from wearspec.data.readers.chunks import (
    check_choice,
    file_recordings,
    read_chunks,
    split_whitespace,
)
from wearspec.data.readers.tables import check_file, files_matching, require_path
from wearspec.errors import WearspecError

RATE = 100.0
N_COLUMNS = 54
PROTOCOL_ACTIVITIES = {
    1: "lying", 2: "sitting", 3: "standing", 4: "walking", 5: "running", 6: "cycling",
    7: "nordic_walking", 12: "ascending_stairs", 13: "descending_stairs", 16: "vacuum_cleaning",
    17: "ironing", 24: "rope_jumping",
}  # fmt: skip
OPTIONAL_ACTIVITIES = {
    9: "watching_tv", 10: "computer_work", 11: "car_driving", 18: "folding_laundry",
    19: "house_cleaning", 20: "playing_soccer",
}  # fmt: skip
ACTIVITY_IDS = list(PROTOCOL_ACTIVITIES) + list(OPTIONAL_ACTIVITIES)
LABEL_NAMES = list(PROTOCOL_ACTIVITIES.values()) + list(OPTIONAL_ACTIVITIES.values())
IMUS = {"hand": 3, "chest": 20, "ankle": 37}  # first column (0-based) of each IMU block
SENSORS = {"temperature": (0, ("",)), "acc16": (1, "xyz"), "acc6": (4, "xyz"), "gyro": (7, "xyz"), "mag": (10, "xyz")}
COLUMNS = ["timestamp", "activityID", "heart_rate"] + [
    f"{imu}_{name}"
    for imu in IMUS
    for name in ["temperature"] + [f"{s}_{a}" for s in ("acc16", "acc6", "gyro", "mag") for a in "xyz"]
    + [f"orientation_{k}" for k in range(4)]
]
_FILE = r"subject\d+\.dat"
EXPECTED = "PAMAP2 subjectNNN.dat files, a Protocol/Optional folder of them, or the PAMAP2_Dataset folder"

# activityID → label code; 0 → -1 (transient); unknown → -2 (error)
_LUT = np.full(256, -2, np.int32)
_LUT[0] = -1
for _code, _id in enumerate(ACTIVITY_IDS):
    _LUT[_id] = _code


def channel_layout(imus: list[str], sensors: list[str]) -> tuple[list[str], list[int]]:
    """Channel names and their 0-based columns in a PAMAP2 line."""
    names, cols = [], []
    for imu in imus:
        for s in sensors:
            offset, axes = SENSORS[s]
            for k, a in enumerate(axes):
                names.append(f"{imu}_{s}_{a}" if a else f"{imu}_{s}")
                cols.append(IMUS[imu] + offset + k)
    return names, cols


def find_files(path: Path, include_optional: bool) -> list[Path]:
    """The .dat files that ``path`` designates (see the module docstring)."""
    if path.is_file():
        return [path]
    found = files_matching(path, _FILE)
    if found:
        return found
    sub = {p.name.lower(): p for p in path.iterdir() if p.is_dir()}
    if "protocol" in sub:
        found = files_matching(sub["protocol"], _FILE)
        if include_optional and "optional" in sub:
            found += files_matching(sub["optional"], _FILE)
        if found:
            return found
    raise WearspecError(f"{path}: no subjectNNN.dat files found; expected {EXPECTED}")


def _names(path: Path) -> tuple[str, str]:
    """(subject, recording) from the file name and folder."""
    m = re.fullmatch(r"subject(\d+)", path.stem, re.IGNORECASE)
    subject = m.group(1) if m else path.stem
    recording = path.stem
    if path.parent.name.lower() == "optional":
        recording += "_optional"
    return subject, recording


def read_file(path: Path, cols: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One .dat file → time (s) (n,), label codes (n,), data (C, n) float32, line numbers (n,)."""
    check_file(path)
    times, codes, data, lines = [], [], [], []
    for text, first, last in read_chunks(path):
        tab = split_whitespace(text, first, N_COLUMNS, path, COLUMNS, is_last=last)
        if not len(tab):
            continue
        ids = tab.floats(1)
        whole = np.isfinite(ids) & (ids == np.round(ids)) & (ids >= 0) & (ids < _LUT.size)
        code = np.where(whole, _LUT[np.where(whole, ids, 0).astype(np.int64)], -2)
        if (code == -2).any():
            i = int(np.argmax(code == -2))
            raise tab.error(
                i, 1, f"unknown activityID {tab.value(i, 1)!r}; expected 0 (transient) or one of "
                f"{', '.join(map(str, sorted(ACTIVITY_IDS)))}"
            )
        t = tab.floats(0)
        if not np.isfinite(t).all():
            i = int(np.argmax(~np.isfinite(t)))
            raise tab.error(i, 0, f"expected a time in seconds, got {tab.value(i, 0)!r}")
        times.append(t)
        codes.append(code.astype(np.int32))
        data.append(np.stack([tab.floats(c, dtype=np.float32) for c in cols]))
        lines.append(tab.lines)
    return np.concatenate(times), np.concatenate(codes), np.concatenate(data, axis=1), np.concatenate(lines)


def open_source(path: Path | None, cfg) -> Source:
    """PAMAP2 files → one recording per continuous part of each file (see the module docstring)."""
    pc = cfg.pamap2
    imus = check_choice(pc.imus, list(IMUS), "pamap2.imus")
    sensors = check_choice(pc.sensors, list(SENSORS), "pamap2.sensors")
    channels, cols = channel_layout(imus, sensors)
    path = require_path(path, EXPECTED)
    files = find_files(path, getattr(pc, "include_optional", False))

    return Source(
        name="pamap2",
        channels=channels,
        label_names=list(LABEL_NAMES),
        items=file_recordings(files, _names, lambda f: read_file(f, cols), RATE),
        inputs=files,
        meta={"dataset": "PAMAP2", "units": "acc m/s^2, gyro rad/s, mag uT, temperature degC"},
    )
