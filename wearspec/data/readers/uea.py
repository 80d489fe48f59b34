"""UEA/UCR multivariate time-series archive ``.ts`` files (BasicMotions, ...): one window per series.

The text format (as sktime and aeon write it): ``#`` comment lines, ``@key value`` header lines
(``@problemName``, ``@timeStamps false``, ``@dimensions D``, ``@equalLength true``, ``@seriesLength T``,
``@classLabel true A B C``), then ``@data`` and one series a line: the D dimensions separated by
``:``, the T values of each separated by ``,``, the class label last (``?`` is a missing value)::

    1.0,2.0,3.0:0.5,0.6,0.7:walking

Only equal-length series without time stamps are read. Each file becomes one pseudo-subject
(``train`` for ``*_TRAIN.ts``, ``test`` for ``*_TEST.ts``, else the file's stem) with the dataset's
own split in the store's split column, since the archive has no subject ids: evaluate with
``split.mode=predefined`` and say that the split is the archive's, not subject-wise. Channels are
named ``dim_0`` ... ``dim_{D-1}``. The format carries no sampling rate: the series are taken to be at
``window.rate``, so set ``window.rate`` to the data set's rate and ``window.length_s`` to
T / rate (BasicMotions: 10 Hz, 100 samples: ``window.rate=10 window.length_s=10 window.hop_s=10``).

``wearspec prepare uea BasicMotions/ -o data/bm window.rate=10 window.length_s=10 window.hop_s=10``
reads both files of a folder (or one ``.ts`` file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wearspec.data.readers import Source
from wearspec.data.windowing import WindowBatch
from wearspec.errors import WearspecError

if TYPE_CHECKING:
    from wearspec.data.prepare import PrepareConfig

SPLIT_CODES = {"train": 0, "test": 2}  # store split column: 0 train, 1 val, 2 test


@dataclass
class TsData:
    """One ``.ts`` file: series (n, D, T) float32 (NaN where missing), label strings (n,) and the header."""

    x: np.ndarray
    labels: list[str]
    header: dict[str, str] = field(default_factory=dict)

    @property
    def class_labels(self) -> list[str]:
        """The classes the header declares (``@classLabel true A B ...``), in order, else those seen, sorted."""
        words = self.header.get("classlabel", "").split()
        return words[1:] if words[:1] == ["true"] and len(words) > 1 else sorted(set(self.labels))


def read_ts(path: str | Path) -> TsData:
    """Parse one ``.ts`` file (module docstring); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise WearspecError(f"{path}: .ts file not found")
    header: dict[str, str] = {}
    rows, labels, data_line = [], [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if data_line is None:
                if not line.startswith("@"):
                    raise WearspecError(f"{path}:{number}: expected a @header line or @data, got {line[:40]!r}")
                key, _, value = line[1:].partition(" ")
                if key.lower() == "data":
                    data_line = number
                    _check_header(path, header)
                else:
                    header[key.lower()] = value.strip()
                continue
            dims = line.split(":")
            if len(dims) < 2:
                raise WearspecError(f"{path}:{number}: expected dimensions separated by ':' and a class label")
            labels.append(dims[-1].strip())
            try:
                rows.append([np.array(d.replace("?", "nan").split(","), dtype=np.float64) for d in dims[:-1]])
            except ValueError as e:
                raise WearspecError(f"{path}:{number}: non-numeric value ({e})") from None
            _check_row(path, number, rows[-1], rows[0], header)
    if data_line is None or not rows:
        raise WearspecError(f"{path}: no series (expected @data followed by one series a line)")
    x = np.stack([np.stack(r) for r in rows]).astype(np.float32)
    return TsData(x=x, labels=labels, header=header)


def _check_header(path: Path, header: dict[str, str]) -> None:
    if header.get("timestamps", "false").lower() == "true":
        raise WearspecError(f"{path}: @timeStamps true is not supported (expected plain values)")
    if header.get("equallength", "true").lower() == "false":
        raise WearspecError(f"{path}: @equalLength false is not supported (expected series of one length)")


def _check_row(path: Path, number: int, row: list[np.ndarray], first: list[np.ndarray], header: dict) -> None:
    dims = int(header["dimensions"]) if re.fullmatch(r"\d+", header.get("dimensions", "")) else len(first)
    if len(row) != dims:
        raise WearspecError(f"{path}:{number}: expected {dims} dimensions, got {len(row)}")
    length = int(header["serieslength"]) if re.fullmatch(r"\d+", header.get("serieslength", "")) else first[0].size
    bad = [i for i, d in enumerate(row) if d.size != length]
    if bad:
        raise WearspecError(f"{path}:{number}: dimension {bad[0]} has {row[bad[0]].size} values, expected {length}")


def ts_files(path: Path) -> list[Path]:
    """``path`` itself, or the ``.ts`` files of a folder (sorted: ``*_TEST`` before ``*_TRAIN``)."""
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.ts"))
    if not files:
        raise WearspecError(f"{path}: no .ts files in the folder")
    return files


def split_of(path: Path) -> str:
    """``train`` / ``test`` from a ``*_TRAIN.ts`` / ``*_TEST.ts`` name, else the file's stem."""
    tail = path.stem.rsplit("_", 1)[-1].lower()
    return tail if tail in SPLIT_CODES else path.stem


def open_source(path: Path | None, cfg: PrepareConfig) -> Source:
    """The reader protocol: one :class:`WindowBatch` per file, at ``cfg.window.rate`` (the format has none)."""
    if path is None:
        raise WearspecError("uea: expected a .ts file or a folder of them")
    files = ts_files(path)
    parsed = [read_ts(f) for f in files]
    names = parsed[0].class_labels
    for f, d in zip(files, parsed):
        unknown = sorted(set(d.labels) - set(names))
        if unknown:
            raise WearspecError(f"{f}: class label {unknown[0]!r} is not among {names} (from {files[0].name})")
        if d.x.shape[1:] != parsed[0].x.shape[1:]:
            raise WearspecError(f"{f}: series of shape {d.x.shape[1:]}, expected {parsed[0].x.shape[1:]} as in "
                                f"{files[0].name}")
    code = {n: i for i, n in enumerate(names)}

    def items():
        for f, d in zip(files, parsed):
            split = split_of(f)
            yield WindowBatch(subject=split, recording=f.stem, windows=d.x, rate=float(cfg.window.rate),
                              labels=np.array([code[a] for a in d.labels], np.int32), source=str(f),
                              split=split if split in SPLIT_CODES else None)

    return Source(name="uea", channels=[f"dim_{i}" for i in range(parsed[0].x.shape[1])], label_names=names,
                  items=items(), inputs=files,
                  meta={"problem": parsed[0].header.get("problemname", ""), "subjects": "one per file (no ids)"})
