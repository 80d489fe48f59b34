"""Multi-crop views of spectrogram batches, on the device, with one seeded generator.

``views = MultiCrop(cfg, input_size=(F, N))(spec, generator)`` turns a batch (B, C, F, N) into
``n_global`` global views (B, C, Fg, Ng) followed by ``n_local`` local views (B, C, Fl, Nl). Crops are
taken along time (and, with ``freq_crop``, along frequency); every sample gets its own start and extent,
and all crops of a view are resized to the view's fixed size bilinearly (the sampling of ``F.grid_sample`` with
``align_corners=False`` and border padding, done as two separable batched gathers so that the identity
crop is exact), never a Python loop over samples. F and N are
independent: nothing assumes a square input.

Boxes are in input bins with edge coordinates: a box ``(f0, f1, n0, n1)`` covers frequencies [f0, f1] ⊂
[0, F] and frames [n0, n1] ⊂ [0, N], where bin k spans [k, k + 1]; the full input is (0, F, 0, N).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from wearspec.errors import WearspecError

Generator = torch.Generator | None


@dataclass
class MultiCropConfig:
    """Multi-crop views (DINO: 2 global + several local crops; only the global ones go to the teacher).

    n_global: global views (≥ 1; the teacher sees these). n_local: local views, student only (0 allowed;
        multi-crop is worth ~10 k-NN points in DINO, so keep some when the budget allows).
    global_scale, local_scale: [min, max] fraction of the time axis each crop covers, drawn uniformly.
    freq_crop: also crop a frequency sub-band with fraction in global_freq_scale / local_freq_scale
        (off by default: a sub-band resized to the full height shifts the apparent frequencies).
    neighbour_s: > 0: every second global view (and the local views cut from it) comes from another window of
        the same recording starting within this many seconds (:mod:`wearspec.data.neighbours`); 0: all views
        from the one window.
    global_size, local_size: output [F, N] of the views. Empty global_size: the input size. Empty
        local_size: the global F and round(N_global · mean(local_scale)) frames (a typical local crop at the
        global views' time resolution, so it is resized little), rounded to a multiple of ``size_multiple``
        (an argument of :class:`MultiCrop`).
    Errors name the keys as in the ``crops`` section of the pretraining config.
    """
    n_global: int = 2
    n_local: int = 6
    global_scale: list[float] = field(default_factory=lambda: [0.6, 1.0])
    local_scale: list[float] = field(default_factory=lambda: [0.15, 0.45])
    freq_crop: bool = False
    global_freq_scale: list[float] = field(default_factory=lambda: [0.8, 1.0])
    local_freq_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])
    global_size: list[int] = field(default_factory=list)
    local_size: list[int] = field(default_factory=list)
    neighbour_s: float = 0.0

    def validate(self) -> None:
        if self.n_global < 1 or self.n_local < 0:
            raise WearspecError(f"crops: need n_global ≥ 1 and n_local ≥ 0, got {self.n_global}, "
                                f"{self.n_local}")
        if self.n_global == 1 and self.n_local == 0:
            raise WearspecError("crops: one global view and no local view give the loss no (teacher, student) "
                                "pair; use n_global=2 or n_local ≥ 1")
        if not (self.neighbour_s >= 0 and self.neighbour_s < float("inf")):
            raise WearspecError(f"crops.neighbour_s: expected seconds ≥ 0 (0 = off), got {self.neighbour_s}")
        for name in ("global_scale", "local_scale", "global_freq_scale", "local_freq_scale"):
            v = list(getattr(self, name))
            if len(v) != 2 or not 0.0 < v[0] <= v[1] <= 1.0:
                raise WearspecError(f"crops.{name}: expected [min, max] with 0 < min ≤ max ≤ 1, got {v}")
        for name in ("global_size", "local_size"):
            v = list(getattr(self, name))
            if v and (len(v) != 2 or min(v) < 1):
                raise WearspecError(f"crops.{name}: expected [] or [F, N] with F, N ≥ 1, got {v}")


class MultiCrop(nn.Module):
    """Batched random multi-crop of spectrograms. Input (B, C, F, N) with (F, N) == ``input_size``.

    ``forward(spec, generator=None, return_boxes=False)`` → list of ``n_global + n_local`` tensors, the
    global views (B, C, *global_size) then the local views (B, C, *local_size), in ``spec``'s dtype; with
    ``return_boxes=True`` → ``(views, boxes)``, boxes a list of (B, 4) float32 ``(f0, f1, n0, n1)`` per
    view (see the module docstring), the crops' extents in input bins.

    ``sample_boxes(batch, device, generator)`` and ``crop(spec, boxes, size)`` are the two halves, for
    plots of region correspondences or for cropping several tensors with the same boxes. Random draws
    (per view, in order: time fraction, time start, then frequency fraction and start if ``freq_crop``)
    come from ``generator`` on the batch's device: one seed, one result.
    size_multiple: derived sizes (empty ``local_size``) are rounded to a multiple of it (e.g. the patch
        size); explicit sizes are used as given.
    """

    def __init__(self, cfg: MultiCropConfig, input_size: Sequence[int], size_multiple: int = 1):
        super().__init__()
        cfg.validate()
        if len(input_size) != 2 or min(input_size) < 1 or size_multiple < 1:
            raise WearspecError(f"MultiCrop: input_size must be (F, N) ≥ 1 and size_multiple ≥ 1, got "
                                f"{tuple(input_size)}, {size_multiple}")
        self.cfg, self.input_size = cfg, (int(input_size[0]), int(input_size[1]))
        self.global_size = tuple(int(v) for v in cfg.global_size) or self.input_size
        if cfg.local_size:
            self.local_size = tuple(int(v) for v in cfg.local_size)
        else:
            n = self.global_size[1] * 0.5 * (cfg.local_scale[0] + cfg.local_scale[1])
            self.local_size = (self.global_size[0], max(size_multiple, round(n / size_multiple) * size_multiple))

    @property
    def n_views(self) -> int:
        return self.cfg.n_global + self.cfg.n_local

    def view_sizes(self) -> list[tuple[int, int]]:
        """Output (F, N) of every view, globals first."""
        return [self.global_size] * self.cfg.n_global + [self.local_size] * self.cfg.n_local

    def sample_boxes(self, batch: int, device: torch.device | str = "cpu", generator: Generator = None) -> list[Tensor]:
        """``n_views`` tensors (B, 4) float32 ``(f0, f1, n0, n1)``: a random extent (fraction uniform in the
        view's scale range) and start (uniform over the positions where the crop fits) per sample."""
        c, (f_in, n_in) = self.cfg, self.input_size
        kw = dict(generator=generator, device=torch.device(device))
        boxes = []
        for v in range(self.n_views):
            is_global = v < c.n_global
            n0, n1 = _interval(batch, n_in, c.global_scale if is_global else c.local_scale, kw)
            if c.freq_crop:
                f0, f1 = _interval(batch, f_in, c.global_freq_scale if is_global else c.local_freq_scale, kw)
            else:
                f0 = torch.zeros(batch, device=kw["device"])
                f1 = torch.full((batch,), float(f_in), device=kw["device"])
            boxes.append(torch.stack([f0, f1, n0, n1], dim=1))
        return boxes

    def crop(self, spec: Tensor, boxes: Tensor, size: Sequence[int]) -> Tensor:
        """Resample each sample's box of spec (B, C, F, N) to (B, C, *size), bilinearly.

        boxes: (B, 4) ``(f0, f1, n0, n1)``. Output bin j of Nout samples the input at the centre of the j-th
        of Nout equal parts of [n0, n1] (same along F), i.e. ``grid_sample(bilinear, align_corners=False,
        padding_mode="border")``, computed as two separable batched gathers with float64 coordinates: a
        full box at the input size returns the input exactly, and an integer box at its own size returns
        the slice exactly.
        """
        bx = boxes.to(device=spec.device, dtype=torch.float64)
        out = _resample_last(spec, bx[:, 2], bx[:, 3], int(size[1]))
        out = _resample_last(out.transpose(-1, -2), bx[:, 0], bx[:, 1], int(size[0]))
        return out.transpose(-1, -2).contiguous()

    def forward(self, spec: Tensor, generator: Generator = None, return_boxes: bool = False):
        if not (isinstance(spec, Tensor) and spec.ndim == 4 and spec.is_floating_point()
                and tuple(spec.shape[2:]) == self.input_size):
            got = f"{tuple(spec.shape)} {spec.dtype}" if isinstance(spec, Tensor) else type(spec).__name__
            raise WearspecError(f"MultiCrop: expected a floating (B, C, F, N) batch with (F, N) = {self.input_size}, "
                                f"got {got}")
        boxes = self.sample_boxes(spec.shape[0], spec.device, generator)
        views = [self.crop(spec, bx, size) for bx, size in zip(boxes, self.view_sizes())]
        return (views, boxes) if return_boxes else views


def _interval(batch: int, length: int, scale: Sequence[float], kw: dict) -> tuple[Tensor, Tensor]:
    """(start, end) edge coordinates (B,) of random sub-intervals of [0, length]."""
    lo, hi = float(scale[0]), float(scale[1])
    width = length * (lo + (hi - lo) * torch.rand(batch, **kw))
    start = (length - width) * torch.rand(batch, **kw)
    return start, torch.minimum(start + width, torch.full_like(start, float(length)))


def _resample_last(x: Tensor, lo: Tensor, hi: Tensor, n_out: int) -> Tensor:
    """Linear resampling of the last axis of x (B, ..., L): output j samples the input at the edge
    coordinate lo + (hi − lo)·(j + ½)/n_out, i.e. pixel position that − ½, clamped to [0, L − 1].
    lo, hi: (B,) float64. Returns (B, ..., n_out) in x's dtype."""
    b, length = x.shape[0], x.shape[-1]
    j = torch.arange(n_out, device=x.device, dtype=torch.float64) + 0.5
    pos = (lo[:, None] + (hi - lo)[:, None] * j / n_out - 0.5).clamp(0, length - 1)  # (B, n_out)
    i0 = pos.floor().long().clamp(max=max(length - 2, 0))
    w = (pos - i0).clamp(0, 1).to(x.dtype)
    flat = x.reshape(b, -1, length)
    idx0 = i0[:, None, :].expand(b, flat.shape[1], n_out)
    g0 = flat.gather(2, idx0)
    g1 = flat.gather(2, (idx0 + 1).clamp(max=length - 1))
    return torch.lerp(g0, g1, w[:, None, :]).reshape(*x.shape[:-1], n_out)  # exact at w = 0 and w = 1
