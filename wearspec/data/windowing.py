"""From recordings to fixed-length windows: resampling, NaN policy, labelling.

Readers turn a dataset's native files into :class:`Recording` objects (one continuous, uniformly
sampled multi-channel signal with optional per-sample labels) or, for data that is already windowed
(UCI-HAR, numpy arrays, audio clips), :class:`WindowBatch` objects. :func:`cut_windows` applies one
:class:`WindowSpec` to either, so every reader shares the same rules:

* resampling to ``spec.rate`` with ``torchaudio.functional.resample`` (band-limited sinc);
* the NaN policy (non-finite samples, Inf included, count as missing):

  - ``error``: any missing sample is an error naming the file and the sample;
  - ``drop``: windows that contain a missing sample are dropped;
  - ``interpolate`` (default): missing samples are filled linearly from their neighbours; a window
    whose missing fraction exceeds ``max_nan_fraction`` is dropped;
  - ``zero``: like ``interpolate`` but missing samples become 0;

* window labels: ``majority`` (the most frequent label if it covers at least
  ``min_label_fraction`` of the window, else unlabelled), ``center`` (the label of the middle
  sample) or ``pure`` (all samples agree, else unlabelled). Unlabelled is ``-1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np

from wearspec.errors import WearspecError, where

NAN_POLICIES = ("error", "drop", "interpolate", "zero")
LABEL_POLICIES = ("majority", "center", "pure")
SHORT_POLICIES = ("error", "skip", "pad")
MAX_WINDOW = 2**22  # samples per window (4 M: 87 s of 48 kHz audio); longer is a wrong rate or length


@dataclass
class Recording:
    """A continuous recording at a uniform rate.

    data: (C, T) float array, may hold NaN/Inf (missing samples).
    labels: (T,) int label codes or None; -1 = unlabelled.
    start: time of sample 0 in seconds (relative to the recording's own origin).
    source: the file it came from, for error messages.
    """

    subject: str
    recording: str
    data: np.ndarray
    rate: float
    labels: np.ndarray | None = None
    start: float = 0.0
    source: str = ""
    split: str | None = None  # the dataset's own split: train | val | test


@dataclass
class WindowBatch:
    """Windows that the dataset already cut: windows (n, C, T), labels (n,) or None, starts (n,) s."""

    subject: str
    recording: str
    windows: np.ndarray
    rate: float
    labels: np.ndarray | None = None
    starts: np.ndarray | None = None
    source: str = ""
    split: str | None = None


@dataclass
class WindowSpec:
    """How to cut windows. Lengths are in seconds; sample counts follow from ``rate``."""

    rate: float = 50.0
    length_s: float = 5.0
    hop_s: float = 2.5
    nan_policy: str = "interpolate"
    max_nan_fraction: float = 0.1
    label_policy: str = "majority"
    min_label_fraction: float = 0.5
    short_policy: str = "error"
    drop_unlabelled: bool = False

    @property
    def window(self) -> int:
        return int(round(self.length_s * self.rate))

    @property
    def hop(self) -> int:
        return int(round(self.hop_s * self.rate))

    def validate(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise WearspecError(f"window.rate: expected a positive rate in Hz, got {self.rate}")
        if self.window < 2:
            raise WearspecError(
                f"window.length_s: {self.length_s} s at {self.rate} Hz is {self.window} samples; "
                "expected at least 2"
            )
        if self.window > MAX_WINDOW:
            raise WearspecError(f"window.length_s: {self.length_s} s at {self.rate:g} Hz is {self.window} samples; "
                                f"expected at most {MAX_WINDOW} (check window.rate and window.length_s)")
        if self.hop < 1:
            raise WearspecError(f"window.hop_s: {self.hop_s} s is less than one sample at {self.rate} Hz")
        for name, value, allowed in (
            ("nan_policy", self.nan_policy, NAN_POLICIES),
            ("label_policy", self.label_policy, LABEL_POLICIES),
            ("short_policy", self.short_policy, SHORT_POLICIES),
        ):
            if value not in allowed:
                raise WearspecError(f"window.{name}: expected one of {', '.join(allowed)}, got {value!r}")
        if not 0.0 <= self.max_nan_fraction <= 1.0:
            raise WearspecError(f"window.max_nan_fraction: expected 0..1, got {self.max_nan_fraction}")
        if not 0.0 < self.min_label_fraction <= 1.0:
            raise WearspecError(f"window.min_label_fraction: expected (0, 1], got {self.min_label_fraction}")


def _int_rates(orig: float, new: float) -> tuple[int, int]:
    """Two integers in the ratio orig:new (torchaudio's resampler takes integer rates)."""
    ratio = Fraction(orig).limit_denominator(1000) / Fraction(new).limit_denominator(1000)
    ratio = ratio.limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def resample(x: np.ndarray, orig_rate: float, new_rate: float) -> np.ndarray:
    """Resample (..., T) along the last axis with torchaudio's band-limited sinc resampler."""
    if abs(orig_rate - new_rate) <= 1e-9 * new_rate:
        return x
    import torch
    import torchaudio.functional as AF

    a, b = _int_rates(orig_rate, new_rate)
    if a < 1 or b < 1 or abs(a / b - orig_rate / new_rate) > 0.01 * orig_rate / new_rate:
        raise WearspecError(f"window.rate: cannot resample {orig_rate:g} Hz to {new_rate:g} Hz (the ratio is "
                            f"beyond 1000:1); choose a rate nearer the data's own")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    out = AF.resample(t, a, b)
    expected = int(math.floor(x.shape[-1] * new_rate / orig_rate + 1e-9))
    return out[..., :expected].numpy()


def _nearest_index(n_new: int, orig_rate: float, new_rate: float, n_orig: int) -> np.ndarray:
    """For each target sample, the source sample at or just before its time."""
    idx = np.floor(np.arange(n_new) * (orig_rate / new_rate) + 1e-9).astype(np.int64)
    return np.clip(idx, 0, n_orig - 1)


def _fill_missing(data: np.ndarray, missing: np.ndarray, mode: str) -> np.ndarray:
    """Fill missing samples (mask over T) per channel: linear interpolation or zeros."""
    out = np.array(data, dtype=np.float32, copy=True)
    if not missing.any():
        return out
    bad = ~np.isfinite(out)
    if mode == "zero":
        out[bad] = 0.0
        return out
    t = np.arange(out.shape[-1])
    for c in range(out.shape[0]):
        b = bad[c]
        if b.all():
            out[c] = 0.0
        elif b.any():
            out[c, b] = np.interp(t[b], t[~b], out[c, ~b])
    return out


def window_labels(labels: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """(n, W) per-sample label codes → (n,) window labels by ``spec.label_policy``."""
    n, w = labels.shape
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    if spec.label_policy == "center":
        return labels[:, w // 2].astype(np.int32)
    if spec.label_policy == "pure":
        same = (labels == labels[:, :1]).all(axis=1)
        return np.where(same, labels[:, 0], -1).astype(np.int32)
    n_codes = int(labels.max()) + 2
    shifted = labels.astype(np.int64) + 1  # -1 → 0 (unlabelled bucket)
    counts = np.zeros((n, n_codes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), w), shifted.ravel()), 1)
    counts[:, 0] = 0  # unlabelled samples never win
    best = counts.argmax(axis=1)
    frac = counts[np.arange(n), best] / w
    return np.where((best > 0) & (frac >= spec.min_label_fraction), best - 1, -1).astype(np.int32)


def _check_channels(n_channels: int, expected: int | None, source: str) -> None:
    if expected is not None and n_channels != expected:
        raise WearspecError(f"{source or '<input>'}: expected {expected} channels, got {n_channels}")


def cut_windows(
    item: Recording | WindowBatch, spec: WindowSpec, n_channels: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``spec`` to one recording or window batch.

    Returns windows (n, C, W) float32, starts (n,) float64 seconds, labels (n,) int32 (-1 = none).
    """
    if isinstance(item, WindowBatch):
        return _cut_batch(item, spec, n_channels)
    data = np.asarray(item.data)
    if data.ndim != 2:
        raise WearspecError(f"{item.source or '<input>'}: expected (channels, samples) data, got shape {data.shape}")
    _check_channels(data.shape[0], n_channels, item.source)
    missing = ~np.isfinite(data).all(axis=0)
    if spec.nan_policy == "error" and missing.any():
        first = int(np.argmax(missing))
        raise WearspecError(
            f"{where(item.source, f'sample {first}')}: NaN/Inf value but nan_policy is 'error' "
            "(use drop, interpolate or zero)"
        )
    filled = _fill_missing(data, missing, "zero" if spec.nan_policy == "zero" else "linear")
    x = resample(filled, item.rate, spec.rate)
    n_new = x.shape[-1]
    src = _nearest_index(n_new, item.rate, spec.rate, data.shape[-1])
    miss_new = missing[src]
    labels_new = (
        np.asarray(item.labels)[src].astype(np.int32)
        if item.labels is not None
        else np.full(n_new, -1, dtype=np.int32)
    )
    w, h = spec.window, spec.hop
    if n_new < w:
        if spec.short_policy == "error":
            raise WearspecError(
                f"{item.source or item.recording}: recording is {n_new / spec.rate:.2f} s long, "
                f"shorter than one window ({spec.length_s} s); set window.short_policy=skip or pad"
            )
        if spec.short_policy == "skip":
            return _empty(data.shape[0], w)
        pad = w - n_new
        x = np.pad(x, ((0, 0), (0, pad)))
        miss_new = np.pad(miss_new, (0, pad))
        fill = labels_new[-1] if item.labels is not None and n_new > 0 else -1
        labels_new = np.pad(labels_new, (0, pad), constant_values=fill)
        n_new = w
    return windows_at(x, miss_new, labels_new, spec, range(1 + (n_new - w) // h), 0, item.start)


def windows_at(x: np.ndarray, missing: np.ndarray, labels: np.ndarray, spec: WindowSpec, ks: range, first: int,
               start: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows number ``ks`` (window k starts at target sample k·hop) of a signal already at ``spec.rate``.

    ``x`` (C, n) filled samples, ``missing`` (n,) and ``labels`` (n,) per sample, hold target samples
    ``first .. first + n`` (a whole recording, or a stretch of it when it arrives in chunks). Applies
    the missing-fraction and label rules; returns windows (m, C, W) float32, starts (m,) s, labels (m,)
    of the windows kept.
    """
    w = spec.window
    starts_idx = np.arange(ks.start, ks.stop, dtype=np.int64) * spec.hop
    local = starts_idx - first
    counts = np.concatenate([[0], np.cumsum(missing, dtype=np.int64)])
    frac = (counts[local + w] - counts[local]) / w  # missing fraction of each window
    keep = (frac == 0) if spec.nan_policy == "drop" else (frac <= spec.max_nan_fraction)
    if labels.size and labels.max() >= 0:
        wlabels = window_labels(labels[local[:, None] + np.arange(w)[None, :]], spec)
    else:
        wlabels = np.full(local.shape[0], -1, np.int32)
    if spec.drop_unlabelled:
        keep &= wlabels >= 0
    starts = start + starts_idx / spec.rate
    view = np.lib.stride_tricks.sliding_window_view(np.asarray(x, dtype=np.float32), w, axis=1)  # (C, T-w+1, W)
    return (
        np.ascontiguousarray(view.transpose(1, 0, 2)[local[keep]]),  # (n, C, W), one copy
        starts[keep].astype(np.float64),
        wlabels[keep],
    )


def _empty(c: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, c, w), np.float32), np.zeros(0, np.float64), np.zeros(0, np.int32)


def _cut_batch(item: WindowBatch, spec: WindowSpec, n_channels: int | None):
    win = np.asarray(item.windows)
    if win.ndim != 3:
        raise WearspecError(f"{item.source or '<input>'}: expected windows of shape (n, channels, samples), got {win.shape}")
    _check_channels(win.shape[1], n_channels, item.source)
    n = win.shape[0]
    bad = ~np.isfinite(win)
    if spec.nan_policy == "error" and bad.any():
        first = int(np.argmax(bad.any(axis=(1, 2))))
        raise WearspecError(
            f"{where(item.source, f'window {first}')}: NaN/Inf value but nan_policy is 'error' "
            "(use drop, interpolate or zero)"
        )
    frac = bad.any(axis=1).mean(axis=1) if n else np.zeros(0)
    keep = (frac == 0) if spec.nan_policy == "drop" else (frac <= spec.max_nan_fraction)
    mode = "zero" if spec.nan_policy == "zero" else "linear"
    filled = np.stack([_fill_missing(w, ~np.isfinite(w).all(axis=0), mode) for w in win]) if bad.any() else win
    x = resample(filled.astype(np.float32), item.rate, spec.rate)
    target = spec.window
    if x.shape[-1] < target:
        if spec.short_policy == "error":
            raise WearspecError(
                f"{item.source or item.recording}: windows are {x.shape[-1] / spec.rate:.3f} s long, "
                f"shorter than window.length_s={spec.length_s}; set window.short_policy=pad or skip"
            )
        if spec.short_policy == "skip":
            return _empty(win.shape[1], target)
        x = np.pad(x, ((0, 0), (0, 0), (0, target - x.shape[-1])))
    elif x.shape[-1] > target:
        x = x[..., :target]
    labels = (
        np.asarray(item.labels, dtype=np.int32) if item.labels is not None else np.full(n, -1, np.int32)
    )
    if spec.drop_unlabelled:
        keep &= labels >= 0
    starts = (
        np.asarray(item.starts, dtype=np.float64)
        if item.starts is not None
        else np.arange(n, dtype=np.float64) * (win.shape[-1] / item.rate)
    )
    return np.ascontiguousarray(x[keep], dtype=np.float32), starts[keep], labels[keep]


def uniform_from_timestamps(
    t: np.ndarray,
    rate: float | None,
    source: str,
    *,
    max_gap_s: float = 1.0,
    rate_tolerance: float = 0.05,
    max_irregular_fraction: float = 0.05,
    first_row: int = 0,
) -> Iterator[tuple[int, int, float]]:
    """Check timestamps (seconds) and split at gaps.

    Yields (begin, end, rate) sample ranges of continuous segments. Errors, each naming ``source``:
    timestamps that go backwards; a declared ``rate`` that the timestamps contradict (median
    interval off by more than ``rate_tolerance``); too many irregular intervals. Row numbers in
    messages are ``first_row`` + the index into ``t`` (pass the file line of ``t[0]``).
    """
    t = np.asarray(t, dtype=np.float64)
    if t.size < 2:
        if rate is None:
            raise WearspecError(f"{source}: {t.size} timestamp(s) cannot give a sampling rate; declare the rate")
        yield 0, t.size, float(rate)
        return
    dt = np.diff(t)
    if (dt <= 0).any():
        i = int(np.argmax(dt <= 0)) + 1
        raise WearspecError(
            f"{where(source, f'row {first_row + i}')}: timestamps must increase (got {t[i - 1]} then {t[i]})"
        )
    gaps = dt > max_gap_s
    inner = dt[~gaps]
    if inner.size == 0:
        raise WearspecError(f"{source}: every interval between samples is a gap (> {max_gap_s} s)")
    median = float(np.median(inner))
    measured = 1.0 / median
    if rate is not None and abs(measured - rate) > rate_tolerance * rate:
        raise WearspecError(
            f"{source}: inconsistent sampling rate: timestamps imply {measured:.3g} Hz but the "
            f"declared rate is {rate:g} Hz"
        )
    irregular = np.abs(inner - median) > 0.5 * median
    if irregular.mean() > max_irregular_fraction:
        raise WearspecError(
            f"{source}: inconsistent sampling rate: {irregular.mean():.0%} of intervals differ from "
            f"the median {median * 1e3:.3g} ms by more than half"
        )
    cuts = np.flatnonzero(gaps) + 1
    bounds = np.concatenate([[0], cuts, [t.size]])
    for a, b in zip(bounds[:-1], bounds[1:]):
        yield int(a), int(b), float(rate if rate is not None else measured)
