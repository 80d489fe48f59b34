"""Capture-24: ``capture24/P001.csv.gz`` … plus ``annotation-label-dictionary.csv``.

Input: the ``capture24`` folder (every ``Pnnn.csv.gz`` / ``Pnnn.csv`` in it) or one such file. The
dictionary is ``capture24.dictionary`` (default ``annotation-label-dictionary.csv``), relative to the
input folder (the file's folder for a single file) unless absolute.

Data files are CSV with the header ``time,x,y,z,annotation``: ISO date-times
(``2016-11-13 02:18:00.000000``) at 100 Hz, acceleration x/y/z in g (empty or NaN → missing, left
for the NaN policy), and a free-text annotation from the Compendium of Physical Activities (quoted
when it holds commas; empty when unannotated → unlabelled, -1). Files are parsed in 16 MiB chunks
with vectorised numpy (no per-row Python loop); the annotation is looked up once per distinct text.

Labels: ``capture24.annotation_column`` picks the scheme column of the dictionary (such as
``label:Walmsley2020`` → sleep, sedentary, light, moderate-vigorous); the label names are the
sorted distinct values of that column. An annotation missing from the dictionary is an error naming
the file and line; a dictionary row with an empty label leaves its samples unlabelled.

Subject and recording: the file stem (``P001``). Timestamps (local clock time) must match 100 Hz;
gaps over 1 s split a file into parts (``P001_part2``), and so does a jump back by more than 1 s (a
daylight-saving change); a smaller step back or a repeated time is an error naming the line.
``Recording.start`` is in seconds since the file's first sample.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from wearspec.data.readers import Source
from wearspec.data.readers.chunks import (
    header_line,
    recordings_from_parts,
    read_chunks,
    segments,
    split_delimited,
)
from wearspec.data.readers.tables import check_file, files_matching, require_path
from wearspec.errors import WearspecError, where

RATE = 100.0
MAX_GAP_S = 1.0
HEADER = ["time", "x", "y", "z", "annotation"]
TIME_EXAMPLE = "2016-11-13 02:18:00.000000"
_FILE = r"P\d+\.csv(\.gz)?"
EXPECTED = "the capture24 folder of Pnnn.csv.gz files or one such file"


def find_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    found = files_matching(path, _FILE)
    if not found:
        raise WearspecError(f"{path}: no Pnnn.csv.gz files found; expected {EXPECTED}")
    return found


def dictionary_path(path: Path, name: str) -> Path:
    p = Path(name)
    if not p.is_absolute():
        p = (path.parent if path.is_file() else path) / p
    if not p.is_file():
        raise WearspecError(
            f"{p}: annotation dictionary not found; expected {name} beside the data "
            "(set capture24.dictionary to its path)"
        )
    return p


def load_dictionary(path: Path, column: str) -> tuple[list[str], dict[str, int]]:
    """annotation-label-dictionary.csv → (label names, annotation → label code; -1 = no label)."""
    check_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise WearspecError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if not header or "annotation" not in header:
        raise WearspecError(f"{path}, line 1: expected a header with an 'annotation' column, got {header}")
    if column not in header:
        schemes = [h for h in header if h != "annotation"]
        raise WearspecError(
            f"{path}: no label column {column!r} (capture24.annotation_column); "
            f"available: {', '.join(schemes)}"
        )
    ia, il = header.index("annotation"), header.index(column)
    raw: dict[str, str] = {}
    for row in rows:
        line = rows.line_num
        if not any(row):
            continue
        if len(row) != len(header):
            raise WearspecError(f"{path}, line {line}: expected {len(header)} fields, got {len(row)}")
        ann, label = row[ia], row[il].strip()
        if ann in raw and raw[ann] != label:
            raise WearspecError(
                f"{path}, line {line}: annotation {ann!r} listed again with another {column} label "
                f"({label!r} vs {raw[ann]!r})"
            )
        raw[ann] = label
    if not raw:
        raise WearspecError(f"{path}: empty annotation dictionary (no rows after the header)")
    names = sorted({v for v in raw.values() if v})
    code = {n: i for i, n in enumerate(names)}
    return names, {a: (code[v] if v else -1) for a, v in raw.items()}


class _Annotations:
    """Annotation text (raw CSV bytes) → label code, resolved once per distinct value."""

    def __init__(self, mapping: dict[str, int], dictionary: Path):
        self.mapping, self.dictionary = mapping, dictionary
        self.cache: dict[bytes, int] = {b"": -1}

    def resolve(self, raw: bytes, where_: str) -> int:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise WearspecError(f"{where_}, column 5 (annotation): not UTF-8 text ({e.reason})") from None
        if text.startswith('"'):
            fields = next(csv.reader([text]))
            if len(fields) != 1:
                raise WearspecError(f"{where_}: expected 5 comma-separated fields ({', '.join(HEADER)})")
            text = fields[0]
        if text == "":
            return -1
        code = self.mapping.get(text)
        if code is None:
            raise WearspecError(
                f"{where_}, column 5 (annotation): unknown annotation {text[:100]!r}; "
                f"it is not in {self.dictionary.name}"
            )
        return code

    def codes(self, tab) -> np.ndarray:
        values = tab.bytes_list(4)
        new = set(values).difference(self.cache)
        if new:
            for i, v in enumerate(values):
                if v in new and v not in self.cache:
                    self.cache[v] = self.resolve(v, where(tab.source, f"line {int(tab.lines[i])}"))
        return np.fromiter(map(self.cache.__getitem__, values), dtype=np.int32, count=len(values))


def read_file(path: Path, annotations: _Annotations):
    """One file → time (µs since 1970) (n,), label codes (n,), data (3, n) float32 in g, lines (n,)."""
    check_file(path)
    times, codes, data, lines = [], [], [], []
    for text, first, last in read_chunks(path):
        if first == 1:
            head = header_line(text)
            try:
                names = next(csv.reader([head.decode("utf-8-sig")]))
            except UnicodeDecodeError:
                names = [repr(head[:60])]
            if [n.strip() for n in names] != HEADER:
                raise WearspecError(
                    f"{path}, line 1: expected the header {','.join(HEADER)}, got {','.join(names)[:120]}"
                )
            cut = text.find(b"\n") + 1
            text, first = text[cut:], 2
            if not text.strip():
                continue
        tab = split_delimited(text, first, len(HEADER), path, HEADER, rest=True, is_last=last)
        if not len(tab):
            continue
        times.append(tab.datetimes(0, TIME_EXAMPLE))
        data.append(np.stack([tab.floats(j, empty_is_nan=True, dtype=np.float32) for j in (1, 2, 3)]))
        codes.append(annotations.codes(tab))
        lines.append(tab.lines)
    if not times:
        raise WearspecError(f"{path}: no data rows after the header")
    return np.concatenate(times), np.concatenate(codes), np.concatenate(data, axis=1), np.concatenate(lines)


def open_source(path: Path | None, cfg) -> Source:
    """Capture-24 files → one recording per continuous part of each file (see the module docstring)."""
    c = cfg.capture24
    path = require_path(path, EXPECTED)
    files = find_files(path)
    dictionary = dictionary_path(path, c.dictionary)
    label_names, mapping = load_dictionary(dictionary, c.annotation_column)
    annotations = _Annotations(mapping, dictionary)

    def items():
        for f in files:
            name = re.sub(r"\.csv(\.gz)?$", "", f.name, flags=re.IGNORECASE)
            t_us, codes, data, lines = read_file(f, annotations)
            t = (t_us - t_us[0]) / 1e6
            parts = segments(t, lines, RATE, f, max_gap_s=MAX_GAP_S, split_backwards_s=MAX_GAP_S)
            yield from recordings_from_parts(name, name, t, data, codes, parts, RATE, f)

    return Source(
        name="capture24",
        channels=["x", "y", "z"],
        label_names=label_names,
        items=items(),
        inputs=files + [dictionary],
        meta={"dataset": "Capture-24", "units": "g", "label_scheme": c.annotation_column},
    )
