"""Continuous classification of a sensor stream (Edge Impulse ``run_classifier_continuous`` style).

:class:`StreamClassifier` keeps the newest ``window`` samples in a ring buffer. Feed it chunks of any size
with :meth:`~StreamClassifier.push` (one sample, less than a hop, or many windows at once); once a full window
has arrived it classifies the newest ``window`` samples every ``hop`` samples, so the predictions equal batch
inference on the windows starting at ``0, hop, 2·hop, …`` of the stream. Windows that become ready in the same
``push`` are classified in one batch. Optional smoothing averages the class probabilities of the last
``smoothing`` windows (moving average, as Edge Impulse does).

Missing samples (NaN/Inf) follow ``nan_policy``:

* ``hold`` (default): a missing value repeats the channel's last valid value (causal; a channel reads 0
  until its first valid value);
* ``interpolate``: missing values are filled linearly between the nearest valid samples of the same channel
  inside the window; at the window's edges the nearest valid value is repeated (so the newest samples are
  held until the next valid one arrives); an all-missing channel reads 0;
* ``zero``: missing values read 0;
* ``skip``: a window whose fraction of samples with any missing channel exceeds ``max_nan_fraction`` yields
  no prediction (counted as skipped, not fed to the smoothing); others are filled as ``interpolate``.

Every :class:`Prediction` reports the window's missing fraction. Timestamps are optional: ``push(chunk, t0)``
gives the time (s) of the chunk's first sample; later samples are ``1/rate`` apart. Without ``t0`` time
continues from the previous chunk (from 0 at the start). When ``max_gap_s`` is set and a chunk's ``t0`` differs
from the expected time by more than ``max_gap_s`` (a gap, or a jump backwards), the buffer, the smoothing and
the held values are reset: the next prediction comes once a full window has arrived after the gap. A partial
window at the end of a stream is never classified.

Sources yield chunks ``(n, C)`` or ``(chunk, t0)`` pairs: :func:`replay_csv`, :func:`replay_npy`,
:func:`read_stdin`, or any iterable/callable. :func:`run_stream` wires a bundle, a source and CSV output.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TextIO

import numpy as np

from wearspec.deploy.runtime.bench import latency_summary
from wearspec.errors import WearspecError, where

NAN_POLICIES = ("hold", "interpolate", "zero", "skip")
TIME_COLUMNS = ("time_s", "time", "timestamp", "t")


@dataclass
class Prediction:
    """One classified window.

    time_s: end of the window (time of its last sample + one sample period), in stream seconds.
    probabilities: (K,) class probabilities after smoothing; label/probability: their arg-max and max.
    latency_ms: wall time of the inference call that produced it. nan_fraction: share of samples missing.
    """

    time_s: float
    label: str
    probability: float
    probabilities: np.ndarray
    latency_ms: float
    nan_fraction: float = 0.0


class StreamClassifier:
    """Windows a continuous stream on the fly and classifies it with a backend (see module docstring).

    backend: anything with ``infer((B, C, T)) -> (B, K)``, ``input_shape`` (C, T), ``labels`` and optionally
    ``spec`` (a bundle spec giving window, hop and rate defaults). window/hop in samples, rate in Hz.
    """

    def __init__(self, backend, window: int | None = None, hop: int | None = None, n_channels: int | None = None,
                 smoothing: int = 1, nan_policy: str = "hold", max_nan_fraction: float = 0.25,
                 max_gap_s: float | None = None, rate: float | None = None, batch: int | None = None):
        spec = getattr(backend, "spec", None)
        c_model, t_model = backend.input_shape
        self.window = int(window if window is not None else t_model)
        self.n_channels = int(n_channels if n_channels is not None else c_model)
        if (self.n_channels, self.window) != (c_model, t_model):
            raise WearspecError(f"stream: the model takes windows of {c_model} channels x {t_model} samples, "
                                f"got n_channels={self.n_channels}, window={self.window}")
        hop = hop if hop is not None else (spec.hop if spec is not None else None)
        rate = rate if rate is not None else (spec.rate if spec is not None else None)
        if hop is None or int(hop) < 1:
            raise WearspecError(f"stream: hop must be a positive number of samples, got {hop!r}")
        if rate is None or not rate > 0:
            raise WearspecError(f"stream: rate must be a positive number (Hz), got {rate!r}")
        if int(smoothing) < 1:
            raise WearspecError(f"stream: smoothing must be >= 1 window, got {smoothing}")
        if nan_policy not in NAN_POLICIES:
            raise WearspecError(f"stream: nan_policy must be one of {list(NAN_POLICIES)}, got {nan_policy!r}")
        if not 0.0 <= max_nan_fraction <= 1.0:
            raise WearspecError(f"stream: max_nan_fraction must be in 0..1, got {max_nan_fraction}")
        if max_gap_s is not None and not max_gap_s > 0:
            raise WearspecError(f"stream: max_gap_s must be > 0 seconds, got {max_gap_s}")
        self.backend, self.hop, self.rate = backend, int(hop), float(rate)
        self.labels = tuple(backend.labels)
        self.smoothing, self.nan_policy = int(smoothing), nan_policy
        self.max_nan_fraction, self.max_gap_s = float(max_nan_fraction), max_gap_s
        self.batch = int(batch or getattr(backend, "max_batch", None) or 32)
        self._latencies: list[float] = []
        self.predictions = self.skipped = self.resets = 0
        self._t_next: float | None = None
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget buffered samples, smoothing history and held values (timestamps continue)."""
        self._ring = np.zeros((self.window, self.n_channels), np.float32)
        self._missing = np.zeros((self.window, self.n_channels), bool)
        self._pos = 0                 # next write slot of the ring
        self._count = 0               # samples since the last reset
        self._next_emit = self.window  # sample count at which the next window is complete
        self._last_valid = np.full(self.n_channels, np.nan, np.float32)
        self._history: deque = deque(maxlen=self.smoothing)

    def _write(self, block: np.ndarray, missing: np.ndarray) -> None:
        m, w = block.shape[0], self.window
        if m >= w:
            self._ring[:] = block[-w:]
            self._missing[:] = missing[-w:]
            self._pos = 0
            return
        first = min(m, w - self._pos)
        self._ring[self._pos:self._pos + first] = block[:first]
        self._missing[self._pos:self._pos + first] = missing[:first]
        self._ring[:m - first] = block[first:]
        self._missing[:m - first] = missing[first:]
        self._pos = (self._pos + m) % w

    def _hold(self, x: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Forward-fill missing values per channel, carrying the last valid value across chunks."""
        idx = np.where(missing, -1, np.arange(x.shape[0])[:, None])
        np.maximum.accumulate(idx, axis=0, out=idx)
        filled = np.take_along_axis(x, np.maximum(idx, 0), axis=0)
        carry = np.where(np.isnan(self._last_valid), 0.0, self._last_valid).astype(np.float32)
        filled = np.where(idx < 0, carry[None, :], filled)
        self._last_valid = np.where(missing.all(axis=0), self._last_valid, filled[-1]).astype(np.float32)
        return filled

    def _current_window(self) -> tuple[np.ndarray, float]:
        """The newest window as (C, T) with missing values filled, and its missing fraction."""
        order = np.r_[self._pos:self.window, 0:self._pos]
        win, miss = self._ring[order], self._missing[order]
        frac = float(miss.any(axis=1).mean())
        if self.nan_policy in ("interpolate", "skip") and miss.any():
            win = win.copy()
            t = np.arange(self.window)
            for c in np.flatnonzero(miss.any(axis=0)):
                ok = ~miss[:, c]
                win[:, c] = np.interp(t, t[ok], win[ok, c]) if ok.any() else 0.0
        return np.ascontiguousarray(win.T), frac

    # ------------------------------------------------------------------ streaming
    def push(self, chunk: Any, t0: float | None = None) -> list[Prediction]:
        """Add samples ``(n, C)`` (or one sample ``(C,)``); returns the predictions that became ready.

        t0: time (s) of the chunk's first sample, if the source has timestamps (see ``max_gap_s``).
        """
        x = np.array(chunk, dtype=np.float32, copy=True)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.n_channels:
            raise WearspecError(f"stream: expected a chunk of shape (n, {self.n_channels}) (samples, channels), "
                                f"got {tuple(np.shape(chunk))}")
        n = x.shape[0]
        if t0 is not None:
            t0 = float(t0)
            if (self._t_next is not None and self.max_gap_s is not None
                    and abs(t0 - self._t_next) > self.max_gap_s):
                self.reset()
                self.resets += 1
            start = t0
        else:
            start = self._t_next if self._t_next is not None else 0.0
        if n == 0:
            return []
        self._t_next = start + n / self.rate
        missing = ~np.isfinite(x)
        if missing.any():
            if self.nan_policy == "hold":
                x = self._hold(x, missing)
            elif self.nan_policy == "zero":
                x[missing] = 0.0
        elif self.nan_policy == "hold":
            self._last_valid = x[-1].copy()

        ready: list[tuple[np.ndarray, float, float]] = []
        i = 0
        while i < n:
            take = min(n - i, self._next_emit - self._count)
            self._write(x[i:i + take], missing[i:i + take])
            i += take
            self._count += take
            if self._count == self._next_emit:
                self._next_emit += self.hop
                win, frac = self._current_window()
                if self.nan_policy == "skip" and frac > self.max_nan_fraction:
                    self.skipped += 1
                    continue
                ready.append((win, start + i / self.rate, frac))
        return self._classify(ready)

    def _classify(self, ready: list[tuple[np.ndarray, float, float]]) -> list[Prediction]:
        out: list[Prediction] = []
        for s in range(0, len(ready), self.batch):
            part = ready[s:s + self.batch]
            t0 = time.perf_counter()
            probs = np.asarray(self.backend.infer(np.stack([w for w, _, _ in part])), np.float32)
            ms = (time.perf_counter() - t0) * 1e3
            self._latencies.append(ms)
            for (_, t_end, frac), p in zip(part, probs):
                self._history.append(p)
                avg = p if self.smoothing == 1 else np.mean(self._history, axis=0)
                k = int(np.argmax(avg))
                out.append(Prediction(t_end, self.labels[k], float(avg[k]), avg, ms, frac))
        self.predictions += len(out)
        return out

    def run(self, source: Any) -> Iterator[Prediction]:
        """Push every chunk of a source (see :func:`iter_chunks`) and yield the predictions as they come."""
        for chunk, t0 in iter_chunks(source):
            yield from self.push(chunk, t0)

    def latency_stats(self) -> dict:
        """Latency of the inference calls (ms: mean, p50, p90, p99, min, max) and stream counters."""
        return dict(latency_summary(self._latencies), calls=len(self._latencies), predictions=self.predictions,
                    skipped=self.skipped, resets=self.resets)


# ---------------------------------------------------------------------- sources
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


def _parse_rows(rows: Iterable[tuple[int, list[str]]], name: str, channels: Sequence[str | int] | None,
                n_channels: int | None, time_column: str | int | None, chunk: int,
                rate: float | None) -> Iterator[tuple[np.ndarray, float | None]]:
    """Shared CSV logic: header detection, column selection, numbers (blank/NaN = missing), chunking."""
    if chunk < 1:
        raise WearspecError(f"{where(name)}: chunk must be >= 1 sample, got {chunk}")
    header: list[str] | None = None
    cols: list[int] | None = None
    tcol: int | None = None
    buf: list[list[float]] = []
    t_first: float | None = None
    t_prev: float | None = None
    gap = 1.5 / rate if rate else None

    def setup(width: int, line: int) -> None:
        nonlocal cols, tcol
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
            raise WearspecError(f"{where(name, f'line {line}')}: expected {n_channels} channel columns, "
                                f"found {len(cols)}")
        if any(c >= width for c in cols) or (tcol is not None and tcol >= width):
            raise WearspecError(f"{where(name, f'line {line}')}: column index out of range (row has {width})")

    def number(cell: str, line: int, col: int) -> float:
        cell = cell.strip()
        if cell == "":
            return math.nan
        try:
            return float(cell)
        except ValueError:
            label = header[col] if header and col < len(header) else f"column {col + 1}"
            raise WearspecError(f"{where(name, f'line {line}')}: {label}: expected a number, got {cell!r}") from None

    def flush() -> tuple[np.ndarray, float | None]:
        block = np.asarray(buf, dtype=np.float32).reshape(len(buf), len(cols or []))
        buf.clear()
        return block, t_first

    width = None
    for line, row in rows:
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if width is None:
            try:
                [float(c) for c in row if c.strip()]
            except ValueError:
                header = [c.strip() for c in row]
                width = len(row)
                setup(width, line)
                continue
            width = len(row)
            setup(width, line)
        if len(row) != width:
            raise WearspecError(f"{where(name, f'line {line}')}: expected {width} values, got {len(row)}")
        t = number(row[tcol], line, tcol) if tcol is not None else None
        if buf and t is not None and t_prev is not None and gap is not None and abs(t - t_prev) > gap:
            yield flush()       # split at timestamp gaps so each chunk is uniformly sampled
        if not buf:
            t_first = t
        buf.append([number(row[c], line, c) for c in cols or []])
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
        rows = ((i, row) for i, row in enumerate(csv.reader(fh, delimiter=delimiter), 1))
        yield from _parse_rows(rows, str(path), channels, None, time_column, chunk, rate)


def read_stdin(n_channels: int | None = None, chunk: int = 1, stream: TextIO | None = None,
               channels: Sequence[str | int] | None = None, time_column: str | int | None = None,
               rate: float | None = None) -> Iterator[tuple[np.ndarray, float | None]]:
    """Live lines of comma-separated values from stdin (or ``stream``), yielded every ``chunk`` lines.

    An optional first header line names the columns; lines starting with ``#`` are ignored.
    """
    stream = stream if stream is not None else sys.stdin
    lines = iter(stream.readline, "")
    rows = ((i, next(csv.reader([text]), [])) for i, text in enumerate(lines, 1))
    yield from _parse_rows(rows, "<stdin>", channels, n_channels, time_column, chunk, rate)


def replay_npy(path: str | os.PathLike, chunk: int, channels_first: bool = False) -> Iterator[np.ndarray]:
    """Replay a ``.npy`` recording of shape (n, C) (or (C, n) with ``channels_first``) in chunks."""
    path = Path(path)
    if not path.is_file():
        raise WearspecError(f"{where(path)}: no such file")
    if chunk < 1:
        raise WearspecError(f"{where(path)}: chunk must be >= 1 sample, got {chunk}")
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    if data.ndim != 2:
        raise WearspecError(f"{where(path)}: expected a 2-D array (samples, channels), got shape {data.shape}")
    if channels_first:
        data = data.T
    for s in range(0, data.shape[0], chunk):
        yield np.asarray(data[s:s + chunk], dtype=np.float32)


# ---------------------------------------------------------------------- command-line driver
def _open_source(source: Any, spec, chunk: int | None, time_column: str | int | None):
    if isinstance(source, (str, os.PathLike)):
        if str(source) == "-":
            return read_stdin(n_channels=spec.n_channels, chunk=chunk or 1, time_column=time_column, rate=spec.rate,
                              channels=list(spec.channels))
        path = Path(source)
        if path.suffix.lower() == ".npy":
            return replay_npy(path, chunk or spec.hop)
        if path.suffix.lower() in (".csv", ".txt", ".tsv"):
            return replay_csv(path, channels=list(spec.channels), rate=spec.rate, chunk=chunk or spec.hop,
                              time_column=time_column, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        raise WearspecError(f"{where(path)}: unknown source type; expected .csv, .tsv, .npy or '-' (stdin)")
    return source


def run_stream(bundle_dir: str | os.PathLike, source: Any, backend: Any = "onnxruntime", engine: Any = None,
               precision: str | None = None, smoothing: int = 1, nan_policy: str = "hold",
               max_nan_fraction: float = 0.25, max_gap_s: float | None = None, hop: int | None = None,
               chunk: int | None = None, threads: int | None = None, time_column: str | int | None = "auto",
               header: bool = True, out: TextIO | None = None, err: TextIO | None = None,
               on_prediction: Callable[[Prediction], None] | None = None) -> dict:
    """Classify a stream with a bundle; print ``time_s,label,probability`` per prediction (CSV, flushed).

    source: a CSV/TSV/.npy path, ``'-'`` for stdin, or an iterable/callable of chunks. backend: a backend
    name (``onnxruntime``/``tensorrt``) or an already opened backend. Latency statistics go to ``err``
    (stderr) at the end and are returned.
    """
    from wearspec.deploy.runtime.backends import load_backend, read_bundle_spec

    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    owned = isinstance(backend, str)
    be = load_backend(bundle_dir, backend, engine=engine, precision=precision, threads=threads) if owned else backend
    try:
        spec = getattr(be, "spec", None) or read_bundle_spec(bundle_dir)
        clf = StreamClassifier(be, hop=hop or spec.hop, rate=spec.rate, smoothing=smoothing, nan_policy=nan_policy,
                               max_nan_fraction=max_nan_fraction, max_gap_s=max_gap_s)
        writer = csv.writer(out, lineterminator="\n")
        if header:
            writer.writerow(["time_s", "label", "probability"])
            out.flush()
        for pred in clf.run(_open_source(source, spec, chunk, time_column)):
            writer.writerow([f"{pred.time_s:.3f}", pred.label, f"{pred.probability:.4f}"])
            out.flush()
            if on_prediction is not None:
                on_prediction(pred)
        stats = clf.latency_stats()
        name = be.describe().get("backend", "?") if hasattr(be, "describe") else type(be).__name__
        print(f"stream: {stats['predictions']} predictions, {stats['skipped']} skipped, {stats['resets']} resets; "
              f"latency ms p50 {stats['p50_ms']:.3f} p99 {stats['p99_ms']:.3f} mean {stats['mean_ms']:.3f} "
              f"max {stats['max_ms']:.3f} over {stats['calls']} calls ({name})", file=err)
        err.flush()
        return stats
    finally:
        if owned:
            be.close()


__all__ = ["Prediction", "StreamClassifier", "NAN_POLICIES", "iter_chunks", "replay_csv", "replay_npy",
           "read_stdin", "run_stream"]
