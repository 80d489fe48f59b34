"""Generic inputs: numpy window arrays, or long recordings in CSV / CSV.gz / Parquet tables.

``wearspec prepare generic PATH`` picks the layout from ``PATH``:

**numpy windows** (the OxWearables ssl-wearables convention) — ``PATH`` is a folder (or its
``X.npy``) holding

* ``X.npy``: windows (n, C, T) of any numeric dtype; (n, T) is read as one channel. When
  ``generic.channels`` names C channels and the array is (n, T, C) instead, it is transposed;
* ``Y.npy`` (optional): n labels, text or numbers. Label names are the sorted distinct values, or
  ``generic.labels`` (then any other value is an error; numbers are matched by their text, e.g.
  ``generic.labels=['1','2']``). Empty text and NaN mean unlabelled;
* ``P.npy`` or ``pid.npy`` (optional): n subject ids (default: one subject ``S0``).

``generic.rate`` (the windows' native rate in Hz) is required. Channels are ``generic.channels`` or
``ch0, ch1, ...``. Arrays are memory-mapped and object arrays are refused (never unpickled). Each
subject is delivered in chunks of at most 2048 windows, so memory stays bounded.

**tables** — ``PATH`` is a ``.csv``, ``.csv.gz`` or ``.parquet`` file or a folder of them (not
recursive), one row per sample:

* a time column ``generic.time_column`` in ``generic.time_unit`` (``s``, ``ms``, ``us``, ``ns``, or
  ``datetime`` for ISO-8601 text; Parquet timestamp columns are read as such). Without a time
  column, ``generic.rate`` is required and the rows are taken as uniformly sampled;
* one column per channel: ``generic.channels``, or else every other numeric column;
* optional ``generic.subject_column`` (absent: the file name without suffix is the subject),
  ``generic.recording_column`` and ``generic.label_column`` (text; empty = unlabelled; with
  ``generic.labels`` set any other value is an error, else the label names are collected from every
  file in a first pass — setting ``generic.labels`` skips that pass).

Rows are grouped by (subject, recording) in file order; timestamps must increase within a group;
they are checked against ``generic.rate`` (or give the rate, when it is unset) and split at gaps
longer than ``generic.max_gap_s``: each continuous piece becomes one recording (``name#k`` when
split). Empty cells and ``NA``/``NaN``/``null`` become NaN for the NaN policy (``window.nan_policy``);
other text in a channel is an error naming the file, line and column. The CSV delimiter (comma, tab
or semicolon) is taken from the header line.

Files larger than one 16 MiB chunk (Parquet: more than 2²⁰ rows) are read in parts
(:mod:`~wearspec.data.readers.table_stream`) and windowed as they arrive, so memory does not grow
with a recording's length; there the rows of one (subject, recording) must be contiguous. With pyarrow
installed, a CSV of one recording (no subject or recording column) above 1 MiB takes that path too, for its
faster parser.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wearspec.data.readers import Source
from wearspec.data.readers import chunks, table_stream
from wearspec.data.readers.table_stream import column_values, float32_values, stream_items
from wearspec.data.readers.tables import (
    Table,
    check_file,
    encode_labels,
    parquet_schema,
    parse_times,
    read_table,
    sort_labels,
    table_stem,
    table_suffix,
)
from wearspec.data.windowing import Recording, WindowBatch, uniform_from_timestamps
from wearspec.errors import WearspecError, where
from wearspec.utils.io import load_npy

CHUNK = 2048  # windows per WindowBatch for numpy inputs


def open_source(path: Path, cfg) -> Source:
    """Numpy windows when ``path`` holds ``X.npy`` (or is one), else CSV/Parquet tables."""
    if path is None:
        raise WearspecError("generic: expected an input path (a folder with X.npy, or CSV/Parquet files)")
    path = Path(path)
    if path.is_file() and path.name == "X.npy":
        return _open_numpy(path.parent, cfg)
    if path.is_dir() and (path / "X.npy").exists():
        return _open_numpy(path, cfg)
    return _open_tables(path, cfg)


# ---------------------------------------------------------------------------------------------
# numpy windows
# ---------------------------------------------------------------------------------------------


def _load_npy(path: Path, expected: str) -> np.ndarray:
    check_file(path, expected)
    return load_npy(path, expected, mmap=True)


def _as_strings(a: np.ndarray, path: Path, what: str) -> np.ndarray:
    """A 1-D label/subject array → str array ('' = missing). Integral floats print as integers."""
    a = np.asarray(a)
    kind = a.dtype.kind
    if kind == "U":
        return a.astype(str)
    if kind == "S":
        try:
            return np.char.decode(a, "utf-8")
        except UnicodeDecodeError as e:
            raise WearspecError(f"{path}: {what} are not UTF-8 text ({e.reason})") from None
    if kind in "iub":
        return a.astype(np.int64).astype(str) if kind != "b" else a.astype(str)
    if kind == "f":
        finite = np.isfinite(a)
        safe = np.where(finite, a, 0)
        integral = finite & (safe == np.round(safe))
        text = np.where(integral, safe.astype(np.int64).astype(str), safe.astype(str))
        return np.where(finite, text, "")
    raise WearspecError(f"{path}: expected {what} as text or numbers, found dtype {a.dtype}")


def _side_array(path: Path, n: int, xpath: Path, what: str) -> np.ndarray:
    arr = _load_npy(path, f"{what} (n,)")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise WearspecError(
            f"{path}: expected {n} {what} (one per window of {xpath.name}, shape ({n},)), found shape {arr.shape}"
        )
    return _as_strings(np.array(arr), path, what)


def _numpy_windows(xpath: Path, g) -> tuple[np.ndarray, list[str], bool]:
    """``X.npy`` memory-mapped and checked: (windows (n, C, T) or (n, T, C), channel names, whether the
    array is (n, T, C) and must be transposed). (n, T) is one channel."""
    if g.rate is None:
        raise WearspecError(
            f"{xpath}: numpy windows carry no time stamps; set generic.rate=<Hz> to their native sampling rate"
        )
    if not g.rate > 0:
        raise WearspecError(f"generic.rate: expected a positive rate in Hz, got {g.rate}")
    x = _load_npy(xpath, "windows of shape (n, channels, samples)")
    if x.dtype.kind not in "fiu":
        raise WearspecError(f"{xpath}: expected numeric windows, found dtype {x.dtype}")
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3:
        raise WearspecError(f"{xpath}: expected windows of shape (n, channels, samples), found shape {x.shape}")
    n, c, t = x.shape
    if n == 0 or t == 0:
        raise WearspecError(f"{xpath}: holds no windows (shape {x.shape})")
    transpose = False
    channels = [str(ch) for ch in g.channels]
    if channels and c != len(channels):
        if t == len(channels):  # (n, T, C): the other common layout
            transpose, c = True, t
        else:
            raise WearspecError(
                f"{xpath}: windows have {c} channels (shape {x.shape}, read as (n, channels, samples)) "
                f"but generic.channels names {len(channels)}: {channels}"
            )
    return x, channels or [f"ch{i}" for i in range(c)], transpose


def _numpy_subjects(folder: Path, n: int, xpath: Path) -> tuple[Path | None, np.ndarray | None]:
    """``P.npy`` or ``pid.npy`` (n,) subject ids as text, if present; an empty id is an error."""
    ppath = next((folder / p for p in ("P.npy", "pid.npy") if (folder / p).exists()), None)
    if ppath is None:
        return None, None
    pid = _side_array(ppath, n, xpath, "subject ids")
    empty = np.char.str_len(np.char.strip(pid)) == 0
    if empty.any():
        raise WearspecError(f"{where(ppath, f'index {int(np.argmax(empty))}')}: expected a subject id, found none")
    return ppath, pid


def _numpy_batches(x: np.ndarray, transpose: bool, rate: float, codes, pid, xpath: Path):
    """Windows grouped by subject (in order of first appearance), at most ``CHUNK`` per batch, so
    memory stays bounded whatever the size of the memory-mapped ``X.npy``."""
    n, t = x.shape[0], x.shape[1] if transpose else x.shape[2]
    if pid is None:
        groups = [("S0", np.arange(n))]
    else:
        uniq, first, inv = np.unique(pid, return_index=True, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        ends = np.cumsum(np.bincount(inv, minlength=len(uniq)))
        begins = ends - np.bincount(inv, minlength=len(uniq))
        groups = [(str(uniq[k]), order[begins[k] : ends[k]]) for k in np.argsort(first, kind="stable")]
    dur = t / rate
    for subject, idx in groups:
        for k0 in range(0, len(idx), CHUNK):
            sel = idx[k0 : k0 + CHUNK]
            if sel[-1] - sel[0] + 1 == len(sel):  # contiguous: one slice of the memmap
                win = np.array(x[sel[0] : sel[-1] + 1], dtype=np.float32)
            else:
                win = np.array(x[sel], dtype=np.float32)
            if transpose:
                win = np.ascontiguousarray(win.transpose(0, 2, 1))
            yield WindowBatch(
                subject=subject,
                recording=subject,
                windows=win,
                rate=float(rate),
                labels=None if codes is None else codes[sel],
                starts=np.arange(k0, k0 + len(sel), dtype=np.float64) * dur,
                source=f"{xpath} (subject {subject})",
            )


def _open_numpy(folder: Path, cfg) -> Source:
    g = cfg.generic
    xpath = folder / "X.npy"
    x, channels, transpose = _numpy_windows(xpath, g)
    n = x.shape[0]
    inputs = [xpath]
    ypath = folder / "Y.npy"
    names: list[str] = []
    codes = None
    if ypath.exists():
        inputs.append(ypath)
        y = _side_array(ypath, n, xpath, "labels")
        names = [str(s) for s in g.labels] or sort_labels(v.strip() for v in np.unique(y).tolist() if v.strip())
        hint = " (generic.labels)" if g.labels else ""
        codes = encode_labels(y, names, lambda i: where(ypath, f"index {i}"), hint)
    ppath, pid = _numpy_subjects(folder, n, xpath)
    if ppath is not None:
        inputs.append(ppath)
    meta = {"layout": "numpy", "native_rate": float(g.rate), "transposed": transpose}
    items = _numpy_batches(x, transpose, g.rate, codes, pid, xpath)
    return Source("generic", channels, names, items, inputs=inputs, meta=meta)


# ---------------------------------------------------------------------------------------------
# CSV / Parquet tables
# ---------------------------------------------------------------------------------------------


def input_files(path: Path, cfg) -> list[Path]:
    """The tables at ``path``, one store part each (:mod:`wearspec.data.parts`); numpy windows are one whole."""
    if (path.is_file() and path.name == "X.npy") or (path.is_dir() and (path / "X.npy").exists()):
        raise WearspecError(f"{path}: numpy windows are read as a whole; jobs, shard and keep_going apply to "
                            "CSV/Parquet files")
    return _table_files(path)


def _table_files(path: Path) -> list[Path]:
    if path.is_file():
        if table_suffix(path) is None:
            raise WearspecError(
                f"{path}: expected a .csv, .csv.gz or .parquet file, or a folder with X.npy or such files"
            )
        return [path]
    if not path.is_dir():
        raise WearspecError(f"{path}: input not found")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and table_suffix(p))
    if not files:
        raise WearspecError(f"{path}: folder holds no X.npy and no .csv, .csv.gz or .parquet files")
    return files


def _head(path: Path) -> tuple[list[str], set[str]]:
    """Column names and the numeric ones, from the header and the first rows (Parquet: schema)."""
    if table_suffix(path) == ".parquet":
        import pyarrow as pa

        schema, n_rows = parquet_schema(path)
        if n_rows == 0:
            raise WearspecError(f"{path}: no data rows (expected one row per sample)")
        numeric = {
            f.name for f in schema
            if pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        }
        return list(schema.names), numeric
    head = read_table(path, head=100)
    if head.n_rows == 0:
        raise WearspecError(f"{path}: no data rows after the header (expected one row per sample)")
    return head.columns, {c for c in head.columns if head.is_numeric(c)}


def _open_tables(path: Path, cfg) -> Source:
    g = cfg.generic
    if g.time_unit not in ("s", "ms", "us", "ns", "datetime"):
        raise WearspecError(f"generic.time_unit: expected one of s, ms, us, ns, datetime; got {g.time_unit!r}")
    if g.rate is not None and not g.rate > 0:
        raise WearspecError(f"generic.rate: expected a positive rate in Hz, got {g.rate}")
    files = _table_files(path)
    special = {g.time_column, g.subject_column, g.recording_column, g.label_column}
    plans = []
    first_channels: list[str] | None = None
    for f in files:
        columns, numeric = _head(f)
        has_time = g.time_column in columns
        if not has_time and g.rate is None:
            raise WearspecError(
                f"{f}: missing column(s) {g.time_column!r} (the time column); found columns: "
                f"{', '.join(map(repr, columns))}; set generic.time_column=<name>, or generic.rate=<Hz> "
                "for rows without time stamps"
            )
        if g.channels:
            channels = [str(c) for c in g.channels]
            missing = [c for c in channels if c not in columns]
            if missing:
                raise WearspecError(
                    f"{f}: missing channel column(s) {', '.join(map(repr, missing))} (generic.channels); "
                    f"found columns: {', '.join(map(repr, columns))}"
                )
        else:
            channels = [c for c in columns if c not in special and c in numeric]
            if not channels:
                raise WearspecError(
                    f"{f}: no numeric channel columns (time, subject, recording and label columns excluded); "
                    f"found columns: {', '.join(map(repr, columns))}; set generic.channels"
                )
        if first_channels is None:
            first_channels = channels
        elif channels != first_channels:
            raise WearspecError(
                f"{f}: channel columns {channels} ({len(channels)}) differ from {first_channels} "
                f"({len(first_channels)}) in {files[0]}; set generic.channels to pick the same ones"
            )
        plans.append((f, has_time, g.subject_column in columns, g.recording_column in columns,
                      g.label_column in columns))
    assert first_channels is not None
    if g.labels:
        names = [str(s) for s in g.labels]
    else:  # first pass: collect the label names of every file
        seen: set[str] = set()
        for f, *_, has_label in plans:
            if has_label:
                seen.update(v.strip() for v in column_values(f, g.label_column).tolist() if v.strip())
        names = sort_labels(seen)

    def items():
        for plan in plans:
            if _is_large(plan, g.time_unit):
                yield from stream_items(plan[0], first_channels, names, cfg, table_stem(plan[0]))
            else:
                yield from _table_items(plan, first_channels, names, cfg)

    meta = {"layout": "table", "files": len(files)}
    return Source("generic", first_channels, names, items(), inputs=files, meta=meta)


STREAM_MIN_BYTES = 1 << 20  # a one-recording CSV above this goes through pyarrow's parser when it is installed


def _is_large(plan, time_unit: str) -> bool:
    """Read in parts (bounded memory): a CSV of more than one byte chunk, a Parquet file of more than one
    batch of rows; and, where pyarrow is installed, a CSV of one recording (no subject or recording column)
    above :data:`STREAM_MIN_BYTES`, whose pyarrow parse is ~10× the whole-table path's (a cohort of many
    small files). Smaller files are read whole."""
    path, _, has_subject, has_recording, _ = plan
    if table_suffix(path) == ".parquet":
        return parquet_schema(path)[1] > table_stream.PARQUET_ROWS
    size = path.stat().st_size
    return size > chunks.CHUNK_BYTES or (size > STREAM_MIN_BYTES and not (has_subject or has_recording)
                                         and time_unit != "datetime" and table_stream._arrow_csv() is not None)


def _groups(table: Table, subjects, recordings):
    """Row indices of each (subject, recording) group, in order of first appearance."""
    n = table.n_rows
    code = np.zeros(n, np.int64)
    for arr in (subjects, recordings):
        if arr is not None:
            u, inv = np.unique(arr, return_inverse=True)
            code = code * len(u) + inv.ravel()
    _, first, inv = np.unique(code, return_index=True, return_inverse=True)
    inv = inv.ravel()
    counts = np.bincount(inv)
    order = np.argsort(inv, kind="stable")
    ends = np.cumsum(counts)
    for k in np.argsort(first, kind="stable"):
        yield order[ends[k] - counts[k] : ends[k]]


def _table_items(plan, channels: list[str], names: list[str], cfg):
    g = cfg.generic
    f, has_time, has_subject, has_recording, has_label = plan
    table = read_table(f)
    if table.n_rows == 0:
        raise WearspecError(f"{f}: no data rows after the header (expected one row per sample)")
    table.require(channels, "(channels)")
    data = np.stack([float32_values(table.floats(c), lambda i, c=c: table.where(i, c)) for c in channels])  # (C, N)
    times = parse_times(table, g.time_column, g.time_unit) if has_time else None
    stem = table_stem(f)
    subjects = np.char.strip(table.strings(g.subject_column)) if has_subject else None
    recordings = np.char.strip(table.strings(g.recording_column)) if has_recording else None
    for col, arr in ((g.subject_column, subjects), (g.recording_column, recordings)):
        if arr is not None:
            empty = np.char.str_len(arr) == 0
            if empty.any():
                raise WearspecError(f"{table.where(int(np.argmax(empty)), col)}: expected a value, found an empty cell")
    labels = None
    if has_label:
        hint = " (generic.labels)" if g.labels else ""
        labels = encode_labels(table.strings(g.label_column), names, lambda i: table.where(i, g.label_column), hint)
    for idx in _groups(table, subjects, recordings):
        subject = str(subjects[idx[0]]) if subjects is not None else stem
        rec = str(recordings[idx[0]]) if recordings is not None else stem
        name = rec if rec == subject else f"{subject}/{rec}"
        span = table.span(int(idx[0]), int(idx[-1]))
        context = f"{f}, {span} (subject {subject}, recording {rec})"
        if times is None:
            segments = [(0, len(idx), float(g.rate))]
            t = None
        else:
            t = times[idx]
            if len(idx) < 2 and g.rate is None:
                raise WearspecError(
                    f"{table.where(int(idx[0]))}: subject {subject}, recording {rec} has a single row, too few "
                    "to measure the sampling rate; set generic.rate=<Hz>"
                )
            back = np.flatnonzero(np.diff(t) <= 0)
            if back.size:
                i = int(back[0]) + 1
                raise WearspecError(
                    f"{table.where(int(idx[i]), g.time_column)}: timestamps must increase within subject {subject}, "
                    f"recording {rec} (previous row {table.cell(int(idx[i - 1]), g.time_column)!r}, "
                    f"this row {table.cell(int(idx[i]), g.time_column)!r})"
                )
            segments = list(uniform_from_timestamps(t, g.rate, context, max_gap_s=g.max_gap_s))
        for k, (a, b, rate) in enumerate(segments):
            sel = idx[a:b]
            seg_name = f"{name}#{k}" if len(segments) > 1 else name
            yield Recording(
                subject=subject,
                recording=seg_name,
                data=np.ascontiguousarray(data[:, sel]),
                rate=rate,
                labels=None if labels is None else labels[sel],
                start=0.0 if t is None else float(t[a] - t[0]),
                source=f"{f}, {table.span(int(sel[0]), int(sel[-1]))} (subject {subject}, recording {seg_name})",
            )
