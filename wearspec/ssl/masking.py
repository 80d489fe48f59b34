"""Masked-token prediction (iBOT / DINOv2's patch-level objective) for spectrogram ViTs.

The student sees its global views with some patches hidden (their embeddings replaced by a learned mask token
before the position embedding, :meth:`~wearspec.models.backbones.SpectrogramBackbone.forward_masked`); the
teacher sees the same views whole. At every hidden patch the student's dense-head distribution must match the
teacher's centred, sharpened distribution at that patch. Why it matters on sensor spectrograms: the view-level
DINO loss alone trains only what separates windows under the chosen augmentations, and with few windows and
few tokens it may keep less of the input than a random backbone does; predicting hidden time-frequency patches
from their context makes every token carry the local spectro-temporal content (the patch-level sibling of the
EsViT region loss, which matches tokens *across* views instead).

* :func:`random_token_masks` draws the masks: per sample, with probability ``sample_p`` (iBOT 0.5) a ratio
  uniform in ``[min_ratio, max_ratio]`` (iBOT 0.1–0.5) of the patches, chosen at random; other samples keep all.
* :class:`MaskedTokenLoss`: ``forward(student_dense, teacher_dense, masks, teacher_temp)`` with per global view
  (B, L, K) logits and (B, L) bool masks → mean over views of the mean CE over the hidden patches (views without
  any hidden patch add 0); ``update_center(teacher_dense)`` as the other losses (EMA of the all-reduced mean).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from wearspec.errors import WearspecError
from wearspec.ssl.losses import _CenteredLoss, global_mean


def random_token_masks(batch: int, grid: tuple[int, int], max_ratio: float, generator: torch.Generator,
                       device: torch.device | str, min_ratio: float = 0.1, sample_p: float = 0.5) -> Tensor:
    """(batch, h, w) bool: True where a patch is hidden. Every random number comes from ``generator`` on
    ``device`` (one batched draw, no loop over samples)."""
    if not 0.0 < max_ratio < 1.0 or not 0.0 <= min_ratio <= max_ratio or not 0.0 <= sample_p <= 1.0:
        raise WearspecError(f"loss.mask_ratio: expected 0 < min ≤ max < 1 and a probability, got {min_ratio}, "
                            f"{max_ratio}, {sample_p}")
    h, w = grid
    chosen = torch.rand(batch, 1, generator=generator, device=device) < sample_p
    ratio = min_ratio + (max_ratio - min_ratio) * torch.rand(batch, 1, generator=generator, device=device)
    scores = torch.rand(batch, h * w, generator=generator, device=device)
    # hide the floor(ratio · L) lowest-scoring patches of each chosen sample (at least one)
    n_hidden = (ratio * h * w).floor().clamp_min(1)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ((ranks < n_hidden) & chosen).view(batch, h, w)


class MaskedTokenLoss(_CenteredLoss):
    """CE(teacher patch distribution, student patch distribution) at the hidden patches of the global views."""

    def forward(self, student_dense: Sequence[Tensor], teacher_dense: Sequence[Tensor], masks: Sequence[Tensor],
                teacher_temp: float) -> Tensor:
        if not (len(student_dense) == len(teacher_dense) == len(masks) == self.n_global):
            raise WearspecError(f"MaskedTokenLoss: expected {self.n_global} global views of student, teacher and "
                                f"masks, got {len(student_dense)}, {len(teacher_dense)}, {len(masks)}")
        with torch.autocast(student_dense[0].device.type, enabled=False):  # float32 even inside autocast
            total = student_dense[0].new_zeros((), dtype=torch.float32)
            for s, t, m in zip(student_dense, teacher_dense, masks):
                m = m.flatten(1)
                if s.shape[:2] != m.shape or t.shape != s.shape:
                    raise WearspecError(f"MaskedTokenLoss: student {tuple(s.shape)}, teacher {tuple(t.shape)} and "
                                        f"mask {tuple(m.shape)} must agree on (B, L)")
                ce = -(self._teacher_probs(t, teacher_temp) * F.log_softmax(s.float() / self.student_temp, -1)).sum(-1)
                total = total + (ce * m).sum() / m.sum().clamp_min(1)
            return total / len(masks)

    @torch.no_grad()
    def update_center(self, teacher_dense: Sequence[Tensor]) -> None:
        """EMA of the global-batch mean of every teacher patch logit (all-reduced)."""
        x = torch.cat([t.reshape(-1, self.out_dim) for t in teacher_dense])
        self._ema_center(global_mean(x))
