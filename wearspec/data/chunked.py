"""Windows of a recording that arrives in chunks, equal to cutting the whole recording at once.

A week-long recording does not fit in memory as one array, so readers of long files deliver it as a
:class:`RecordingStream`: a header plus an iterator of ``(data (C, n), labels (n,) or None)`` chunks.
:func:`cut_stream` keeps only a bounded buffer and yields the same windows as
:func:`~wearspec.data.windowing.cut_windows` on the concatenated recording:

* at the native rate, the samples not yet in a finished target sample; at the target rate, the samples
  since the next window's start — so windows straddling chunk edges are cut from the same samples;
* missing samples are filled linearly between finite neighbours: a buffer always begins at a sample
  where every channel is finite (or at the recording's start) and only samples before the last such
  sample are final, so a NaN run across a chunk edge is filled as in one piece;
* resampling (torchaudio's sinc, rates ``a:b`` in lowest terms) works on whole blocks of ``a`` input
  samples with a margin wider than the kernel on both sides; an output block depends only on its
  inputs within the kernel, so every output equals the whole-recording one (to float rounding of the
  convolution, ~1e-7).

Memory is O(chunk + window + kernel) per recording, whatever its length (a channel that is missing
throughout keeps the buffer growing, since no sample is final before its end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from wearspec.data.windowing import WindowSpec, _fill_missing, _int_rates, windows_at
from wearspec.errors import WearspecError, where

Windows = tuple[np.ndarray, np.ndarray, np.ndarray]  # windows (n, C, W), starts (n,) s, labels (n,)


@dataclass
class RecordingStream:
    """A continuous recording at a uniform rate, delivered as chunks of (C, n) samples with optional
    (n,) label codes (-1 = unlabelled). ``rename`` = (old, new): a recording already written under
    ``old`` is renamed ``new`` before this one is written (the first part of a recording that turned
    out to be split at a gap becomes ``name#0``)."""

    subject: str
    recording: str
    rate: float
    chunks: Iterable[tuple[np.ndarray, np.ndarray | None]]
    start: float = 0.0
    source: str = ""
    split: str | None = None
    rename: tuple[str, str] | None = None


class _Resampler:
    """Integer-ratio sinc resampling of a stretch of a longer signal (see the module docstring)."""

    def __init__(self, orig_rate: float, new_rate: float):
        self.same = abs(orig_rate - new_rate) <= 1e-9 * new_rate
        self.ratio = orig_rate / new_rate
        a, b = _int_rates(orig_rate, new_rate)
        g = math.gcd(a, b)
        self.a, self.b = a // g, b // g
        width = math.ceil(6 * self.a / (min(self.a, self.b) * 0.99))  # torchaudio's kernel half-width
        self.margin = self.a * (math.ceil(width / self.a) + 2)  # input samples, whole blocks

    def ready(self, safe_end: int) -> int:
        """Target samples computable from inputs before ``safe_end`` (whole blocks only)."""
        if self.same:
            return safe_end
        return max(0, (safe_end - self.margin) // self.a) * self.b

    def first_input(self, target: int) -> int:
        """The first input sample that target samples ``target ..`` depend on."""
        return target if self.same else max(0, (target // self.b) * self.a - self.margin)

    def run(self, x: np.ndarray, x0: int, t0: int, t1: int) -> np.ndarray:
        """Target samples ``t0 .. t1`` from inputs ``x`` (C, m) that start at input sample ``x0``."""
        if self.same:
            return x[:, t0 - x0 : t1 - x0]
        import torch
        import torchaudio.functional as AF

        lo = max(0, (t0 // self.b) * self.a - self.margin)  # block-aligned: same conv windows as in one piece
        y = AF.resample(torch.from_numpy(np.ascontiguousarray(x[:, lo - x0 :])), self.a, self.b).numpy()
        first = (lo // self.a) * self.b
        return y[:, t0 - first : t1 - first]


class _Windower:
    """The buffers and bookkeeping of :func:`cut_stream` (one recording)."""

    def __init__(self, item: RecordingStream, spec: WindowSpec, n_channels: int | None):
        self.item, self.spec, self.n_channels = item, spec, n_channels
        self.rs = _Resampler(item.rate, spec.rate)
        self.x: np.ndarray | None = None  # native samples off .. off + m, (C, m)
        self.lab = np.zeros(0, np.int32)
        self.off = 0
        self.total = 0  # native samples received
        self.anchor = -1  # the last native sample where every channel is finite
        self.tx = self.tmiss = self.tlab = None  # target samples toff .. done
        self.toff = self.done = self.next_k = 0
        self.emitted = 0

    def push(self, data: np.ndarray, labels: np.ndarray | None) -> None:
        data = np.asarray(data, dtype=np.float32)
        if data.ndim != 2 or (self.n_channels is not None and data.shape[0] != self.n_channels):
            raise WearspecError(f"{self.item.source or '<input>'}: expected ({self.n_channels}, n) chunks, "
                                f"got shape {data.shape}")
        finite = np.isfinite(data).all(axis=0)
        if self.spec.nan_policy == "error" and not finite.all():
            raise WearspecError(
                f"{where(self.item.source, f'sample {self.total + int(np.argmin(finite))}')}: NaN/Inf value but "
                "nan_policy is 'error' (use drop, interpolate or zero)"
            )
        n = data.shape[1]
        lab = np.full(n, -1, np.int32) if labels is None else np.asarray(labels, dtype=np.int32)
        self.x = data if self.x is None else np.concatenate([self.x, data], axis=1)
        self.lab = np.concatenate([self.lab, lab])
        if finite.any():
            self.anchor = self.total + int(np.flatnonzero(finite)[-1])
        self.total += n

    def advance(self, final: bool) -> Iterator[Windows]:
        """Compute the target samples that are final now and cut every window they complete."""
        spec = self.spec
        if final:
            safe = self.total
            end = int(math.floor(self.total * spec.rate / self.item.rate + 1e-9))
        else:
            safe = self.total if spec.nan_policy == "zero" else self.anchor + 1
            end = self.rs.ready(safe)
        if end > self.done:
            self._extend(safe, end)
        w, h = spec.window, spec.hop
        k_end = (self.done - w) // h + 1 if self.done >= w else 0
        if k_end > self.next_k:
            out = windows_at(self.tx, self.tmiss, self.tlab, spec, range(self.next_k, k_end), self.toff,
                             self.item.start)
            self.emitted += k_end - self.next_k
            self.next_k = k_end
            yield out
        self._trim()

    def _extend(self, safe: int, end: int) -> None:
        """Target samples ``done .. end`` from the native buffer (filled up to ``safe``)."""
        mode = "zero" if self.spec.nan_policy == "zero" else "linear"
        part = self.x[:, : safe - self.off]
        missing = ~np.isfinite(self.x).all(axis=0)
        filled = _fill_missing(part, missing[: part.shape[1]], mode)
        new = self.rs.run(filled, self.off, self.done, end)
        idx = np.floor(np.arange(self.done, end, dtype=np.int64) * (self.item.rate / self.spec.rate) + 1e-9)
        src = np.clip(idx.astype(np.int64), 0, self.total - 1) - self.off  # as _nearest_index, for done .. end
        parts = [(self.tx, new), (self.tmiss, missing[src]), (self.tlab, self.lab[src])]
        if self.tx is None:
            self.tx, self.tmiss, self.tlab = (np.ascontiguousarray(b) for _, b in parts)
        else:
            self.tx, self.tmiss, self.tlab = (np.concatenate([a, b], axis=-1) for a, b in parts)
        self.done = end

    def _trim(self) -> None:
        keep_t = self.next_k * self.spec.hop
        if self.tx is not None and keep_t > self.toff:
            cut = min(keep_t, self.done) - self.toff
            self.tx, self.tmiss, self.tlab = self.tx[:, cut:], self.tmiss[cut:], self.tlab[cut:]
            self.toff += cut
        src_need = int(math.floor(self.done * self.item.rate / self.spec.rate + 1e-9))
        keep = min(self.rs.first_input(self.done), src_need, self.total) - self.off
        if self.x is None or keep <= 0:
            return
        if self.spec.nan_policy != "zero":  # start at a sample where every channel is finite
            finite = np.flatnonzero(np.isfinite(self.x[:, : keep + 1]).all(axis=0))
            keep = int(finite[-1]) if finite.size else 0
        if keep > 0:
            self.x, self.lab = self.x[:, keep:], self.lab[keep:]
            self.off += keep

    def short(self) -> Iterator[Windows]:
        """A recording shorter than one window: ``spec.short_policy`` as in ``cut_windows``."""
        spec, n_new = self.spec, self.done
        if spec.short_policy == "error":
            raise WearspecError(
                f"{self.item.source or self.item.recording}: recording is {n_new / spec.rate:.2f} s long, "
                f"shorter than one window ({spec.length_s} s); set window.short_policy=skip or pad"
            )
        if spec.short_policy == "pad":
            if self.tx is None:
                self.tx, self.tmiss, self.tlab = np.zeros((self.x.shape[0], 0), np.float32), np.zeros(0, bool), \
                    np.zeros(0, np.int32)
            pad = spec.window - n_new
            fill = int(self.tlab[-1]) if n_new > 0 else -1
            x = np.pad(self.tx, ((0, 0), (0, pad)))
            miss = np.pad(self.tmiss, (0, pad))
            lab = np.pad(self.tlab, (0, pad), constant_values=fill)
            yield windows_at(x, miss, lab, spec, range(1), 0, self.item.start)


def cut_stream(item: RecordingStream, spec: WindowSpec, n_channels: int | None = None) -> Iterator[Windows]:
    """Windows of a chunked recording, chunk by chunk: the same windows, starts and labels as
    :func:`~wearspec.data.windowing.cut_windows` on the whole recording."""
    win = _Windower(item, spec, n_channels)
    for data, labels in item.chunks:
        win.push(data, labels)
        yield from win.advance(final=False)
    if win.total == 0:
        raise WearspecError(f"{item.source or item.recording}: recording has no samples")
    yield from win.advance(final=True)
    if win.done < spec.window:
        yield from win.short()
