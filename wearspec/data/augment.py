"""Batched, seeded augmentations for raw sensor windows (B, C, T) and spectrograms (B, C, F, N).

Each is a parameter-free :class:`torch.nn.Module` that transforms the whole batch on its device, with
no Python loop over samples: ``y = RandomRotation3D(triads, p=0.5)(x, make_generator(seed, x.device))``.

* ``aug(x, generator=None) -> Tensor`` (same shape and dtype): every random number is drawn on
  ``x.device`` from ``generator`` (torch's default when None): one seed, one result. ``x`` is never
  modified; p == 0 returns it. Each sample is selected with probability ``p`` (the first draw of a
  call); samples not selected come back bit-exactly unchanged, selected ones are always changed.
* ``aug.sample(x, generator) -> dict`` draws the parameters (``"selected"``: (B,) bool, and those listed
  per class); ``aug.apply(x, params)`` applies them. :class:`Compose` chains steps with one generator;
  :func:`build_sensor_augment` / :func:`build_spec_augment` build the pipelines from :class:`AugmentConfig`.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wearspec.errors import WearspecError

Generator = torch.Generator | None


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


_AXIS_NAME = re.compile(r"^(?P<stem>.*?)[_\-.\s:/]?(?P<axis>[xyzwXYZW])$")


def triads_from_channels(names: Sequence[str]) -> list[tuple[int, int, int]]:
    """Find 3-axis sensors in channel names: ``[(i_x, i_y, i_z), ...]`` sorted by position.

    A triad is three channels whose names differ only in a final x/y/z (any case, after an optional
    ``_ - . : /`` or space): ``acc_x, acc_y, acc_z``; ``ax, ay, az``; ``accX``; ``hand_gyro_x``;
    ``Accelerometer X``. A stem that also has a ``w`` channel (a quaternion ``q_w, q_x, ...``) or has an
    axis twice is not a triad. Other channels belong to no triad.
    """
    stems: dict[str, dict[str, list[int]]] = {}
    for i, name in enumerate(names):
        if m := _AXIS_NAME.match(str(name).strip()):
            stems.setdefault(m["stem"].casefold(), {}).setdefault(m["axis"].lower(), []).append(i)
    return sorted((a["x"][0], a["y"][0], a["z"][0]) for a in stems.values()
                  if "w" not in a and all(len(a.get(k, ())) == 1 for k in "xyz"))


def random_rotation_matrices(n: int, generator: Generator = None, device: torch.device | str = "cpu",
                             max_angle: float = 180.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """(n, 3, 3) random rotations, uniform (Haar) on SO(3) restricted to angles ≤ ``max_angle`` degrees.

    The axis is uniform on the sphere; the angle θ has the Haar density (1 − cos θ)/π on [0, max_angle],
    drawn by inverting its CDF (θ − sin θ)/π with a vectorised bisection; then Rodrigues' formula.
    ``max_angle=180``: uniform on SO(3). Computed in float64, returned in ``dtype``.
    """
    kw = dict(generator=generator, device=torch.device(device), dtype=torch.float64)
    axis = F.normalize(torch.randn(n, 3, **kw), dim=1)
    th_max = math.radians(min(max(float(max_angle), 0.0), 180.0))
    target = torch.rand(n, **kw) * (th_max - math.sin(th_max))
    lo, hi = torch.zeros_like(target), torch.full_like(target, th_max)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = (mid - torch.sin(mid)) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    theta = (0.5 * (lo + hi))[:, None, None]
    ax, ay, az = axis.unbind(1)
    zero = torch.zeros_like(ax)
    k = torch.stack([zero, -az, ay, az, zero, -ax, -ay, ax, zero], dim=1).view(n, 3, 3)
    eye = torch.eye(3, dtype=torch.float64, device=axis.device)
    return (eye + torch.sin(theta) * k + (1 - torch.cos(theta)) * (k @ k)).to(dtype)


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    """(B, C') → (B, C', 1, ..., 1) broadcastable against x (B, C, ...)."""
    return v.view(*v.shape, *([1] * (x.ndim - 2)))


class Augment(nn.Module):
    """Base class. Subclasses implement ``_params(x, selected, generator) -> dict`` and
    ``_apply(x, params) -> Tensor``; :meth:`apply` keeps the samples that are not selected."""
    min_ndim = 2

    def __init__(self, p: float = 0.5):
        super().__init__()
        self._require(0.0 <= float(p) <= 1.0, f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def _require(self, ok: bool, message: str) -> None:
        if not ok:
            raise WearspecError(f"{type(self).__name__}: {message}")

    def _check(self, x: Tensor, generator: Generator) -> None:
        ok = isinstance(x, Tensor) and x.ndim >= self.min_ndim and x.is_floating_point()
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        self._require(ok, f"expected a floating tensor with ≥ {self.min_ndim} dims, got {got}")
        if generator is not None:
            gd, xd = torch.device(generator.device), x.device
            self._require(gd.type == xd.type and (None in (gd.index, xd.index) or gd.index == xd.index),
                          f"generator on {gd} but the batch on {xd}; use make_generator(seed, x.device)")

    def forward(self, x: Tensor, generator: Generator = None) -> Tensor:
        self._check(x, generator)
        if self.p == 0.0 or x.shape[0] == 0:
            return x
        return self.apply(x, self.sample(x, generator))

    def sample(self, x: Tensor, generator: Generator = None) -> dict:
        """Draw this call's parameters: selection first, then the class's own (see its docstring)."""
        selected = torch.rand(x.shape[0], generator=generator, device=x.device) < self.p
        return {"selected": selected, **self._params(x, selected, generator)}

    def apply(self, x: Tensor, params: dict) -> Tensor:
        return torch.where(_per_channel(params["selected"][:, None], x), self._apply(x, params), x)


# -- Sensor level: (B, C, T) ----------------------------------------------------------------------
class RandomRotation3D(Augment):
    """Random 3-D rotation of the sensor frame. Input (B, C, T) (or (B, C, ...)); output same shape.

    triads: channel-index triples (x, y, z), e.g. ``[(0, 1, 2), (3, 4, 5)]`` or
        ``triads_from_channels(names)``. All triads of a sample (accelerometer, gyroscope, ...) get the
        sample's one rotation, so vector norms and the relations between sensors are kept; channels
        outside the triads are untouched. A uniform rotation includes every axis swap.
    max_angle: largest rotation angle in degrees (180: uniform on SO(3)).
    Params: {"matrices": (B, 3, 3) float64, identity where not selected}.
    """
    def __init__(self, triads: Sequence[Sequence[int]], p: float = 0.5, max_angle: float = 180.0):
        super().__init__(p)
        self.triads, self.max_angle = [tuple(int(i) for i in t) for t in triads], float(max_angle)
        flat = [i for t in self.triads for i in t]
        self._require(bool(flat) and all(len(t) == 3 for t in self.triads) and len(set(flat)) == len(flat)
                      and 0.0 < self.max_angle <= 180.0, f"need disjoint index triples and max_angle in "
                      f"(0, 180], got {triads!r}, {max_angle}")

    def _params(self, x: Tensor, selected: Tensor, generator: Generator) -> dict:
        self._require(max(max(t) for t in self.triads) < x.shape[1], f"triads {self.triads} need more than "
                      f"{x.shape[1]} channels")
        mats = random_rotation_matrices(x.shape[0], generator, x.device, self.max_angle, dtype=torch.float64)
        eye = torch.eye(3, device=x.device, dtype=mats.dtype)
        return {"matrices": torch.where(selected[:, None, None], mats, eye)}

    def _apply(self, x: Tensor, params: dict) -> Tensor:
        mats, out = params["matrices"].to(x.dtype), x.clone()
        for triad in self.triads:
            out[:, list(triad)] = torch.einsum("bij,bj...->bi...", mats, x[:, list(triad)])
        return out


class RandomScaling(Augment):
    """Multiply by a random factor. Input (B, C, ...); output same shape.

    lognormal: factor = exp(sigma·N(0, 1)); uniform: factor ~ U(1 − sigma, 1 + sigma).
    per_channel: one factor per (sample, channel), else one per sample. Params: {"factor": (B, C or 1)}.
    """
    def __init__(self, p: float = 0.5, sigma: float = 0.1, per_channel: bool = False, distribution: str = "lognormal"):
        super().__init__(p)
        self._require(distribution in ("lognormal", "uniform") and sigma >= 0 and (distribution == "lognormal"
                      or sigma < 1), f"need lognormal|uniform, sigma ≥ 0 (< 1 if uniform): {distribution}, {sigma}")
        self.sigma, self.per_channel, self.distribution = float(sigma), bool(per_channel), distribution

    def _params(self, x: Tensor, selected: Tensor, generator: Generator) -> dict:
        shape, kw = (x.shape[0], x.shape[1] if self.per_channel else 1), dict(generator=generator, device=x.device)
        lognormal = self.distribution == "lognormal"
        return {"factor": (self.sigma * torch.randn(shape, **kw)).exp() if lognormal
                else 1 + self.sigma * (2 * torch.rand(shape, **kw) - 1)}

    def _apply(self, x: Tensor, params: dict) -> Tensor:
        return x * _per_channel(params["factor"].to(x.dtype), x)


class Jitter(Augment):
    """Add Gaussian noise sigma·N(0, 1) (sigma in the data's units), i.i.d. per element. Input (B, ...);
    output same shape. Params: {"noise": like x}."""
    def __init__(self, p: float = 0.5, sigma: float = 0.01):
        super().__init__(p)
        self._require(sigma >= 0, f"sigma must be ≥ 0, got {sigma}")
        self.sigma = float(sigma)

    def _params(self, x: Tensor, selected: Tensor, generator: Generator) -> dict:
        return {"noise": torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * self.sigma}

    def _apply(self, x: Tensor, params: dict) -> Tensor:
        return x + params["noise"]


class GaussianNoise(Jitter):
    """:class:`Jitter` with the DeSepTr spectrogram default sigma = 1e-3. Input (B, C, F, N) or any (B, ...)."""
    def __init__(self, p: float = 0.5, sigma: float = 1e-3):
        super().__init__(p, sigma)


class TimeWarp(Augment):
    """Smooth random monotone time distortion along axis ``dim``: T of (B, C, T), N (or F with dim=-2) of
    (B, C, F, N); output same shape. The local speed is exp(strength·N(0, 1)) at ``n_knots`` evenly
    spaced knots, linear in between; its cumulative sum, rescaled to [0, T − 1], is the warp path τ
    (strictly increasing, τ(0) = 0, τ(T − 1) = T − 1), and ``out[..., t] = x[..., τ(t)]`` by linear
    interpolation (a batched gather). strength 0: identity. Params: {"path": (B, T) float32}.
    """
    def __init__(self, p: float = 0.5, strength: float = 0.2, n_knots: int = 4, dim: int = -1):
        super().__init__(p)
        self._require(strength >= 0 and n_knots >= 2 and dim < 0, f"need strength ≥ 0, n_knots ≥ 2 and dim < 0: "
                      f"{strength}, {n_knots}, {dim}")
        self.strength, self.n_knots, self.dim, self.min_ndim = float(strength), int(n_knots), int(dim), 1 - dim

    def _params(self, x: Tensor, selected: Tensor, generator: Generator) -> dict:
        b, t = x.shape[0], x.shape[self.dim]
        log_speed = self.strength * torch.randn(b, 1, self.n_knots, generator=generator, device=x.device)
        speed = F.interpolate(log_speed.exp(), size=t, mode="linear", align_corners=True)[:, 0]
        speed = torch.where(selected[:, None], speed, 1.0)
        cum = speed.cumsum(dim=1) - speed[:, :1]
        path = cum * ((t - 1) / cum[:, -1:].clamp_min(1e-12))  # exact integers when the speed is constant
        path[:, -1] = t - 1
        return {"path": path}

    def _apply(self, x: Tensor, params: dict) -> Tensor:
        xt = x.movedim(self.dim, -1)
        b, t, path = xt.shape[0], xt.shape[-1], params["path"]
        flat = xt.reshape(b, -1, t)
        i0 = path.floor().long().clamp(0, max(t - 2, 0))
        w = (path - i0).clamp(0, 1).to(x.dtype)[:, None, :]
        g0 = flat.gather(2, i0[:, None, :].expand_as(flat))
        g1 = flat.gather(2, (i0 + 1).clamp(max=t - 1)[:, None, :].expand_as(flat))
        return (g0 * (1 - w) + g1 * w).reshape(xt.shape).movedim(-1, self.dim)


class ChannelDropout(Augment):
    """Zero whole channels, or groups of channels (e.g. a sensor's triad). Input (B, C, ...).

    In a selected sample each group is dropped with probability ``drop_prob``, but at least one group is
    dropped and at least one kept (no-op with a single group). groups: channel-index lists dropped
    together; channels in no group are groups of one. Params: {"drop": (B, C) bool}.
    """
    def __init__(self, p: float = 0.5, drop_prob: float = 0.2, groups: Sequence[Sequence[int]] | None = None):
        super().__init__(p)
        self._require(0.0 <= drop_prob <= 1.0, f"drop_prob must be in [0, 1], got {drop_prob}")
        self.drop_prob, self.groups = float(drop_prob), [[int(i) for i in g] for g in groups or [] if len(g)]

    def _params(self, x: Tensor, selected: Tensor, generator: Generator) -> dict:
        c, grouped = x.shape[1], [i for g in self.groups for i in g]
        self._require(len(set(grouped)) == len(grouped) and all(0 <= i < c for i in grouped),
                      f"groups {self.groups} overlap or exceed {c} channels")
        groups = self.groups + [[i] for i in range(c) if i not in set(grouped)]
        member = torch.zeros(len(groups), c, device=x.device)
        for k, g in enumerate(groups):
            member[k, g] = 1.0
        (b, n), kw = (x.shape[0], len(groups)), dict(generator=generator, device=x.device)
        drop = torch.rand(b, n, **kw) < self.drop_prob
        force = F.one_hot(torch.randint(0, n, (b,), **kw), n).bool()  # drop one if none dropped
        drop = drop | (force & ~drop.any(1, keepdim=True))
        keep = F.one_hot(torch.randint(0, n, (b,), **kw), n).bool()  # keep one if all dropped
        drop = drop & ~(keep & drop.all(1, keepdim=True)) & selected[:, None] & (n > 1)
        return {"drop": (drop.float() @ member) > 0}

    def _apply(self, x: Tensor, params: dict) -> Tensor:
        return x.masked_fill(_per_channel(params["drop"], x), 0.0)


# -- Spectrogram level: (B, C, F, N) --------------------------------------------------------------
def _band_mask(b: int, length: int, n: int, min_w: int, max_w: int, generator: Generator, device) -> Tensor:
    """(B, L) bool: union of n bands per row, widths uniform in [min_w, max_w] (≤ L), starts uniform."""
    if n == 0 or length == 0:
        return torch.zeros(b, length, dtype=torch.bool, device=device)
    max_w = min(max_w, length)
    width = torch.randint(min(min_w, max_w), max_w + 1, (b, n), generator=generator, device=device)
    start = (torch.rand(b, n, generator=generator, device=device) * (length - width + 1)).long()
    start = torch.minimum(start, length - width)
    pos = torch.arange(length, device=device)
    return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(dim=1)


class TimeMasking(Augment):
    """SpecAugment time masks. Input (B, C, F, N) or any (B, ..., N); output same shape.

    ``n_masks`` bands of frames per selected sample (they may overlap), each of width uniform in
    [min_width, max_width] (capped at N), in all channels and frequencies, set to 0 (``value="zero"``)
    or to the (sample, channel) mean (``"mean"``). Params: {"mask": (B, N) bool}.
    """
    dim = -1

    def __init__(self, p: float = 0.5, n_masks: int = 2, max_width: int = 4, min_width: int = 1, value: str = "zero"):
        super().__init__(p)
        self._require(n_masks >= 1 and 1 <= min_width <= max_width and value in ("zero", "mean"),
                      f"need n_masks ≥ 1, 1 ≤ min_width ≤ max_width, value zero|mean: {n_masks}, {min_width}, "
                      f"{max_width}, {value}")
        self.n_masks, self.max_width, self.min_width, self.value = int(n_masks), int(max_width), int(min_width), value

    def _params(self, x: Tensor, selected: Tensor, generator: Generator) -> dict:
        mask = _band_mask(x.shape[0], x.shape[self.dim], self.n_masks, self.min_width, self.max_width,
                          generator, x.device)
        return {"mask": mask & selected[:, None]}

    def _apply(self, x: Tensor, params: dict) -> Tensor:
        fill = _per_channel(x.flatten(2).mean(2), x) if self.value == "mean" else 0.0
        return torch.where(_per_channel(params["mask"], x).movedim(1, self.dim), fill, x)


class FrequencyMasking(TimeMasking):
    """SpecAugment frequency masks along F of (B, C, F, N); as :class:`TimeMasking`, mask (B, F)."""
    dim, min_ndim = -2, 3


class TimeRoll(Augment):
    """Circular shift along the last axis: ``out[b] = torch.roll(x[b], shift[b], dims=-1)``.

    Input (B, C, F, N) or any (B, ..., N). A selected sample's shift is uniform in ±1..max_shift
    (None: N − 1, so every non-zero circular shift is equally likely).
    Params: {"shift": (B,) long, 0 where not selected}.
    """
    def __init__(self, p: float = 0.5, max_shift: int | None = None):
        super().__init__(p)
        self._require(max_shift is None or max_shift >= 1, f"max_shift must be ≥ 1 or None, got {max_shift}")
        self.max_shift = max_shift

    def _params(self, x: Tensor, selected: Tensor, generator: Generator) -> dict:
        n, b, kw = x.shape[-1], x.shape[0], dict(generator=generator, device=x.device)
        m = max(n - 1 if self.max_shift is None else min(self.max_shift, n - 1), 1)  # n == 1: any shift is 0
        shift = torch.randint(1, m + 1, (b,), **kw) * (2 * torch.randint(0, 2, (b,), **kw) - 1)
        return {"shift": torch.where(selected, shift, 0)}

    def _apply(self, x: Tensor, params: dict) -> Tensor:
        b, n = x.shape[0], x.shape[-1]
        flat = x.reshape(b, -1, n)
        idx = (torch.arange(n, device=x.device) - params["shift"][:, None]) % n
        return flat.gather(2, idx[:, None, :].expand_as(flat)).reshape(x.shape)


class CutMixResult(NamedTuple):
    """x: mixed (B, C, F, N); lam: (B,) fraction of (F, N) bins taken from the partner; labels: the mixed
    (B, K) labels (1 − lam)·y + lam·y[partner], or None; partner: (B,) long."""
    x: Tensor
    lam: Tensor
    labels: Tensor | None
    partner: Tensor


class CutMix(Augment):
    """DeSepTr cut-mix between samples. Input (B, C, F, N); output same shape.

    Each sample's partner comes from a random cyclic permutation of the batch (never itself when B > 1).
    In a selected sample ``n_time`` time bands (widths 1..time_width frames, all frequencies) and ``n_freq``
    frequency bands (widths 1..freq_width bins, all frames) are replaced by the partner's content, in every
    channel. ``mix(x, generator, labels)`` also returns λ (the replaced fraction) and the mixed (B, K) soft
    labels; ``forward`` returns only x. Params: {"partner": (B,), "mask": (B, F, N) bool, "lam": (B,)}.
    """
    min_ndim = 3

    def __init__(self, p: float = 0.5, n_time: int = 4, n_freq: int = 4, time_width: int = 3, freq_width: int = 3):
        super().__init__(p)
        self._require(min(n_time, n_freq) >= 0 and n_time + n_freq >= 1 and min(time_width, freq_width) >= 1,
                      f"need bands ≥ 0 (one > 0), widths ≥ 1: {n_time}, {n_freq}, {time_width}, {freq_width}")
        self.n_time, self.n_freq = int(n_time), int(n_freq)
        self.time_width, self.freq_width = int(time_width), int(freq_width)

    def _params(self, x: Tensor, selected: Tensor, generator: Generator) -> dict:
        b, f, n = x.shape[0], x.shape[-2], x.shape[-1]
        order = torch.randperm(b, generator=generator, device=x.device)
        partner = torch.empty_like(order)
        partner[order] = order.roll(-1)
        t_mask = _band_mask(b, n, self.n_time, 1, self.time_width, generator, x.device)
        f_mask = _band_mask(b, f, self.n_freq, 1, self.freq_width, generator, x.device)
        mask = (t_mask[:, None, :] | f_mask[:, :, None]) & selected[:, None, None]
        return {"partner": partner, "mask": mask, "lam": mask.float().mean(dim=(1, 2))}

    def _apply(self, x: Tensor, params: dict) -> Tensor:
        mask = params["mask"].view(x.shape[0], *([1] * (x.ndim - 3)), *params["mask"].shape[1:])
        return torch.where(mask, x[params["partner"]], x)

    def mix(self, x: Tensor, generator: Generator = None, labels: Tensor | None = None) -> CutMixResult:
        """Mix x (B, C, F, N) and, when given, one-hot/soft labels (B, K)."""
        self._check(x, generator)
        b = x.shape[0]
        self._require(labels is None or (labels.ndim == 2 and labels.shape[0] == b and labels.is_floating_point()),
                      f"labels must be one-hot/soft floats (B={b}, K), not {getattr(labels, 'shape', None)}")
        if self.p == 0.0 or b == 0:
            return CutMixResult(x, x.new_zeros(b), labels, torch.arange(b, device=x.device))
        params = self.sample(x, generator)
        if labels is not None:
            lam = params["lam"].to(labels.dtype)[:, None]
            labels = (1 - lam) * labels + lam * labels[params["partner"]]
        return CutMixResult(self.apply(x, params), params["lam"], labels, params["partner"])


# -- Pipelines ------------------------------------------------------------------------------------
class Compose(nn.Module):
    """Apply steps in order with one generator: ``Compose([...])(x, generator) -> x``.

    ``forward_with_labels(x, labels, generator) -> (x, labels)`` also mixes (B, K) soft labels in
    label-mixing steps (:class:`CutMix`).
    """
    def __init__(self, transforms: Sequence[nn.Module] = ()):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, generator: Generator = None) -> Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def forward_with_labels(self, x: Tensor, labels: Tensor | None,
                            generator: Generator = None) -> tuple[Tensor, Tensor | None]:
        for t in self.transforms:
            if isinstance(t, CutMix):
                x, _, labels, _ = t.mix(x, generator, labels)
            else:
                x = t(x, generator)
        return x, labels


@dataclass
class AugmentConfig:
    """Augmentation strengths; each ``*_p`` is a per-sample probability and 0 switches that step off.

    Sensor level (raw windows, before the spectrogram), in this order: rotation (angles ≤ rotation_max_deg),
    scaling (lognormal sigma), time warp (sigma of the log-speed at time_warp_knots knots), jitter (absolute
    sigma, in the data's units), channel dropout (per channel, or per triad with channel_dropout_by_triad).
    Spectrogram level: time roll (any shift when time_roll_max is null), cut-mix (DeSepTr: 4 + 4 bands; off
    by default: mixing samples breaks self-supervised views), time and frequency masks, Gaussian noise.
    """
    rotation_p: float = 0.5
    rotation_max_deg: float | None = 180.0  # None: derived from the store by the pretraining recipe
    scaling_p: float = 0.5
    scaling_sigma: float = 0.1
    time_warp_p: float = 0.3
    time_warp_strength: float = 0.2
    time_warp_knots: int = 4
    jitter_p: float = 0.5
    jitter_sigma: float = 0.01
    channel_dropout_p: float = 0.0
    channel_dropout_prob: float = 0.2
    channel_dropout_by_triad: bool = True
    time_roll_p: float = 0.5
    time_roll_max: int | None = None
    cutmix_p: float = 0.0
    cutmix_time_bands: int = 4
    cutmix_freq_bands: int = 4
    cutmix_time_width: int = 3
    cutmix_freq_width: int = 3
    time_mask_p: float = 0.5
    time_masks: int = 2
    time_mask_width: int = 4
    freq_mask_p: float = 0.5
    freq_masks: int = 2
    freq_mask_width: int = 4
    noise_p: float = 0.5
    noise_sigma: float = 1e-3

    def validate(self) -> None:
        for name, v in vars(self).items():
            bad = ((name.endswith(("_p", "_prob")) and not 0.0 <= v <= 1.0)
                   or (name.endswith(("_sigma", "_strength", "_bands")) and v < 0)
                   or (name.endswith(("_width", "_knots", "_masks", "_max")) and v is not None and v < 1)
                   or (name == "rotation_max_deg" and v is not None and not 0.0 < v <= 180.0))
            if bad:
                raise WearspecError(f"augment.{name}: {v} is out of range (probabilities in [0, 1], sigmas ≥ 0, "
                                    f"counts and widths ≥ 1, rotation_max_deg in (0, 180])")


def build_sensor_augment(cfg: AugmentConfig, channels: Sequence[str] | None = None,
                         triads: Sequence[Sequence[int]] | None = None) -> Compose:
    """The sensor-level pipeline for (B, C, T) windows. Triads come from ``triads`` or from the channel
    names (:func:`triads_from_channels`); rotation is left out, with a warning, when the channels have no
    triads (e.g. audio)."""
    cfg.validate()
    if triads is None and channels is not None:
        triads = triads_from_channels(channels)
    if cfg.rotation_p > 0 and (triads is None or cfg.rotation_max_deg is None):
        raise WearspecError("augment: rotation needs the channel names or triads and rotation_max_deg (null is "
                            "derived by the pretraining recipe), or set augment.rotation_p=0")
    if cfg.rotation_p > 0 and not triads:
        warnings.warn(f"augment: no x/y/z triads in channels {list(channels or [])}; rotation is off", stacklevel=2)
    c, groups = cfg, (list(triads or []) if cfg.channel_dropout_by_triad else None)
    return Compose([make() for p, make in [
        (c.rotation_p * bool(triads), lambda: RandomRotation3D(triads, c.rotation_p, c.rotation_max_deg)),
        (c.scaling_p, lambda: RandomScaling(c.scaling_p, c.scaling_sigma)),
        (c.time_warp_p, lambda: TimeWarp(c.time_warp_p, c.time_warp_strength, c.time_warp_knots)),
        (c.jitter_p, lambda: Jitter(c.jitter_p, c.jitter_sigma)),
        (c.channel_dropout_p, lambda: ChannelDropout(c.channel_dropout_p, c.channel_dropout_prob, groups)),
    ] if p > 0])


def build_spec_augment(cfg: AugmentConfig) -> Compose:
    """The spectrogram-level pipeline for (B, C, F, N) (order as listed in :class:`AugmentConfig`)."""
    cfg.validate()
    c = cfg
    return Compose([make() for p, make in [
        (c.time_roll_p, lambda: TimeRoll(c.time_roll_p, c.time_roll_max)),
        (c.cutmix_p, lambda: CutMix(c.cutmix_p, c.cutmix_time_bands, c.cutmix_freq_bands,
                                    c.cutmix_time_width, c.cutmix_freq_width)),
        (c.time_mask_p, lambda: TimeMasking(c.time_mask_p, c.time_masks, c.time_mask_width)),
        (c.freq_mask_p, lambda: FrequencyMasking(c.freq_mask_p, c.freq_masks, c.freq_mask_width)),
        (c.noise_p, lambda: GaussianNoise(c.noise_p, c.noise_sigma)),
    ] if p > 0])
