"""UCI-HAR (Human Activity Recognition Using Smartphones): the raw ``Inertial Signals``.

``wearspec prepare ucihar "UCI HAR Dataset" window.length_s=2.56 window.hop_s=1.28``

The dataset is already windowed: 2.56 s windows (128 samples at 50 Hz, 50 % overlap) of 30
subjects, split by the authors into ``train`` (21 subjects) and ``test`` (9). Files read::

    activity_labels.txt                          "1 WALKING" ... "6 LAYING"
    {split}/y_{split}.txt                        one activity id per window
    {split}/subject_{split}.txt                  one subject id (1..30) per window
    {split}/Inertial Signals/{signal}_{axis}_{split}.txt   one window (128 values) per line

``ucihar.signals`` picks signal groups (``total_acc``, ``body_acc``, ``body_gyro``; channels are
``total_acc_x``, ``total_acc_y``, ...), ``ucihar.splits`` the splits (``train``, ``test``). Each
(split, subject) becomes one batch of windows with the dataset's split kept in the store, subject
``S01``..``S30``, label names from ``activity_labels.txt`` and window starts at 1.28 s steps.
``window.length_s`` must be 2.56 (the windows are not re-cut); with another ``window.rate`` the
windows are resampled. The ``PATH`` may also be the folder that contains ``UCI HAR Dataset``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wearspec.data.readers import Source
from wearspec.data.readers.tables import check_file, count_lines, gc_paused
from wearspec.data.windowing import WindowBatch
from wearspec.errors import WearspecError, where

RATE = 50.0
WINDOW = 128  # samples per window
HOP_S = 1.28
SIGNALS = ("total_acc", "body_acc", "body_gyro")
SPLITS = ("train", "test")
AXES = ("x", "y", "z")


def _read_ints(path: Path, what: str) -> np.ndarray:
    """One integer per line (blank trailing lines ignored)."""
    check_file(path, f"one {what} per line")
    lines = path.read_text().rstrip().split("\n")
    out = np.empty(len(lines), np.int64)
    for i, line in enumerate(lines):
        try:
            out[i] = int(line.strip())
        except ValueError:
            raise WearspecError(f"{where(path, f'line {i + 1}')}: expected {what} (an integer), found {line.strip()!r}") from None
    return out


def _read_activities(path: Path) -> dict[int, str]:
    check_file(path, "lines '<id> <ACTIVITY>'")
    out: dict[int, str] = {}
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            out[int(parts[0])] = parts[1]
        except ValueError:
            raise WearspecError(
                f"{where(path, f'line {i + 1}')}: expected '<id> <ACTIVITY>' (e.g. '1 WALKING'), found {line.strip()!r}"
            ) from None
    if not out:
        raise WearspecError(f"{path}: no activities listed (expected lines like '1 WALKING')")
    return out


def _read_signal(path: Path, n_expected: int) -> np.ndarray:
    """One signal file → (n, 128) float32; each line must hold 128 numbers."""
    lines = path.read_text().rstrip().split("\n")
    with gc_paused():
        rows = [line.split() for line in lines]
    lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    bad = np.flatnonzero(lens != WINDOW)
    if bad.size:
        i = int(bad[0])
        tail = " (truncated file?)" if i == len(rows) - 1 else ""
        raise WearspecError(f"{where(path, f'line {i + 1}')}: expected {WINDOW} values, found {int(lens[i])}{tail}")
    if len(rows) != n_expected:  # changed since open_source counted
        raise WearspecError(f"{path}: expected {n_expected} lines, found {len(rows)}")
    try:
        return np.array(rows, dtype=np.float32)
    except ValueError:
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                try:
                    float(v)
                except ValueError:
                    raise WearspecError(
                        f"{where(path, f'line {i + 1}, value {j + 1}')}: expected a number, found {v!r}"
                    ) from None
        raise


def _find_root(path: Path) -> Path:
    if not (path / "activity_labels.txt").exists() and (path / "UCI HAR Dataset" / "activity_labels.txt").exists():
        return path / "UCI HAR Dataset"
    return path


def open_source(path: Path, cfg) -> Source:
    """Check the tree, labels and line counts up front; parse the signal files split by split."""
    if path is None or not Path(path).is_dir():
        raise WearspecError(f"{path}: expected the 'UCI HAR Dataset' folder")
    root = _find_root(Path(path))
    u = cfg.ucihar
    for name, values, allowed in (("signals", u.signals, SIGNALS), ("splits", u.splits, SPLITS)):
        unknown = [v for v in values if v not in allowed]
        if unknown or not values or len(set(values)) != len(values):
            raise WearspecError(
                f"ucihar.{name}: expected distinct values among {', '.join(allowed)}, got {list(values)}"
            )
    spec = cfg.window
    if abs(spec.length_s - WINDOW / RATE) * spec.rate > 1.0:
        raise WearspecError(
            f"{root}: UCI-HAR windows are {WINDOW / RATE} s long ({WINDOW} samples at {RATE:g} Hz) but "
            f"window.length_s={spec.length_s}; pass window.length_s=2.56 window.hop_s=1.28"
        )
    activities = _read_activities(root / "activity_labels.txt")
    ids = sorted(activities)
    names = [activities[i] for i in ids]
    code_of = {i: k for k, i in enumerate(ids)}
    channels = [f"{s}_{a}" for s in u.signals for a in AXES]
    inputs = [root / "activity_labels.txt"]
    plans = []
    for split in u.splits:
        folder = root / split
        if not folder.is_dir():
            raise WearspecError(f"{folder}: folder not found (expected the {split} split of UCI-HAR)")
        ypath, spath = folder / f"y_{split}.txt", folder / f"subject_{split}.txt"
        y = _read_ints(ypath, "an activity id")
        subj = _read_ints(spath, "a subject id")
        if len(y) != len(subj):
            raise WearspecError(f"line count mismatch: {ypath} has {len(y)} lines but {spath} has {len(subj)}")
        unknown = ~np.isin(y, ids)
        if unknown.any():
            i = int(np.argmax(unknown))
            raise WearspecError(
                f"{where(ypath, f'line {i + 1}')}: activity id {int(y[i])} is not in "
                f"{root / 'activity_labels.txt'} (ids {', '.join(map(str, ids))})"
            )
        files = [folder / "Inertial Signals" / f"{s}_{a}_{split}.txt" for s in u.signals for a in AXES]
        for f in files:
            check_file(f, f"{WINDOW} values per line")
            n = count_lines(f)
            if n != len(y):
                raise WearspecError(f"line count mismatch: {f} has {n} lines but {ypath} has {len(y)}")
        inputs += [ypath, spath, *files]
        labels = np.array([code_of[int(v)] for v in y], dtype=np.int32)
        plans.append((split, files, labels, subj))

    def items():
        for split, files, labels, subj in plans:
            x = np.stack([_read_signal(f, len(labels)) for f in files], axis=1)  # (n, C, 128)
            uniq, first = np.unique(subj, return_index=True)
            for s in uniq[np.argsort(first)]:
                idx = np.flatnonzero(subj == s)
                yield WindowBatch(
                    subject=f"S{int(s):02d}",
                    recording=f"{split}-S{int(s):02d}",
                    windows=np.ascontiguousarray(x[idx]),
                    rate=RATE,
                    labels=labels[idx],
                    starts=np.arange(len(idx), dtype=np.float64) * HOP_S,
                    source=f"{files[0].parent} ({split}, subject {int(s)})",
                    split=split,
                )

    meta = {"dataset": "UCI-HAR", "native_rate": RATE, "splits": list(u.splits)}
    return Source("ucihar", channels, names, items(), inputs=inputs, meta=meta)
