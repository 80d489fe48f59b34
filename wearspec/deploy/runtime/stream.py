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

Under every policy a window with no valid value at all yields no prediction (skipped; :func:`run_stream` names
those samples in a warning, and refuses an input that gives no prediction at all).

Every :class:`Prediction` reports the window's missing fraction. Timestamps are optional: ``push(chunk, t0)``
gives the time (s) of the chunk's first sample; later samples are ``1/rate`` apart. Without ``t0`` time
continues from the previous chunk (from 0 at the start). When ``max_gap_s`` is set and a chunk's ``t0`` differs
from the expected time by more than ``max_gap_s`` (a gap, or a jump backwards), the buffer, the smoothing and
the held values are reset: the next prediction comes once a full window has arrived after the gap. Without
``max_gap_s`` a chunk that starts before the previous one ended (time going backwards) is an error. A partial
window at the end of a stream is never classified.

Sources (:mod:`.sources`) yield chunks ``(n, C)`` or ``(chunk, t0)`` pairs: :func:`replay_csv`,
:func:`replay_npy`, :func:`read_stdin`, or any iterable/callable. :func:`run_stream` wires a bundle, a source
and CSV output, with the settings of a :class:`StreamConfig`.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

import numpy as np

from wearspec.deploy.runtime.bench import latency_summary
from wearspec.deploy.runtime.sources import iter_chunks, open_source, read_stdin, replay_csv, replay_npy
from wearspec.errors import WearspecError

NAN_POLICIES = ("hold", "interpolate", "zero", "skip")


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
        self.samples = 0              # samples pushed in all
        self.empty: list[tuple[int, int]] = []  # (first, last) sample numbers (from 1) of windows with no valid value
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
            if not np.isfinite(t0):
                raise WearspecError(f"stream: a chunk's time must be a finite number of seconds, got {t0}")
            if (self._t_next is not None and self.max_gap_s is not None
                    and abs(t0 - self._t_next) > self.max_gap_s):
                self.reset()
                self.resets += 1
            elif self._t_next is not None and n and t0 < self._t_next - 0.5 / self.rate:
                raise WearspecError(
                    f"stream: time goes backwards at sample {self.samples + 1}: {t0:.3f} s after samples up to "
                    f"{self._t_next - 1 / self.rate:.3f} s; timestamps must increase (set --max-gap-s to reset "
                    f"the buffer at such jumps)")
            start = t0
        else:
            start = self._t_next if self._t_next is not None else 0.0
        if n == 0:
            return []
        first_sample = self.samples
        self.samples += n
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
                if self._missing.all():  # nothing measured: no prediction under any policy
                    self.skipped += 1
                    end = first_sample + i
                    if self.empty and self.empty[-1][1] >= end - self.window:
                        self.empty[-1] = (self.empty[-1][0], end)
                    else:
                        self.empty.append((end - self.window + 1, end))
                    continue
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


# ---------------------------------------------------------------------- command-line driver
@dataclass
class StreamConfig:
    """How ``wearspec stream`` runs a bundle on a stream; the command's flags, and what the demo's replay sets.

    backend: ``onnxruntime`` or ``tensorrt``. engine: a TensorRT engine file (None: ``BUNDLE/model.<precision>
    .engine``). precision: None picks the backend's default (fp32 for ONNX Runtime, fp16 for TensorRT).
    threads: ONNX Runtime intra-op threads (None: its default). smoothing, nan_policy, max_nan_fraction,
    max_gap_s: see :class:`StreamClassifier` (which checks them). hop: samples between predictions (None: the
    bundle's hop). chunk: samples per chunk read from a file (None: the hop) or stdin (None: 1). time_column:
    the CSV column of timestamps in seconds, ``'auto'`` (a header named time_s/time/timestamp/t) or None.
    header: print the ``time_s,label,probability`` header line first.
    """

    backend: str = "onnxruntime"
    engine: str | None = None
    precision: str | None = None
    threads: int | None = None
    smoothing: int = 1
    nan_policy: str = "hold"
    max_nan_fraction: float = 0.25
    max_gap_s: float | None = None
    hop: int | None = None
    chunk: int | None = None
    time_column: str | int | None = "auto"
    header: bool = True

    def validate(self) -> None:
        """Refuse impossible settings by flag name (0 is not "the default": leave a flag out for that)."""
        for key, value in (("hop", self.hop), ("chunk", self.chunk), ("threads", self.threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise WearspecError(f"stream --{key}: expected an integer ≥ 1 (leave it out for the default), "
                                    f"got {value!r}")
        if isinstance(self.smoothing, bool) or not isinstance(self.smoothing, int) or self.smoothing < 1:
            raise WearspecError(f"stream --smoothing: expected an integer ≥ 1 prediction, got {self.smoothing!r}")
        if not 0.0 <= self.max_nan_fraction <= 1.0:
            raise WearspecError(f"stream --max-nan-fraction: expected a fraction in [0, 1], got {self.max_nan_fraction}")
        if self.max_gap_s is not None and not 0 < self.max_gap_s < float("inf"):
            raise WearspecError(f"stream --max-gap-s: expected a positive number of seconds, got {self.max_gap_s}")


def run_stream(bundle_dir: str | os.PathLike, source: Any, cfg: StreamConfig | None = None, *, backend: Any = None,
               out: TextIO | None = None, err: TextIO | None = None,
               on_prediction: Callable[[Prediction], None] | None = None) -> dict:
    """Classify a stream with a bundle; print ``time_s,label,probability`` per prediction (CSV, flushed).

    source: a CSV/TSV/.npy path, ``'-'`` for stdin, or an iterable/callable of chunks (:func:`.sources.open_source`).
    cfg: the settings (default :class:`StreamConfig`). backend: an already opened backend to use instead of
    opening ``cfg.backend`` (it is not closed here). Latency statistics go to ``err`` (stderr) at the end and
    are returned.
    """
    from wearspec.deploy.runtime.backends import load_backend
    from wearspec.deploy.runtime.schema import read_bundle_spec

    cfg = cfg if cfg is not None else StreamConfig()
    cfg.validate()
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    owned = backend is None
    be = (load_backend(bundle_dir, cfg.backend, engine=cfg.engine, precision=cfg.precision, threads=cfg.threads)
          if owned else backend)
    try:
        spec = getattr(be, "spec", None) or read_bundle_spec(bundle_dir)
        clf = StreamClassifier(be, hop=spec.hop if cfg.hop is None else cfg.hop, rate=spec.rate,
                               smoothing=cfg.smoothing, nan_policy=cfg.nan_policy,
                               max_nan_fraction=cfg.max_nan_fraction, max_gap_s=cfg.max_gap_s)
        writer = csv.writer(out, lineterminator="\n")
        header = cfg.header  # written with the first prediction: an input with none writes nothing
        for pred in clf.run(open_source(source, spec, cfg.chunk, cfg.time_column)):
            if header:
                writer.writerow(["time_s", "label", "probability"])
                header = False
            writer.writerow([f"{pred.time_s:.3f}", pred.label, f"{pred.probability:.4f}"])
            out.flush()
            if on_prediction is not None:
                on_prediction(pred)
        _check_outcome(clf, source, err)
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


def _check_outcome(clf: StreamClassifier, source: Any, err: TextIO) -> None:
    """No prediction at all is an error saying why; windows with no valid value are named in a warning."""
    name = "<stdin>" if str(source) == "-" else (os.fspath(source) if isinstance(source, (str, os.PathLike))
                                                 else "stream")
    spans = ", ".join(f"{a}–{b}" for a, b in clf.empty[:5]) + (" …" if len(clf.empty) > 5 else "")
    if clf.predictions == 0:
        if clf.samples < clf.window:
            raise WearspecError(f"{name}: no complete window in the input: {clf.samples} samples read, a window is "
                                f"{clf.window} samples ({clf.window / clf.rate:g} s at {clf.rate:g} Hz)")
        if clf.empty:
            raise WearspecError(f"{name}: every value of the input is missing (NaN/Inf or blank; samples {spans}); "
                                "expected measured values")
        raise WearspecError(f"{name}: every one of the {clf.skipped} windows was skipped (more than "
                            f"max_nan_fraction={clf.max_nan_fraction:g} of its samples missing)")
    if clf.empty:
        print(f"stream: warning: {sum(b - a + 1 for a, b in clf.empty)} samples ({spans}, counted from 1) have no "
              "valid value in any channel: their windows were not classified", file=err)


__all__ = ["Prediction", "StreamClassifier", "StreamConfig", "NAN_POLICIES", "iter_chunks", "replay_csv",
           "replay_npy", "read_stdin", "run_stream"]
