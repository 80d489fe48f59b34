"""Daphnet Freezing of Gait: ``dataset_fog_release/dataset/S01R01.txt`` …

Input: one ``SxxRyy.txt`` file, the ``dataset`` folder of them, or the ``dataset_fog_release``
folder that holds ``dataset/``.

Each line holds 11 space-separated integers at 64 Hz: time (ms), then three accelerometers (ankle,
thigh, trunk) × x/y/z in mg (x horizontal forward, y vertical, z horizontal lateral), then the
annotation: 0 = not part of the experiment (unlabelled, -1), 1 = no freeze, 2 = freeze. Any other
annotation is an error naming the line. ``daphnet.sensors`` picks the locations; channels are
``<location>_<axis>`` (``ankle_x``) in the config's order, values in mg as recorded.

Subject ``S01`` and recording ``S01R01`` come from the file name. The millisecond timestamps are
rounded (15 or 16 ms steps), well within the 5 % rate tolerance; gaps over 1 s split a file into
parts (``S01R01_part2``).
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

RATE = 64.0
LOCATIONS = {"ankle": 1, "thigh": 4, "trunk": 7}  # first column (0-based) of each accelerometer
COLUMNS = ["time_ms"] + [f"{loc}_{a}" for loc in LOCATIONS for a in "xyz"] + ["annotation"]
LABEL_NAMES = ["no_freeze", "freeze"]
_FILE = r"S\d+R\d+\.txt"
EXPECTED = "Daphnet SxxRyy.txt files, the dataset/ folder of them, or the dataset_fog_release folder"


def find_files(path: Path) -> list[Path]:
    """The recording files that ``path`` designates."""
    if path.is_file():
        return [path]
    found = files_matching(path, _FILE)
    if not found and (path / "dataset").is_dir():
        found = files_matching(path / "dataset", _FILE)
    if not found:
        raise WearspecError(f"{path}: no SxxRyy.txt files found; expected {EXPECTED}")
    return found


def _names(path: Path) -> tuple[str, str]:
    m = re.fullmatch(r"(S\d+)(R\d+)", path.stem, re.IGNORECASE)
    return (m.group(1).upper() if m else path.stem), path.stem


def read_file(path: Path, cols: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One file → time (s) (n,), label codes (n,), data (C, n) float32 in mg, line numbers (n,)."""
    check_file(path)
    times, codes, data, lines = [], [], [], []
    for text, first, last in read_chunks(path):
        tab = split_whitespace(text, first, len(COLUMNS), path, COLUMNS, is_last=last)
        if not len(tab):
            continue
        ann = tab.floats(10)
        bad = ~np.isin(ann, (0.0, 1.0, 2.0))
        if bad.any():
            i = int(np.argmax(bad))
            raise tab.error(
                i, 10, f"unknown annotation {tab.value(i, 10)!r}; expected 0 (outside the experiment), "
                "1 (no freeze) or 2 (freeze)"
            )
        t = tab.floats(0)
        if not np.isfinite(t).all():
            i = int(np.argmax(~np.isfinite(t)))
            raise tab.error(i, 0, f"expected a time in ms, got {tab.value(i, 0)!r}")
        times.append(t / 1000.0)
        codes.append(ann.astype(np.int32) - 1)
        data.append(np.stack([tab.floats(c, dtype=np.float32) for c in cols]))
        lines.append(tab.lines)
    return np.concatenate(times), np.concatenate(codes), np.concatenate(data, axis=1), np.concatenate(lines)


def open_source(path: Path | None, cfg) -> Source:
    """Daphnet files → one recording per continuous part of each file (see the module docstring)."""
    locations = check_choice(cfg.daphnet.sensors, list(LOCATIONS), "daphnet.sensors")
    channels = [f"{loc}_{a}" for loc in locations for a in "xyz"]
    cols = [LOCATIONS[loc] + k for loc in locations for k in range(3)]
    path = require_path(path, EXPECTED)
    files = find_files(path)

    return Source(
        name="daphnet",
        channels=channels,
        label_names=list(LABEL_NAMES),
        items=file_recordings(files, _names, lambda f: read_file(f, cols), RATE),
        inputs=files,
        meta={"dataset": "Daphnet FoG", "units": "mg"},
    )
