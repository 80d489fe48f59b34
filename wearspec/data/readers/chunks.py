"""Large text files read in byte chunks and split by numpy: the parser of the native HAR readers
(PAMAP2, Capture-24, Daphnet FoG, WISDM), plus their time-axis checks.

Text is read in large byte chunks of whole lines (:func:`read_chunks`, gzip included) and split
with vectorised numpy searches (:func:`split_whitespace`, :func:`split_delimited`) into
:class:`Fields`: the byte offsets of every field of a chunk. Each needed column is then converted in
one call (bytes → float64 / int64 / datetime64), so a 24-hour, 100 Hz file never goes through a
per-cell Python loop. Python loops run only on the error path, to name the exact line, column and
value. (Whole small tables, CSV or Parquet, column by column: :mod:`wearspec.data.readers.tables`.)

Every problem raises :class:`~wearspec.errors.WearspecError` with the file, the line (and column)
and what was expected.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from wearspec.data.readers.tables import first_non_number
from wearspec.data.windowing import Recording, uniform_from_timestamps
from wearspec.errors import WearspecError, where

CHUNK_BYTES = 1 << 24  # 16 MiB of text per parsing step
_PAD = 64  # zero bytes after a chunk, so that fixed-width gathers never run off the end
_NL, _CR, _SPACE, _TAB, _QUOTE = 10, 13, 32, 9, 34
try:
    from numpy.dtypes import StringDType

    _STR = StringDType()
except ImportError:  # numpy < 2
    _STR = np.dtype("U")


# ------------------------------------------------------------------------------------------------
# Reading text in chunks of whole lines
# ------------------------------------------------------------------------------------------------


def read_chunks(path: Path, chunk_bytes: int | None = None) -> Iterator[tuple[bytes, int, bool]]:
    """Yield ``(text, first_line, is_last)`` with ``text`` holding whole lines (each ending in ``\\n``).

    Files whose name ends in ``.gz`` are decompressed on the fly. A compressed file that ends early
    or is corrupt is an error naming the file and the last intact line; a file with no content is
    an error too.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    gz = path.name.lower().endswith(".gz")
    step = min(chunk_bytes, 1 << 16) if gz else chunk_bytes  # .gz: small reads name the last intact line
    opener = gzip.open if gz else open
    line = 1  # number of the first line of `pending`
    pending: bytes | None = None  # whole lines, held back one step to know which chunk is the last
    buf = bytearray()
    seen = False
    try:
        with opener(path, "rb") as f:
            while True:
                block = f.read(step)
                buf += block
                if not block or len(buf) >= chunk_bytes:
                    cut = len(buf) if not block else buf.rfind(b"\n") + 1
                    if cut:
                        ready = bytes(buf[:cut])
                        del buf[:cut]
                        if pending is not None:
                            seen = seen or bool(pending.strip())
                            yield pending, line, False
                            line += pending.count(b"\n")
                        pending = ready
                if not block:
                    break
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        if isinstance(e, gzip.BadGzipFile) and "Not a gzipped file" in str(e):
            raise WearspecError(f"{path}: not a gzip file ({e}); expected gzip-compressed text") from None
        intact = line - 1 + (pending.count(b"\n") if pending else 0) + buf.count(b"\n")
        raise WearspecError(
            f"{where(path, f'after line {intact}')}: compressed data ends early or is corrupt ({e}); "
            "the file is truncated or damaged (download it again)"
        ) from None
    except OSError as e:
        raise WearspecError(f"{path}: cannot read ({e.strerror or e})") from None
    if pending is not None:
        if not pending.endswith(b"\n"):
            pending += b"\n"
        seen = seen or bool(pending.strip())
        if seen:
            yield pending, line, True
    if not seen:
        raise WearspecError(f"{path}: empty file (no data lines)")


def header_line(text: bytes) -> bytes:
    """The first line of ``text`` without its line ending."""
    return text.split(b"\n", 1)[0].rstrip(b"\r")


# ------------------------------------------------------------------------------------------------
# Field boundaries
# ------------------------------------------------------------------------------------------------


@dataclass
class Fields:
    """Records of one chunk: ``starts``/``ends`` (n, k) byte offsets of each field, ``lines`` (n,).

    ``columns`` names the k fields for error messages. Convert a column with :meth:`floats`,
    :meth:`ints`, :meth:`datetimes` or :meth:`bytes_list`.
    """

    text: bytes
    buf: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    lines: np.ndarray
    source: str
    columns: Sequence[str]

    def __len__(self) -> int:
        return int(self.lines.shape[0])

    def _where(self, i: int, j: int | None = None) -> str:
        pos = f"line {int(self.lines[i])}"
        if j is not None:
            pos += f", column {j + 1} ({self.columns[j]})"
        return where(self.source, pos)

    def value(self, i: int, j: int) -> str:
        """The text of field ``j`` of record ``i`` (for messages)."""
        return self.text[int(self.starts[i, j]) : int(self.ends[i, j])].decode("utf-8", "replace")

    def error(self, i: int, j: int | None, expected: str) -> WearspecError:
        """An error at record ``i`` (field ``j``): '<file>, line L, column C (name): <expected>'."""
        return WearspecError(f"{self._where(i, j)}: {expected}")

    def raw(self, j: int) -> np.ndarray:
        """Column ``j`` as a fixed-width bytes array (dtype ``S<w>``), gathered without Python loops."""
        a, b = self.starts[:, j], self.ends[:, j]
        n = a.shape[0]
        w = max(int((b - a).max()) if n else 1, 1)
        buf = self.buf if w <= _PAD else np.concatenate([self.buf, np.zeros(w, np.uint8)])
        # every w-byte run of the buffer as one overlapping S<w> string; take the field starts
        runs = np.ndarray(shape=(buf.shape[0] - w + 1,), dtype=f"S{w}", buffer=buf, strides=(1,))
        s = runs[a]
        m = s.view(np.uint8).reshape(n, w)
        m *= np.arange(w, dtype=np.int64)[None, :] < (b - a)[:, None]  # clear bytes past the field
        return s

    def floats(self, j: int, *, empty_is_nan: bool = False, dtype=np.float64) -> np.ndarray:
        """Column ``j`` as numbers ('NaN' allowed; empty fields are NaN only if ``empty_is_nan``)."""
        s = self.raw(j)
        if empty_is_nan:
            empty = self.ends[:, j] == self.starts[:, j]
            if empty.any():
                s = s.astype(f"S{max(s.dtype.itemsize, 3)}")
                s[empty] = b"nan"
        try:
            return bytes_to_floats(s).astype(dtype, copy=False)
        except ValueError:
            pass
        if (bad := first_non_number(s.tolist())) is not None:
            raise self.error(bad[0], j, f"expected a number, got {self.value(bad[0], j)!r}")
        raise WearspecError(f"{self.source}: could not parse column {j + 1} ({self.columns[j]}) as numbers")

    def ints(self, j: int) -> np.ndarray:
        """Column ``j`` as int64 (plain integers only)."""
        s = self.raw(j)
        try:
            return s.astype(np.int64)
        except (ValueError, OverflowError):
            pass
        for i, v in enumerate(s.tolist()):
            try:
                int(v)
            except ValueError:
                raise self.error(i, j, f"expected an integer, got {self.value(i, j)!r}") from None
        raise WearspecError(f"{self.source}: could not parse column {j + 1} ({self.columns[j]}) as integers")

    def datetimes(self, j: int, example: str) -> np.ndarray:
        """Column ``j`` (ISO date-times such as ``example``) as int64 microseconds since 1970."""
        s = self.raw(j)
        # not s.astype(datetime64) directly: with numpy 2.4 a bytes → datetime64 cast that meets an
        # unparsable value in an array larger than the cast buffer crashes the interpreter
        text = s.astype(_STR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about (and applies) explicit UTC offsets
            try:
                t = text.astype("datetime64[us]")
                bad = np.isnat(t)
            except ValueError:
                t, bad = None, None
            if t is not None and not bad.any():
                return t.astype(np.int64)
            for i, v in enumerate(s.tolist()):
                try:
                    ok = not np.isnat(np.datetime64(v.decode("ascii"), "us"))
                except (ValueError, UnicodeDecodeError):
                    ok = False
                if not ok:
                    raise self.error(i, j, f"expected a date-time like {example!r}, got {self.value(i, j)!r}")
        raise WearspecError(f"{self.source}: could not parse column {j + 1} ({self.columns[j]}) as date-times")

    def bytes_list(self, j: int) -> list[bytes]:
        """Column ``j`` as a list of ``bytes`` (for free text such as annotations)."""
        text = self.text
        return [text[a:b] for a, b in zip(self.starts[:, j].tolist(), self.ends[:, j].tolist())]


_POW10 = np.array([float(10**k) for k in range(16)])
_INVALID = np.ones(256, bool)  # by byte - 48 (mod 256): not a digit, '.', or the zero padding
_INVALID[[*range(10), 254, 208]] = False


def bytes_to_floats(s: np.ndarray) -> np.ndarray:
    """Fixed-width bytes (``S<w>``, zero-padded) → float64, as ``s.astype(float64)`` gives it, ~20× faster.

    Plain decimals (``-12.345``: optional minus, digits, at most one dot, ≤ 15 digits) are converted by
    digit arithmetic: the integer mantissa (< 2⁵³, exact) divided by an exact power of ten is one
    correctly rounded operation, so the result equals numpy's (correctly rounded) parse bit for bit.
    Anything else (exponents, NaN, spaces, long numbers) goes through numpy; text that is not a number
    raises ``ValueError``.
    """
    n, w = s.shape[0], s.dtype.itemsize
    if n == 0 or w > 17:
        return s.astype(np.float64)
    cols = np.ascontiguousarray(s.view(np.uint8).reshape(n, w).T) - np.uint8(48)  # (w, n); digits 0..9
    neg = cols[0] == 253  # '-'
    bad = _INVALID[cols[0]] & ~neg
    n_digits = np.zeros(n, np.int8)
    dots = np.zeros(n, np.int8)
    before = np.zeros(n, np.int8)  # digits before the dot
    mant = np.zeros(n, np.float64)  # exact while < 2**53
    for k in range(w):
        c = cols[k]
        if k:
            bad |= _INVALID[c]
        is_digit = c < 10
        is_dot = c == 254  # '.'
        mant = np.where(is_digit, mant * 10.0 + c, mant)
        before = np.where(is_dot, n_digits, before)
        dots += is_dot
        n_digits += is_digit
    frac = np.where(dots > 0, n_digits - before, 0)
    ok = ~bad & (dots <= 1) & (n_digits >= 1) & (n_digits <= 15)
    out = mant / _POW10[frac]
    out[neg] *= -1.0
    if not ok.all():
        idx = np.flatnonzero(~ok)
        out[idx] = s[idx].astype(np.float64)
    return out


def _field_count_error(source, line: int, got: int, n: int, what: str, is_last_line: bool) -> WearspecError:
    hint = " (the file looks truncated)" if is_last_line and 0 < got < n else ""
    return WearspecError(f"{where(source, f'line {line}')}: expected {n} {what}, got {got}{hint}")


def split_whitespace(
    text: bytes, first_line: int, n_fields: int, source, columns: Sequence[str], *, is_last: bool = False
) -> Fields:
    """Split whole lines of whitespace-separated fields. Blank lines are skipped; a line with
    another number of fields is an error (the last line of a file: 'truncated')."""
    if not text.endswith(b"\n"):
        text += b"\n"
    buf = np.frombuffer(text, np.uint8)
    sep = (buf == _SPACE) | (buf == _TAB) | (buf == _CR) | (buf == _NL)
    nl = np.flatnonzero(buf == _NL)
    before = np.empty_like(sep)
    before[0], before[1:] = True, sep[:-1]
    after = np.empty_like(sep)
    after[-1], after[:-1] = True, sep[1:]
    tok = ~sep
    starts = np.flatnonzero(tok & before)
    ends = np.flatnonzero(tok & after) + 1
    counts = np.diff(np.searchsorted(starts, nl), prepend=0)  # tokens per line
    filled = counts > 0
    bad = filled & (counts != n_fields)
    if bad.any():
        i = int(np.argmax(bad))
        last = is_last and i == int(np.flatnonzero(filled)[-1])
        raise _field_count_error(source, first_line + i, int(counts[i]), n_fields, "space-separated values", last)
    rows = np.flatnonzero(filled)
    padded = np.concatenate([buf, np.zeros(_PAD, np.uint8)])
    return Fields(
        text, padded, starts.reshape(-1, n_fields), ends.reshape(-1, n_fields), first_line + rows, source, columns
    )


def _records(buf: np.ndarray, record_ends: bytes, first_line: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Record boundaries of a chunk: start and stop byte offsets (stop before a ``\\r``) and the file
    line of each record. Records end at any byte of ``record_ends`` and at ``\\n``."""
    ends_mask = np.zeros(buf.shape, bool)
    for ch in set(record_ends + b"\n"):
        ends_mask |= buf == ch
    rec_end = np.flatnonzero(ends_mask)
    rec_start = np.empty_like(rec_end)
    rec_start[0], rec_start[1:] = 0, rec_end[:-1] + 1
    stop = rec_end.copy()
    cr = (stop > rec_start) & (buf[np.maximum(stop - 1, 0)] == _CR)
    stop[cr] -= 1
    nl = np.flatnonzero(buf == _NL)
    return rec_start, stop, first_line + np.searchsorted(nl, rec_start)


def _split_regular(buf: np.ndarray, n_fields: int, delimiter: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """The common case in one pass: every line holds exactly ``n_fields`` fields (no blank lines). Then the
    delimiters and newlines, in order, are the field ends row by row. None when the chunk is not like
    that (the general path then finds and names the odd line)."""
    seps = np.flatnonzero((buf == delimiter[0]) | (buf == _NL))
    if seps.size == 0 or seps.size % n_fields:
        return None
    seps = seps.reshape(-1, n_fields)
    if not (buf[seps[:, -1]] == _NL).all() or (buf[seps[:, :-1]] == _NL).any():
        return None
    starts = np.empty_like(seps)
    starts[0, 0] = 0
    starts[1:, 0] = seps[:-1, -1] + 1
    starts[:, 1:] = seps[:, :-1] + 1
    ends = seps
    cr = (ends[:, -1] > starts[:, -1]) & (buf[np.maximum(ends[:, -1] - 1, 0)] == _CR)
    ends[cr, -1] -= 1
    return starts, ends


def _check_unquoted(buf: np.ndarray, rec_start: np.ndarray, limit: np.ndarray, rec_line: np.ndarray, source,
                    columns: Sequence[str]) -> None:
    """No quote character before ``limit`` (the start of the free-text last field) in any record."""
    q = np.flatnonzero(buf == _QUOTE)
    if not q.size:
        return
    first_q = q[np.minimum(np.searchsorted(q, rec_start), q.size - 1)]
    quoted = (first_q >= rec_start) & (first_q < limit)
    if quoted.any():
        i = int(np.argmax(quoted))
        raise WearspecError(
            f"{where(source, f'line {int(rec_line[i])}')}: quoted value in the fields "
            f"{', '.join(columns[:-1])}; expected plain values there"
        )


def split_delimited(
    text: bytes,
    first_line: int,
    n_fields: int,
    source,
    columns: Sequence[str],
    *,
    delimiter: bytes = b",",
    record_ends: bytes = b"\n",
    rest: bool = False,
    trailing_delimiter_ok: bool = False,
    is_last: bool = False,
) -> Fields:
    """Split records of ``delimiter``-separated fields.

    Records end at any byte of ``record_ends`` (always including ``\\n``; WISDM also uses ``;``).
    Empty records are skipped. With ``rest`` the last field takes the rest of the record (free
    text that may hold the delimiter, possibly quoted); fields before it may not be quoted. With
    ``trailing_delimiter_ok`` one extra delimiter right at the end of a record (an empty extra
    field) is accepted and ignored. Any other field count is an error naming the line.
    """
    if not text.endswith(b"\n"):
        text += b"\n"
    buf = np.frombuffer(text, np.uint8)
    padded = np.concatenate([buf, np.zeros(_PAD, np.uint8)])
    if n_fields > 1 and record_ends == b"\n" and not rest and not trailing_delimiter_ok:
        regular = _split_regular(buf, n_fields, delimiter)
        if regular is not None:
            starts, ends = regular
            return Fields(text, padded, starts, ends, first_line + np.arange(starts.shape[0]), source, columns)
    rec_start, stop, rec_line = _records(buf, record_ends, first_line)
    d = np.flatnonzero(buf == delimiter[0])
    k0 = np.searchsorted(d, rec_start)
    k1 = np.searchsorted(d, stop)
    count = k1 - k0
    blank = count == 0
    if blank.any():  # no delimiter: only a record of whitespace is really blank
        idx = np.flatnonzero(blank)
        really = np.array([not text[a:b].strip() for a, b in zip(rec_start[idx].tolist(), stop[idx].tolist())], bool)
        blank[idx[~really]] = False
    need = n_fields - 1
    if rest:
        ok = count >= need
    else:
        ok = count == need
        if trailing_delimiter_ok and d.size:
            extra = (count == need + 1) & (d[np.clip(k1 - 1, 0, d.shape[0] - 1)] == stop - 1)
            stop[extra] -= 1
            ok |= extra
    bad = ~ok & ~blank
    if bad.any():
        i = int(np.argmax(bad))
        last = is_last and i == int(np.flatnonzero(~blank)[-1])
        rec = text[rec_start[i] : stop[i]].decode("utf-8", "replace")
        err = _field_count_error(source, int(rec_line[i]), int(count[i]) + 1, n_fields, "comma-separated fields", last)
        raise WearspecError(f"{err} ({', '.join(columns)}): {rec[:120]!r}")
    keep = np.flatnonzero(~blank)
    k0, rec_start, stop, rec_line = k0[keep], rec_start[keep], stop[keep], rec_line[keep]
    starts = np.empty((keep.shape[0], n_fields), np.int64)
    ends = np.empty_like(starts)
    starts[:, 0] = rec_start
    ends[:, -1] = stop
    if need:
        seps = d[k0[:, None] + np.arange(need)[None, :]]
        starts[:, 1:] = seps + 1
        ends[:, :-1] = seps
        if rest:
            _check_unquoted(buf, rec_start, ends[:, -2], rec_line, source, columns)
    return Fields(text, padded, starts, ends, rec_line, source, columns)


# ------------------------------------------------------------------------------------------------
# Time axes
# ------------------------------------------------------------------------------------------------


def check_increasing(t: np.ndarray, lines: np.ndarray, source, unit: str = "s") -> None:
    """Timestamps must strictly increase; else an error naming the line."""
    if t.shape[0] < 2:
        return
    bad = np.diff(t) <= 0
    if bad.any():
        i = int(np.argmax(bad)) + 1
        raise WearspecError(
            f"{where(source, f'line {int(lines[i])}')}: timestamps must increase "
            f"(got {t[i]:g} {unit} after {t[i - 1]:g} {unit})"
        )


def segments(
    t: np.ndarray, lines: np.ndarray, rate: float, source, *, split_backwards_s: float | None = None, **tolerances
) -> list[tuple[int, int]]:
    """Continuous ``(begin, end)`` row ranges of a timestamp axis ``t`` (s) at nominal ``rate``.

    Checks that the timestamps increase (naming the line) and match ``rate``, then splits at gaps,
    both through :func:`~wearspec.data.windowing.uniform_from_timestamps` (``tolerances`` are its
    keyword arguments). With ``split_backwards_s``, a jump back in time by more than that many
    seconds (a clock change) starts a new range instead of being an error.
    """
    bounds = [0, t.shape[0]]
    if split_backwards_s is not None and t.shape[0] > 1:
        cuts = np.flatnonzero(np.diff(t) < -split_backwards_s) + 1
        bounds = [0, *cuts.tolist(), t.shape[0]]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        check_increasing(t[a:b], lines[a:b], source)
        out += [(a + x, a + y) for x, y, _ in uniform_from_timestamps(t[a:b], rate, str(source), **tolerances)]
    return out


def recordings_from_parts(subject: str, recording: str, t: np.ndarray, data: np.ndarray, codes: np.ndarray,
                          parts: list[tuple[int, int]], rate: float, source) -> Iterator[Recording]:
    """One :class:`Recording` per continuous ``(begin, end)`` part of a file's rows."""
    for k, (a, b) in enumerate(parts):
        yield Recording(
            subject=subject,
            recording=part_name(recording, k, len(parts)),
            data=np.ascontiguousarray(data[:, a:b]),
            rate=rate,
            labels=codes[a:b],
            start=float(t[a]),
            source=str(source),
        )


def file_recordings(files: Sequence[Path], names: Callable[[Path], tuple[str, str]],
                    read: Callable[[Path], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                    rate: float) -> Iterator[Recording]:
    """The recordings of one-recording-per-file datasets, file by file: ``names(f)`` → (subject, recording),
    ``read(f)`` → (t (s), label codes, data (C, T), file line numbers); each continuous part of a file (split
    at gaps by :func:`segments`) is one recording."""
    for f in files:
        subject, recording = names(f)
        t, codes, data, lines = read(f)
        yield from recordings_from_parts(subject, recording, t, data, codes, segments(t, lines, rate, f), rate, f)


def part_name(base: str, k: int, n: int) -> str:
    """Recording name of part ``k`` of ``n`` continuous parts (a single part keeps ``base``)."""
    return base if n == 1 or k == 0 else f"{base}_part{k + 1}"


def check_choice(values: Sequence[str], allowed: Sequence[str], key: str) -> list[str]:
    """A non-empty list of distinct known names, else an error naming the config key."""
    values = list(values)
    if not values:
        raise WearspecError(f"{key}: expected at least one of {', '.join(allowed)}")
    for v in values:
        if v not in allowed:
            raise WearspecError(f"{key}: unknown value {v!r}; expected some of {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise WearspecError(f"{key}: values must be distinct, got {values}")
    return values
