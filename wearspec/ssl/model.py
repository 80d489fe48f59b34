"""The networks of EsViT/DINO pretraining and the batched view maker.

``SSLNet`` = encoder (front end + backbone) + DINO head on the pooled feature + optional dense head on
every token (EsViT region level). The student and the teacher are two ``SSLNet`` with the same
architecture; the teacher is an EMA of the student and never receives gradients.

``ViewMaker`` turns a batch of raw windows (B, C, T) into the multi-crop views, entirely on the
device and batched: two independently augmented copies of the batch (sensor augmentations) →
``SpectrogramFrontend`` → multi-crop (global crop i comes from copy i, local crops alternate
between the copies) → spectrogram augmentations drawn independently per view.
"""

from __future__ import annotations

import torch
from torch import nn

from wearspec.models.encoder import SpectrogramEncoder
from wearspec.ssl.heads import DINOHead


class SSLNet(nn.Module):
    """encoder + DINO head (+ dense head). Inputs are spectrogram views (B, C, F_v, N_v)."""

    def __init__(self, encoder: SpectrogramEncoder, head: DINOHead, dense_head: DINOHead | None = None,
                 mask_token: bool = False):
        super().__init__()
        self.encoder, self.head, self.dense_head = encoder, head, dense_head
        # the learned embedding of a hidden patch (masked-token prediction, wearspec.ssl.masking); it belongs to
        # pretraining, not to the encoder, so exported encoders are unchanged
        self.mask_token = (nn.Parameter(nn.init.trunc_normal_(torch.zeros(encoder.backbone.token_dim), std=0.02))
                           if mask_token else None)

    def forward(self, views: list[torch.Tensor], masks: list[torch.Tensor] | None = None
                ) -> dict[str, list[torch.Tensor]]:
        """views: list of (B, C, F_v, N_v); masks: None, or (B, h, w) bool patch masks for the first
        ``len(masks)`` views (hidden patches, see :mod:`wearspec.ssl.masking`). Returns per view: ``cls`` (B, K)
        head logits, ``pooled`` (B, D) backbone features, ``tokens`` (B, L_v, Dt) backbone token features and
        ``dense`` (B, L_v, K) dense-head logits (if any).
        Consecutive views of the same size (and masking) go through the backbone as one batch."""
        out: dict[str, list[torch.Tensor]] = {"cls": [], "pooled": [], "tokens": [], "dense": []}
        n_masked = len(masks) if masks else 0
        i = 0
        while i < len(views):
            j = i + 1
            while j < len(views) and views[j].shape == views[i].shape and (j < n_masked) == (i < n_masked):
                j += 1
            b = views[i].shape[0]
            if i < n_masked:
                feats = self.encoder.backbone.forward_masked(torch.cat(views[i:j]), torch.cat(masks[i:j]),
                                                             self.mask_token)
            else:
                feats = self.encoder.backbone(torch.cat(views[i:j]))
            cls = self.head(feats.pooled)
            dense = self.dense_head(feats.tokens) if self.dense_head is not None else None
            for k in range(j - i):
                sl = slice(k * b, (k + 1) * b)
                out["cls"].append(cls[sl])
                out["pooled"].append(feats.pooled[sl])
                out["tokens"].append(feats.tokens[sl])
                if dense is not None:
                    out["dense"].append(dense[sl])
            i = j
        return out


class ViewMaker:
    """Raw windows (B, C, T) → multi-crop views [global_1, …, global_G, local_1, …, local_L]; with ``other``
    (B, C, T) (a temporal neighbour of each window) the 2nd, 4th, … global views come from it."""

    def __init__(self, frontend: nn.Module, sensor_augment, multicrop, spec_augment, n_global: int):
        self.frontend, self.sensor_augment = frontend, sensor_augment
        self.multicrop, self.spec_augment, self.n_global = multicrop, spec_augment, n_global

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, generator: torch.Generator, other: torch.Tensor | None = None
                 ) -> list[torch.Tensor]:
        sources = [x if other is None or g % 2 == 0 else other for g in range(self.n_global)]
        copies = [self.frontend(self.sensor_augment(src, generator)) for src in sources]
        crops = [self.multicrop(spec, generator) for spec in copies]
        views = [crops[g][g] for g in range(self.n_global)]
        n_local = len(crops[0]) - self.n_global
        views += [crops[k % self.n_global][self.n_global + k] for k in range(n_local)]
        return [self.spec_augment(v, generator) for v in views]
