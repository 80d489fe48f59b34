"""Files and whole tables for the readers: finding and checking input files, CSV / CSV.gz / Parquet
tables column by column, numbers, time columns, labels.

Every helper raises :class:`~wearspec.errors.WearspecError` with the file, the position (CSV line,
Parquet row, column) and what was expected. A :class:`Table` is column-oriented: CSV cells stay
strings until a column is asked for as numbers, so text columns (subject, label) cost nothing extra.
(Large text files parsed in byte chunks: :mod:`wearspec.data.readers.chunks`.)
"""

from __future__ import annotations

import contextlib
import csv
import gc
import gzip
import io
import itertools
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from wearspec.errors import WearspecError, where

MISSING_TOKENS = ("", "na", "n/a", "nan", "null", "none")
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def check_file(path: Path, expected: str = "") -> Path:
    """``path`` must be an existing, non-empty file; ``expected`` says what it should hold."""
    hint = f" (expected {expected})" if expected else ""
    if not path.is_file():
        raise WearspecError(f"{path}: file not found{hint}")
    if path.stat().st_size == 0:
        raise WearspecError(f"{path}: empty file{hint}")
    return path


def require_path(path: Path | None, what: str) -> Path:
    """``path`` itself, or an error when it is missing (``what`` says what was expected)."""
    if path is None:
        raise WearspecError(f"no input given; expected {what}")
    path = Path(path)
    if not path.exists():
        raise WearspecError(f"{path}: not found; expected {what}")
    return path


def files_matching(folder: Path, pattern: str) -> list[Path]:
    """Files directly in ``folder`` whose name matches the regular expression (case-insensitive)."""
    rx = re.compile(pattern, re.IGNORECASE)
    return sorted(p for p in folder.iterdir() if p.is_file() and rx.fullmatch(p.name))


def table_suffix(path: Path) -> str | None:
    """'.csv', '.csv.gz' or '.parquet' for a table file, else None."""
    name = path.name.lower()
    for s in TABLE_SUFFIXES:
        if name.endswith(s):
            return s
    return None


def table_stem(path: Path) -> str:
    """File name without its table suffix: ``S01.csv.gz`` → ``S01``."""
    s = table_suffix(path)
    return path.name[: -len(s)] if s else path.stem


def read_text(path: Path, max_lines: int | None = None) -> str:
    """Text of a (possibly gzip-compressed) UTF-8 file; only its first ``max_lines`` lines if given."""
    try:
        gz = path.name.lower().endswith(".gz")
        with (gzip.open(path, "rt", encoding="utf-8-sig", newline="") if gz
              else open(path, encoding="utf-8-sig", newline="")) as f:
            if max_lines is None:
                return f.read()
            return "".join(itertools.islice(f, max_lines))
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise WearspecError(f"{path}: truncated or corrupt gzip file ({e})") from None
    except UnicodeDecodeError as e:
        raise WearspecError(f"{path}, byte {e.start}: expected UTF-8 text ({e.reason})") from None


def count_lines(path: Path) -> int:
    """Number of lines up to the last non-blank one (cheap: no parsing)."""
    data = path.read_bytes().rstrip()
    return data.count(b"\n") + 1 if data else 0


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


@dataclass
class Table:
    """A parsed CSV or Parquet file, column by column.

    ``cols`` maps a column name to a numpy text array (CSV) or a ``pyarrow.ChunkedArray`` (Parquet).
    ``lines`` holds the 1-based file line of each CSV data row (None for Parquet: rows are counted
    from 1).
    """

    path: Path
    columns: list[str]
    cols: dict
    n_rows: int
    lines: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    first_row: int = 0  # Parquet: the file row of data row 0 (a batch of a file read in parts)

    @property
    def is_parquet(self) -> bool:
        return self.lines is None

    def position(self, i: int, column: str | None = None) -> str:
        """'line 12, column "ax"' (CSV) or 'row 12, column "ax"' (Parquet) for data row ``i``."""
        pos = f"row {self.first_row + i + 1}" if self.lines is None else f"line {int(self.lines[i])}"
        return f"{pos}, column {column!r}" if column is not None else pos

    def where(self, i: int, column: str | None = None) -> str:
        return where(self.path, self.position(i, column))

    def span(self, first: int, last: int) -> str:
        """'lines 2-501' / 'rows 1-500' for data rows ``first``..``last``."""
        if self.lines is None:
            return f"rows {self.first_row + first + 1}-{self.first_row + last + 1}"
        return f"lines {int(self.lines[first])}-{int(self.lines[last])}"

    def cell(self, i: int, column: str) -> str:
        """The raw text of one cell (for error messages)."""
        col = self.cols[column]
        return str(col[i].as_py()) if self.is_parquet else str(col[i])

    def require(self, names: Iterable[str], what: str = "") -> None:
        """Every name must be a column; the error lists the missing and the found columns."""
        missing = [n for n in names if n not in self.cols]
        if missing:
            hint = f" {what}" if what else ""
            raise WearspecError(
                f"{self.path}: missing column(s) {', '.join(map(repr, missing))}{hint}; "
                f"found columns: {', '.join(map(repr, self.columns)) or '(none)'}"
            )

    def strings(self, name: str) -> np.ndarray:
        """Column as a numpy str array; missing cells are ''. Integral floats print without '.0'."""
        col = self.cols[name]
        if not self.is_parquet:
            return np.asarray(col, dtype=str) if len(col) else np.zeros(0, dtype=str)
        import pyarrow as pa

        if pa.types.is_floating(col.type):
            v = col.to_numpy()
            ok = np.isfinite(v)
            integral = ok & (v == np.round(v))
            out = np.array(["" if not o else (str(int(x)) if i else repr(float(x)))
                            for x, o, i in zip(v.tolist(), ok, integral)], dtype=str)
            return out if len(out) else np.zeros(0, dtype=str)
        values = col.cast(pa.string()).to_pylist()
        return np.array(["" if v is None else v for v in values], dtype=str) if values else np.zeros(0, dtype=str)

    def floats(self, name: str) -> np.ndarray:
        """Column as float64; empty/NA cells are NaN; text that is not a number is an error."""
        col = self.cols[name]
        if self.is_parquet:
            return _arrow_floats(col, self, name)
        return parse_floats(col, lambda i: self.where(i, name))

    def is_numeric(self, name: str, probe: int = 100) -> bool:
        """Whether a column holds numbers. Parquet: its type. CSV: most of its first ``probe``
        non-empty cells are numbers (so a stray word in a numeric column is reported, not skipped)."""
        col = self.cols[name]
        if self.is_parquet:
            import pyarrow as pa

            t = col.type
            return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        seen = numbers = 0
        for v in col:
            v = v.strip()
            if v.lower() in MISSING_TOKENS:
                continue
            seen += 1
            try:
                float(v)
                numbers += 1
            except ValueError:
                pass
            if seen >= probe:
                break
        return seen > 0 and numbers * 2 > seen


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while millions of small lists/strings are created (it
    would otherwise run over and over for nothing and triple the parse time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","


def read_csv(path: Path, *, max_rows: int | None = None) -> Table:
    """Parse a CSV (or .csv.gz) with a header line. Delimiter: comma, tab or semicolon (from the
    header). Blank lines are skipped; a row with a different number of fields is an error (a
    truncated file shows up here)."""
    check_file(path, "a CSV file with a header line")
    text = read_text(path, None if max_rows is None else max_rows + 1)
    first = text.split("\n", 1)[0]
    if not first.strip():
        raise WearspecError(f"{where(path, 'line 1')}: expected a header line with column names, found an empty line")
    delim = _sniff_delimiter(first)
    with gc_paused():
        return _parse_csv(path, text, delim)


CSV_CHUNK = 65536  # rows parsed into Python strings at a time; columns are kept as numpy text arrays


def _parse_csv(path: Path, text: str, delim: str) -> Table:
    """Parse in chunks: each chunk's cells become numpy text arrays per column, so the Python
    objects of only one chunk are alive at a time (memory ~ a few times the file size)."""
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as e:
        raise WearspecError(f"{where(path, 'line 1')}: malformed CSV header ({e})") from None
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise WearspecError(f"{where(path, 'line 1')}: duplicate column name(s) {', '.join(map(repr, dup))}")
    n = len(header)
    parts: list[list[np.ndarray]] = [[] for _ in header]
    n_rows = 0
    rows_iter = filter(None, reader)  # skip blank lines
    while True:
        try:
            rows = list(itertools.islice(rows_iter, CSV_CHUNK))
        except csv.Error as e:
            raise WearspecError(f"{where(path, f'line {reader.line_num}')}: malformed CSV ({e})") from None
        if not rows:
            break
        lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        bad = np.flatnonzero(lens != n)
        if bad.size:
            i = n_rows + int(bad[0])
            line = int(_line_numbers(text, delim)[i])
            last = " (truncated file?)" if line == reader.line_num and next(rows_iter, None) is None else ""
            raise WearspecError(
                f"{where(path, f'line {line}')}: expected {n} fields like the header, found {int(lens[bad[0]])}{last}"
            )
        for k, col in enumerate(zip(*rows)):
            parts[k].append(np.array(col, dtype=str))
        n_rows += len(rows)
    plain = reader.line_num == n_rows + 1  # no blank lines, no multi-line quoted fields
    lines = np.arange(2, n_rows + 2, dtype=np.int64) if plain else _line_numbers(text, delim)
    cols = {h: (np.concatenate(p) if p else np.zeros(0, dtype=str)) for h, p in zip(header, parts)}
    return Table(path, header, cols, n_rows, lines)


def _line_numbers(text: str, delim: str) -> np.ndarray:
    """The 1-based line of every non-blank data row (re-reads the text; only for odd files/errors)."""
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    next(reader)
    out = []
    try:
        for r in reader:
            if r:
                out.append(reader.line_num)
    except csv.Error:
        pass
    return np.asarray(out, dtype=np.int64)


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> Table:
    """Read a Parquet file (optionally only ``columns``) with pyarrow."""
    check_file(path, "a Parquet file")
    pq = import_pyarrow_parquet(path)
    import pyarrow as pa

    try:
        table = pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (pa.ArrowException, OSError) as e:
        raise WearspecError(f"{path}: unreadable or truncated Parquet file ({e})") from None
    names = list(table.column_names)
    return Table(path, names, {n: table.column(n) for n in names}, table.num_rows, None)


def parquet_schema(path: Path):
    """(schema, number of rows) of a Parquet file, from its footer only."""
    check_file(path, "a Parquet file")
    pq = import_pyarrow_parquet(path)
    import pyarrow as pa

    try:
        meta = pq.read_metadata(path)
        return meta.schema.to_arrow_schema(), meta.num_rows
    except (pa.ArrowException, OSError) as e:
        raise WearspecError(f"{path}: unreadable or truncated Parquet file ({e})") from None


def import_pyarrow_parquet(path: Path | None = None):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise WearspecError(
            f"{path or 'Parquet'}: reading Parquet needs pyarrow; install it with "
            "pip install 'wearspec[parquet]' (or use CSV)"
        ) from None
    return pq


def read_table(path: Path, *, head: int | None = None, columns: Sequence[str] | None = None) -> Table:
    """CSV/CSV.gz/Parquet by suffix. ``head`` limits CSV parsing to the first rows (header checks)."""
    if table_suffix(path) == ".parquet":
        return read_parquet(path, columns)
    return read_csv(path, max_rows=head)


# ---------------------------------------------------------------------------------------------
# Numbers and times
# ---------------------------------------------------------------------------------------------


def parse_floats(values: Sequence[str], locate, *, missing_ok: bool = True) -> np.ndarray:
    """Strings → float64. Empty and NA-like cells → NaN (when ``missing_ok``). ``locate(i)`` names
    the position of value ``i`` for the error on text that is not a number."""
    if len(values) == 0:
        return np.zeros(0, np.float64)
    try:
        return np.array(values, dtype=np.float64)  # fast path: every cell is a number
    except ValueError:
        pass
    arr = np.char.strip(np.asarray(values, dtype=str))
    if missing_ok:
        miss = np.isin(np.char.lower(arr), MISSING_TOKENS)
        arr = np.where(miss, "nan", arr)
        try:
            return arr.astype(np.float64)
        except ValueError:
            pass
    if (bad := first_non_number(arr.tolist())) is not None:
        raise WearspecError(f"{locate(bad[0])}: expected a number, found {bad[1] or '(empty)'!r}")
    return arr.astype(np.float64)  # pragma: no cover - float() and numpy agree


def first_non_number(values: list) -> tuple[int, object] | None:
    """(position, value) of the first of ``values`` (str or bytes) that ``float()`` refuses, or None: how a
    numeric column that numpy could not convert names the offending cell."""
    for i, v in enumerate(values):
        try:
            float(v)
        except ValueError:
            return i, v
    return None


def _arrow_floats(col, table: Table, name: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return pc.fill_null(pc.cast(col, pa.float64()), float("nan")).to_numpy()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        values = ["" if v is None else v for v in col.to_pylist()]
        return parse_floats(values, lambda i: table.where(i, name))
    raise WearspecError(f"{table.path}, column {name!r}: expected numbers, found values of type {t}")


def parse_times(table: Table, name: str, unit: str) -> np.ndarray:
    """Time column → seconds (float64) relative to the first row (see :func:`time_values`)."""
    v = time_values(table, name, unit)
    return relative_seconds(v, v[0], unit) if v.size else v.astype(np.float64)


def time_values(table: Table, name: str, unit: str) -> np.ndarray:
    """Time column as read: int64 ns (``datetime`` text, Parquet timestamps) or float64 in ``unit``.

    ``unit``: s, ms, us, ns, or ``datetime`` for ISO-8601 text (e.g. ``2024-05-01T10:00:00.020``; a UTC
    offset is converted to UTC). Parquet timestamp columns are read as such whatever the unit. Empty
    cells are errors."""
    if unit not in TIME_UNITS and unit != "datetime":
        raise WearspecError(f"generic.time_unit: expected one of s, ms, us, ns, datetime; got {unit!r}")
    if table.is_parquet:
        import pyarrow as pa
        import pyarrow.compute as pc

        col = table.cols[name]
        if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
            if col.null_count:
                i = int(np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0])
                raise WearspecError(f"{table.where(i, name)}: expected a timestamp, found an empty cell")
            return pc.cast(pc.cast(col, pa.timestamp("ns")), pa.int64()).to_numpy()
    if unit == "datetime":
        return _parse_datetimes(table.strings(name), lambda i: table.where(i, name))
    try:
        t = table.floats(name)
    except WearspecError as e:
        raise WearspecError(f"{e} (for date-time text set generic.time_unit=datetime)") from None
    bad = ~np.isfinite(t)
    if bad.any():
        i = int(np.argmax(bad))
        raise WearspecError(f"{table.where(i, name)}: expected a timestamp, found an empty or non-finite cell")
    return t


def relative_seconds(values: np.ndarray, origin, unit: str) -> np.ndarray:
    """:func:`time_values` → seconds since ``origin`` (a value of the same column)."""
    if values.dtype.kind in "iu":
        return (np.asarray(values, np.int64) - np.int64(origin)).astype(np.float64) * 1e-9
    return (values - origin) * TIME_UNITS[unit]


def _parse_datetimes(text: np.ndarray, locate) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns that it converts UTC offsets to UTC
        try:
            return np.asarray(np.char.strip(text), dtype="datetime64[ns]").astype(np.int64)
        except ValueError:
            pass
        for i, v in enumerate(text.tolist()):
            try:
                if not v.strip():
                    raise ValueError
                np.datetime64(v.strip(), "ns")
            except ValueError:
                raise WearspecError(
                    f"{locate(i)}: expected an ISO date-time like 2024-05-01T10:00:00.020, found {v!r}"
                ) from None
    raise WearspecError(f"{locate(0)}: unparseable date-time column")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def sort_labels(names: Iterable[str]) -> list[str]:
    """Label names in a stable order: numbers numerically, then text alphabetically."""
    def key(s: str):
        try:
            return (0, float(s), s)
        except ValueError:
            return (1, 0.0, s)
    return sorted(set(names), key=key)


def encode_labels(values: np.ndarray, names: Sequence[str], locate, allowed_hint: str = "") -> np.ndarray:
    """str array → int32 codes into ``names``; '' → -1 (unlabelled). An unknown label is an error
    at its first position (``locate(i)``)."""
    values = np.asarray(values, dtype=str)
    if values.size == 0:
        return np.zeros(0, np.int32)
    uniq, inv = np.unique(values, return_inverse=True)
    lookup = {n: k for k, n in enumerate(names)}
    codes = np.empty(len(uniq), np.int32)
    for j, u in enumerate(uniq.tolist()):
        name = u if u in lookup else u.strip()
        if name in lookup or not name:
            codes[j] = lookup.get(name, -1)
        else:
            i = int(np.argmax(inv.ravel() == j))
            shown = ", ".join(map(repr, names[:20])) + (", ..." if len(names) > 20 else "")
            raise WearspecError(f"{locate(i)}: unknown label {u!r}; expected one of {shown}{allowed_hint}")
    return codes[inv.ravel()]
