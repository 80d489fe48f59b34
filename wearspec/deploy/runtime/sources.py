"""Stream sources: where the samples of :mod:`.stream` come from.

A source yields chunks ``(n, C)`` float32 or ``(chunk, t0)`` pairs (``t0``: the time in seconds of the chunk's
first sample, or None): :func:`replay_csv` (a CSV/TSV recording, optional header and time column),
:func:`replay_npy` (a ``.npy`` array), :func:`read_stdin` (live CSV lines), or any iterable/callable
(:func:`iter_chunks` normalises them). :func:`open_source` picks one from a command-line ``--source``.
Only the standard library and numpy are imported.
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

import numpy as np

from wearspec.errors import WearspecError, where
from wearspec.utils.io import load_npy

TIME_COLUMNS = ("time_s", "time", "timestamp", "t")


def iter_chunks(source: Any) -> Iterator[tuple[np.ndarray, float | None]]:
    """Normalise a source to ``(chunk, t0)`` pairs: an iterable (or a callable returning one) of chunks
    (arrays ``(n, C)``) or ``(chunk, t0)`` tuples whose second item is a number or None."""
    if callable(source):
        source = source()
    for item in source:
        if (isinstance(item, tuple) and len(item) == 2 and not np.isscalar(item[0])
                and (item[1] is None or isinstance(item[1], (int, float, np.number)))):
            yield item[0], item[1]
        else:
            yield item, None


def _header(row: list[str]) -> list[str] | None:
    """The column names when the first row is a header (any non-blank cell that is not a number), else None."""
    try:
        [float(c) for c in row if c.strip()]
    except ValueError:
        return [c.strip() for c in row]
    return None


def _select_columns(name: str, line: int, header: list[str] | None, width: int,
                    channels: Sequence[str | int] | None, n_channels: int | None,
                    time_column: str | int | None) -> tuple[list[int], int | None]:
    """(channel column indices, time column index or None) of rows ``width`` cells wide (see :func:`replay_csv`)."""
    names = header or [str(i) for i in range(width)]
    tcol = None
    if time_column == "auto":
        tcol = next((names.index(n) for n in TIME_COLUMNS if header and n in names), None)
    elif isinstance(time_column, int):
        tcol = time_column
    elif time_column is not None:
        if not header or time_column not in header:
            raise WearspecError(f"{where(name, f'line {line}')}: no time column {time_column!r} in the header")
        tcol = header.index(time_column)
    rest = [i for i in range(width) if i != tcol]
    if channels is None:
        cols = rest
    elif all(isinstance(c, int) for c in channels):
        cols = [int(c) for c in channels]
    elif header is not None and all(c in header for c in channels):
        cols = [header.index(c) for c in channels]
    elif header is None and len(rest) == len(channels):
        cols = rest            # headerless: columns in the bundle's channel order
    else:
        missing = [c for c in channels if not header or c not in header]
        raise WearspecError(f"{where(name, f'line {line}')}: channels {missing} not found; the columns are "
                            f"{header or width} (expected {list(channels)})")
    if n_channels is not None and len(cols) != n_channels:
        raise WearspecError(f"{where(name, f'line {line}')}: expected {n_channels} channel columns, found {len(cols)}")
    if any(c >= width for c in cols) or (tcol is not None and tcol >= width):
        raise WearspecError(f"{where(name, f'line {line}')}: column index out of range (row has {width})")
    return cols, tcol


def _number(cell: str, name: str, line: int, col: int, header: list[str] | None) -> float:
    """One cell as a float; a blank cell is a missing sample (NaN)."""
    cell = cell.strip()
    if cell == "":
        return math.nan
    try:
        return float(cell)
    except ValueError:
        label = header[col] if header and col < len(header) else f"column {col + 1}"
        raise WearspecError(f"{where(name, f'line {line}')}: {label}: expected a number, got {cell!r}") from None


def _parse_rows(rows: Iterable[tuple[int, list[str]]], name: str, channels: Sequence[str | int] | None,
                n_channels: int | None, time_column: str | int | None, chunk: int,
                rate: float | None) -> Iterator[tuple[np.ndarray, float | None]]:
    """The CSV logic of files and stdin: rows ``(line number, cells)`` → chunks ``((n, C) float32, t0)`` of
    ``chunk`` samples, split early at timestamp gaps (> 1.5 sample periods at ``rate``) so that each chunk is
    uniformly sampled. Blank rows and rows starting with ``#`` are skipped; the first row may be a header."""
    if chunk < 1:
        raise WearspecError(f"{where(name)}: chunk must be >= 1 sample, got {chunk}")
    header: list[str] | None = None
    cols: list[int] = []
    tcol: int | None = None
    width: int | None = None
    buf: list[list[float]] = []
    t_first: float | None = None
    t_prev: float | None = None
    gap = 1.5 / rate if rate else None

    def flush() -> tuple[np.ndarray, float | None]:
        block = np.asarray(buf, dtype=np.float32).reshape(len(buf), len(cols))
        buf.clear()
        return block, t_first

    for line, row in rows:
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if width is None:
            width, header = len(row), _header(row)
            cols, tcol = _select_columns(name, line, header, width, channels, n_channels, time_column)
            if header is not None:
                continue
        if len(row) != width:
            raise WearspecError(f"{where(name, f'line {line}')}: expected {width} values, got {len(row)}")
        t = _number(row[tcol], name, line, tcol, header) if tcol is not None else None
        if buf and t is not None and t_prev is not None and gap is not None and abs(t - t_prev) > gap:
            yield flush()       # split at timestamp gaps so each chunk is uniformly sampled
        if not buf:
            t_first = t
        buf.append([_number(row[c], name, line, c, header) for c in cols])
        t_prev = t
        if len(buf) >= chunk:
            yield flush()
    if buf:
        yield flush()


def replay_csv(path: str | os.PathLike, channels: Sequence[str | int] | None = None, rate: float | None = None,
               chunk: int = 1, time_column: str | int | None = None,
               delimiter: str = ",") -> Iterator[tuple[np.ndarray, float | None]]:
    """Replay a CSV recording as ``(chunk (n, C) float32, t0)`` pairs.

    channels: column names (needs a header; headerless files must have exactly these many columns, in this
    order) or indices; None: every column except the time column. time_column: a name/index holding seconds,
    ``'auto'`` (a header column named time_s/time/timestamp/t) or None. Blank cells and NaN are missing
    samples. With timestamps and ``rate``, chunks are split at gaps (> 1.5 sample periods).
    """
    path = Path(path)
    if not path.is_file():
        raise WearspecError(f"{where(path)}: no such file")
    with open(path, newline="", encoding="utf-8") as fh:
        yield from _parse_rows(_csv_rows(fh, str(path), delimiter), str(path), channels, None, time_column, chunk,
                               rate)


def _csv_rows(lines: Iterable[str], name: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """``(line number, cells)`` of CSV text; bytes that are not UTF-8 text (a binary file) or a NUL byte are a
    :class:`WearspecError` naming the line."""
    reader = csv.reader(lines, delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:  # text is decoded in blocks: the line is found again in the bytes (a file)
            line = _first_undecodable_line(name)
            raise WearspecError(f"{where(name, f'line {line}' if line else None)}: not UTF-8 text (binary data?); "
                                "expected CSV lines of numbers") from None
        except csv.Error as e:
            raise WearspecError(f"{where(name, f'line {reader.line_num}')}: not a CSV line ({e}); expected CSV "
                                "lines of numbers") from None
        if any(_BINARY.search(c) for c in row):  # stdin decodes undecodable bytes to surrogates
            raise WearspecError(f"{where(name, f'line {reader.line_num}')}: not UTF-8 text (binary data?); "
                                "expected CSV lines of numbers")
        yield reader.line_num, row


_BINARY = re.compile("[\x00\udc80-\udcff]")


def _first_undecodable_line(name: str) -> int | None:
    """The number of the first line of file ``name`` that is not UTF-8 (None: not a file, or none found)."""
    try:
        with open(name, "rb") as fh:
            for i, raw in enumerate(fh, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return i
    except OSError:
        return None
    return None


def read_stdin(n_channels: int | None = None, chunk: int = 1, stream: TextIO | None = None,
               channels: Sequence[str | int] | None = None, time_column: str | int | None = None,
               rate: float | None = None) -> Iterator[tuple[np.ndarray, float | None]]:
    """Live lines of comma-separated values from stdin (or ``stream``), yielded every ``chunk`` lines.

    An optional first header line names the columns; lines starting with ``#`` are ignored.
    """
    stream = stream if stream is not None else sys.stdin
    lines = iter(stream.readline, "")
    yield from _parse_rows(_csv_rows(lines, "<stdin>"), "<stdin>", channels, n_channels, time_column, chunk, rate)


def replay_npy(path: str | os.PathLike, chunk: int, channels_first: bool = False,
               n_channels: int | None = None) -> Iterator[np.ndarray]:
    """Replay a ``.npy`` recording of shape (n, C) (or (C, n) with ``channels_first``) in chunks; with
    ``n_channels``, C must equal it."""
    path = Path(path)
    if chunk < 1:
        raise WearspecError(f"{where(path)}: chunk must be >= 1 sample, got {chunk}")
    data = load_npy(path, "samples (n, C)", mmap=True)
    if data.dtype.kind not in "biuf":
        raise WearspecError(f"{where(path)}: expected numbers (samples, channels), got dtype {data.dtype}")
    if data.ndim != 2:
        raise WearspecError(f"{where(path)}: expected a 2-D array (samples, channels), got shape {data.shape}")
    if channels_first:
        data = data.T
    if n_channels is not None and data.shape[1] != n_channels:
        raise WearspecError(f"{where(path)}: expected {n_channels} channel columns (samples, channels), got shape "
                            f"{data.shape}")
    for s in range(0, data.shape[0], chunk):
        yield np.asarray(data[s:s + chunk], dtype=np.float32)


def open_source(source: Any, spec, chunk: int | None, time_column: str | int | None):
    """A stream source from the command line's ``--source``: ``'-'`` (stdin), a .csv/.tsv/.txt or .npy path
    (read in chunks of ``chunk`` samples; default the bundle's hop, 1 for stdin), or an iterable/callable of
    chunks, returned as it is. ``spec``: the bundle's :class:`~.schema.BundleSpec` (channels, rate, hop)."""
    if isinstance(source, (str, os.PathLike)):
        if str(source) == "-":
            return read_stdin(n_channels=spec.n_channels, chunk=chunk or 1, time_column=time_column, rate=spec.rate,
                              channels=list(spec.channels))
        path = Path(source)
        if path.suffix.lower() == ".npy":
            return replay_npy(path, chunk or spec.hop, n_channels=spec.n_channels)
        if path.suffix.lower() in (".csv", ".txt", ".tsv"):
            return replay_csv(path, channels=list(spec.channels), rate=spec.rate, chunk=chunk or spec.hop,
                              time_column=time_column, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        raise WearspecError(f"{where(path)}: unknown source type; expected .csv, .tsv, .npy or '-' (stdin)")
    return source
