"""CSV / CSV.gz / Parquet tables too large to hold, read in bounded parts for the generic reader.

A CSV is read in byte chunks of whole lines (:func:`~wearspec.data.readers.chunks.read_chunks`) and
split by numpy (:func:`~wearspec.data.readers.chunks.split_delimited`); a Parquet file in record
batches. Each part is wrapped as a :class:`~wearspec.data.readers.tables.Table`-like object, so the
column conversions and error messages (file, line or row, column) are those of whole tables. The
rows then become :class:`~wearspec.data.chunked.RecordingStream` objects: one per (subject,
recording) and continuous stretch, so memory holds one part at a time whatever the file's length.

Compared with a whole table, rows of one (subject, recording) must be contiguous (a group that comes
back after another is an error naming the line), and an unset ``generic.rate`` is measured from the
first part of each recording (later parts are checked against it).
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from wearspec.data.chunked import RecordingStream
from wearspec.data.readers import chunks
from wearspec.data.readers.chunks import bytes_to_floats, header_line, read_chunks, split_delimited
from wearspec.data.readers.tables import (MISSING_TOKENS, Table, _sniff_delimiter, check_file, encode_labels,
                                          first_non_number, import_pyarrow_parquet, read_csv, read_parquet, read_text, relative_seconds,
                                          table_suffix, time_values)
from wearspec.data.windowing import uniform_from_timestamps
from wearspec.errors import WearspecError, where

PARQUET_ROWS = 1 << 20  # rows per Parquet batch
ARROW_BLOCK = 1 << 20  # bytes of CSV per pyarrow block; its reader keeps a fixed number of blocks ahead
_MISSING = np.array([t.encode() for t in MISSING_TOKENS])


class FieldsTable:
    """One chunk of a CSV (:class:`~wearspec.data.readers.chunks.Fields`) with the column interface of
    :class:`~wearspec.data.readers.tables.Table`: ``floats``, ``strings``, ``where``."""

    is_parquet = False

    def __init__(self, fields, path: Path):
        self.fields, self.path = fields, path
        self.columns = list(fields.columns)
        self.index = {c: j for j, c in enumerate(self.columns)}
        self.n_rows = len(fields)
        self.lines = fields.lines
        self._floats: dict[str, np.ndarray] = {}

    def where(self, i: int, column: str | None = None) -> str:
        pos = f"line {int(self.lines[i])}"
        return where(self.path, f"{pos}, column {column!r}" if column is not None else pos)

    def span(self, first: int, last: int) -> str:
        return f"lines {int(self.lines[first])}-{int(self.lines[last])}"

    def cell(self, i: int, column: str) -> str:
        return self.fields.value(i, self.index[column])

    def strings(self, name: str) -> np.ndarray:
        return np.char.strip(np.char.decode(self.fields.raw(self.index[name]), "utf-8", "replace"))

    def floats(self, name: str) -> np.ndarray:
        """Numbers; empty cells and NA/NaN/null/none are NaN; other text is an error naming the cell.
        Converted once per column (the result is kept)."""
        if name not in self._floats:
            self._floats[name] = self._convert(name)
        return self._floats[name]

    def _convert(self, name: str) -> np.ndarray:
        s = self.fields.raw(self.index[name])
        try:
            return bytes_to_floats(s)
        except ValueError:
            pass
        s = np.where(np.isin(np.char.lower(np.char.strip(s)), _MISSING), b"nan", s)
        try:
            return bytes_to_floats(s)
        except ValueError:
            pass
        if (bad := first_non_number(s.tolist())) is not None:
            raise WearspecError(f"{self.where(bad[0], name)}: expected a number, found "
                                f"{bad[1].decode('utf-8', 'replace')!r}")
        raise AssertionError("unreachable")  # pragma: no cover


def csv_parts(path: Path) -> Iterator[FieldsTable]:
    """A CSV (or .csv.gz) with a header line, one :class:`FieldsTable` per byte chunk."""
    check_file(path, "a CSV file with a header line")
    columns: list[str] | None = None
    delim = b","
    for text, first, last in read_chunks(path):
        if columns is None:
            head = header_line(text).decode("utf-8-sig", "replace")
            delim = _sniff_delimiter(head).encode()
            columns = [h.strip() for h in head.split(delim.decode())]
            if '"' in head:
                raise WearspecError(f"{where(path, 'line 1')}: quoted column names; expected plain names in a "
                                    "large CSV read in parts")
            text, first = text[text.index(b"\n") + 1 :], first + 1
            if not text.strip():
                if last:
                    raise WearspecError(f"{path}: no data rows after the header (expected one row per sample)")
                continue
        fields = split_delimited(text, first, len(columns), path, columns, delimiter=delim, is_last=last)
        if len(fields):
            yield FieldsTable(fields, path)


def parquet_parts(path: Path, columns: list[str]) -> Iterator[Table]:
    """A Parquet file in record batches of ``PARQUET_ROWS`` rows, as tables with their file rows."""
    check_file(path, "a Parquet file")
    pq = import_pyarrow_parquet(path)
    import pyarrow as pa

    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_ROWS, columns=columns):
            cols = {n: pa.chunked_array([batch.column(n)]) for n in batch.schema.names}
            yield Table(path, list(batch.schema.names), cols, batch.num_rows, None, first_row=row)
            row += batch.num_rows
    except (pa.ArrowException, OSError) as e:
        raise WearspecError(f"{path}: unreadable or truncated Parquet file ({e})") from None


def column_values(path: Path, column: str) -> np.ndarray:
    """The distinct values (str, stripped) of one column of a CSV/Parquet file, part by part (the
    first pass that collects label names)."""
    if table_suffix(path) == ".parquet":
        tab = read_parquet(path, [column])
        tab.require([column])
        return np.unique(tab.strings(column))
    if path.stat().st_size <= chunks.CHUNK_BYTES:
        tab = read_csv(path)  # small: whole, with the messages of the whole-table path
        tab.require([column])
        return np.unique(np.char.strip(tab.strings(column)))
    seen: set[str] = set()
    if _arrow_csv() is not None:
        try:
            for part in arrow_csv_parts(path, [], None, text=[column]):
                seen.update(np.unique(part.strings(column)).tolist())
            return np.array(sorted(seen), dtype=str) if seen else np.zeros(0, dtype=str)
        except (WearspecError, ValueError):  # ArrowInvalid is a ValueError: let the numpy parser name the line
            seen = set()
    for part in csv_parts(path):
        seen.update(np.unique(part.strings(column)).tolist())
    return np.array(sorted(seen), dtype=str) if seen else np.zeros(0, dtype=str)


# ---------------------------------------------------------------------------------------------
# CSV through pyarrow's streaming reader (multi-threaded), when pyarrow is installed
# ---------------------------------------------------------------------------------------------


def _arrow_csv():
    try:
        import pyarrow.csv
    except ImportError:
        return None
    return pyarrow.csv


class ArrowTable(Table):
    """A record batch of a CSV read by pyarrow; text columns are dictionary-encoded, read without
    Python objects per row."""

    def strings(self, name: str) -> np.ndarray:
        import pyarrow as pa

        col = self.cols[name].combine_chunks()
        if pa.types.is_dictionary(col.type):
            values = np.asarray(col.dictionary.to_pylist() + [""], dtype=str)
            idx = col.indices.fill_null(len(values) - 1).to_numpy(zero_copy_only=False)
            return np.char.strip(values[idx])
        return np.char.strip(super().strings(name))


def arrow_csv_parts(path: Path, channels: list[str], g, text: list[str] | None = None) -> Iterator[ArrowTable]:
    """A CSV in record batches of about one chunk, read by pyarrow: ``channels`` (and a numeric time column)
    as float64 with NA/NaN/null/none/empty as missing, the subject, recording and label columns (or
    ``text``) as dictionary-encoded text."""
    import pyarrow as pa

    pa_csv = _arrow_csv()
    check_file(path, "a CSV file with a header line")
    head = read_text(path, max_lines=1)
    delim = _sniff_delimiter(head.split("\n", 1)[0])
    columns = [h.strip() for h in head.split("\n", 1)[0].rstrip("\r").split(delim)]
    text = text if text is not None else [c for c in (g.subject_column, g.recording_column, g.label_column)
                                          if c in columns]
    numbers = [*channels, *([g.time_column] if g is not None and g.time_column in columns else [])]
    types = {**{c: pa.float64() for c in numbers}, **{c: pa.dictionary(pa.int32(), pa.string()) for c in text}}
    nulls = sorted({v for t in MISSING_TOKENS for v in (t, t.upper(), t.capitalize())})
    reader = pa_csv.open_csv(  # small blocks: the reader reads a fixed number of blocks ahead
        path, read_options=pa_csv.ReadOptions(block_size=min(ARROW_BLOCK, chunks.CHUNK_BYTES)),
        parse_options=pa_csv.ParseOptions(delimiter=delim),
        convert_options=pa_csv.ConvertOptions(column_types=types, include_columns=list(types), null_values=nulls,
                                              strings_can_be_null=True))
    row, batches = 0, []
    for batch in itertools.chain(reader, [None]):
        if batch is not None:
            batches.append(batch)
        size = sum(b.nbytes for b in batches)
        if batches and (batch is None or size >= chunks.CHUNK_BYTES):  # parts of about one chunk
            table = pa.Table.from_batches(batches)
            names = list(table.column_names)
            yield ArrowTable(path, names, {n: table.column(n) for n in names}, table.num_rows, None, first_row=row)
            row, batches = row + table.num_rows, []


def _line_accurate(path: Path, pieces: Iterator, numpy_pieces) -> Iterator:
    """``pieces``; on a problem, the same file again through the numpy parser, which names the line (pyarrow
    counts rows, not lines), or one line with pyarrow's message."""
    try:
        yield from pieces
    except (WearspecError, ValueError) as e:  # ArrowInvalid is a ValueError
        for _ in numpy_pieces():
            pass
        if isinstance(e, WearspecError):
            raise
        raise WearspecError(f"{path}: unreadable CSV ({str(e).splitlines()[0]})") from None


@dataclass
class _Piece:
    """Rows of one (subject, recording) and continuous stretch, within one part."""

    key: tuple[str, str]
    seg: int
    rate: float
    start: float  # seconds since the recording's first row
    data: np.ndarray  # (C, n)
    labels: np.ndarray | None
    where: str  # the first row, for messages


class _Rows:
    """Turns the rows of one file, part by part, into :class:`_Piece` objects: new recording at a new
    (subject, recording), new stretch at a gap; checks that time increases and matches the rate."""

    def __init__(self, path: Path, cfg):
        self.path, self.g = path, cfg.generic
        self.key: tuple[str, str] | None = None
        self.done: set[tuple[str, str]] = set()
        self.origin = None  # the file's first time value
        self.t0, self.last = 0.0, None  # the recording's first and latest time (s)
        self.last_cell = ""
        self.seg, self.rate = 0, self.g.rate

    def times(self, part) -> np.ndarray | None:
        g = self.g
        if g.time_column not in part.columns:
            return None
        v = time_values(part, g.time_column, g.time_unit)
        if self.origin is None:
            self.origin = v[0]
        return relative_seconds(v, self.origin, g.time_unit)

    def start(self, key: tuple[str, str], part, a: int) -> None:
        """A new (subject, recording) begins at row ``a`` of ``part``."""
        if key in self.done:
            raise WearspecError(
                f"{part.where(a)}: rows of subject {key[0]}, recording {key[1]} start again after other rows; in a "
                "CSV/Parquet file read in parts the rows of one subject and recording must be contiguous (sort it)"
            )
        if self.key is not None:
            self.done.add(self.key)
        self.key, self.seg, self.rate, self.last = key, 0, self.g.rate, None

    def pieces(self, key, part, a: int, b: int, t, data, labels) -> Iterator[_Piece]:
        """Rows ``a .. b`` of ``part`` (one key) as pieces, split at gaps."""
        g = self.g
        if key != self.key:
            self.start(key, part, a)
        lab = None if labels is None else labels[a:b]
        if t is None:
            yield _Piece(key, 0, float(g.rate), 0.0, data[:, a:b], lab, part.where(a))
            return
        tt = t[a:b]
        if self.last is None:
            self.t0 = float(tt[0])
        steps = np.diff(tt, prepend=tt[0] - 1.0 if self.last is None else self.last)
        back = np.flatnonzero(steps <= 0)
        if back.size:
            i = a + int(back[0])
            before = self.last_cell if i == a else part.cell(i - 1, g.time_column)
            raise WearspecError(
                f"{part.where(i, g.time_column)}: timestamps must increase within subject {key[0]}, "
                f"recording {key[1]} (previous row {before!r}, this row {part.cell(i, g.time_column)!r})"
            )
        if self.last is not None and steps[0] > g.max_gap_s:
            self.seg += 1
        context = f"{self.path}, {part.span(a, b - 1)} (subject {key[0]}, recording {key[1]})"
        runs = list(uniform_from_timestamps(tt, self.rate, context, max_gap_s=g.max_gap_s))
        self.rate = runs[0][2]  # measured on the recording's first part when generic.rate is unset
        for k, (x, y, _) in enumerate(runs):
            self.seg += k > 0
            yield _Piece(key, self.seg, float(self.rate), float(tt[x]) - self.t0, data[:, a + x : a + y],
                         None if lab is None else lab[x:y], part.where(a + x))
        self.last, self.last_cell = float(tt[-1]), part.cell(b - 1, g.time_column)


def _runs(subjects: np.ndarray | None, recordings: np.ndarray | None, n: int) -> list[tuple[int, int]]:
    """(begin, end) of the runs of equal (subject, recording) in a part."""
    change = np.zeros(max(n - 1, 0), bool)
    for arr in (subjects, recordings):
        if arr is not None:
            change |= arr[1:] != arr[:-1]
    bounds = [0, *(np.flatnonzero(change) + 1).tolist(), n]
    return list(zip(bounds[:-1], bounds[1:]))


def _prefetch(items: Iterator, pool: ThreadPoolExecutor) -> Iterator:
    """``items``, the next one made in the background while the caller works on this one."""
    it = iter(items)
    ahead = pool.submit(next, it, None)
    while (item := ahead.result()) is not None:
        ahead = pool.submit(next, it, None)
        yield item


def float32_values(values: np.ndarray, where_row) -> np.ndarray:
    """float64 column values → float32; a number beyond float32's range (±3.4e38, e.g. 1e300) is an error naming
    its row (``where_row(i)``), not a silent infinity read as a missing sample."""
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    over = np.isfinite(values) & ~np.isfinite(out)
    if over.any():
        rows = np.flatnonzero(over)
        raise WearspecError(f"{where_row(int(rows[0]))}: {values[rows[0]]:g} is beyond the float32 range (±3.4e38)"
                            f"{f' ({rows.size} such values)' if rows.size > 1 else ''}; expected a sensor value")
    return out


def _file_pieces(f: Path, parts, channels: list[str], names: list[str], cfg, stem: str) -> Iterator[_Piece]:
    """The pieces of one file. Parsing is numpy work that releases the GIL, so the next part is split
    and this part's numeric columns are converted in worker threads (the read keeps pace with a
    multi-threaded CSV reader)."""
    g = cfg.generic
    rows = _Rows(f, cfg)
    hint = " (generic.labels)" if g.labels else ""
    with ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 1))) as pool:
        for part in _prefetch(parts, pool):
            if g.time_column in part.columns and g.time_unit != "datetime":  # kept by the part; errors: later
                pool.submit(part.floats, g.time_column)
            data = np.stack([float32_values(x, lambda i, c=c: part.where(i, c))
                             for c, x in zip(channels, pool.map(part.floats, channels))])  # (C, n)
            yield from _part_pieces(part, rows, data, names, g, hint, stem)


def _part_pieces(part, rows: _Rows, data: np.ndarray, names: list[str], g, hint: str, stem: str
                 ) -> Iterator[_Piece]:
    t = rows.times(part)
    keys = []
    for col in (g.subject_column, g.recording_column):
        arr = part.strings(col) if col in part.columns else None
        if arr is not None and (np.char.str_len(arr) == 0).any():
            i = int(np.argmax(np.char.str_len(arr) == 0))
            raise WearspecError(f"{part.where(i, col)}: expected a value, found an empty cell")
        keys.append(arr)
    labels = None
    if g.label_column in part.columns:
        labels = encode_labels(part.strings(g.label_column), names,
                               lambda i, p=part: p.where(i, g.label_column), hint)
    for a, b in _runs(keys[0], keys[1], part.n_rows):
        key = tuple(str(arr[a]) if arr is not None else stem for arr in keys)
        yield from rows.pieces(key, part, a, b, t, data, labels)


def stream_items(f: Path, channels: list[str], names: list[str], cfg, stem: str) -> Iterator[RecordingStream]:
    """The recordings of one large CSV/Parquet file, each delivered in chunks."""
    g = cfg.generic
    if table_suffix(f) == ".parquet":
        import pyarrow.parquet as pq

        have = set(pq.ParquetFile(f).schema_arrow.names)
        wanted = [c for c in (g.time_column, g.subject_column, g.recording_column, g.label_column) if c in have]
        parts = parquet_parts(f, list(dict.fromkeys([*wanted, *channels])))
        pieces = _file_pieces(f, parts, channels, names, cfg, stem)
    elif _arrow_csv() is not None and g.time_unit != "datetime":
        arrow = _file_pieces(f, arrow_csv_parts(f, channels, g), channels, names, cfg, stem)
        pieces = _line_accurate(f, arrow, lambda: _file_pieces(f, csv_parts(f), channels, names, cfg, stem))
    else:
        pieces = _file_pieces(f, csv_parts(f), channels, names, cfg, stem)
    for (key, seg), group in itertools.groupby(pieces, key=lambda p: (p.key, p.seg)):
        first = next(group)
        subject, rec = key
        name = rec if rec == subject else f"{subject}/{rec}"
        seg_name = f"{name}#{seg}" if seg else name
        yield RecordingStream(
            subject=subject,
            recording=seg_name,
            rate=first.rate,
            chunks=((p.data, p.labels) for p in itertools.chain([first], group)),
            start=first.start,
            source=f"{first.where} on (subject {subject}, recording {seg_name})",
            rename=(name, f"{name}#0") if seg == 1 else None,
        )
