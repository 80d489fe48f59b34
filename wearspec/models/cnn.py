"""The CNN teacher of DeSepTr: a timm ResNet-18 for small spectrograms (B, C, F, N).

DeSepTr (McQuire et al., 2023) trains a ResNet-18 on spectrograms first; its stem and first residual stage
then embed the input of the transformer student (frozen), and its predictions are the distillation targets.

Small stem (``small_stem=True``, the default). Wearable spectrograms are tiny (F ≈ 17–33 frequency bins,
N ≈ 16–64 frames). ImageNet's stem (7×7 conv, stride 2, then a 3×3 stride-2 max-pool) divides both axes by
4 before the first residual block, leaving e.g. 5 × 8 positions of a 17 × 32 input, and the three strided
stages after it collapse that to 1 × 1. The small stem is a single 3×3 conv with stride 1 (padding 1) and no
max-pool (as CIFAR ResNets), so the stem and ``layer1`` keep the full (F, N) resolution and the network's
total stride is 8 (from ``layer2``–``layer4``), not 32. ``small_stem=False`` gives timm's ImageNet stem.

``width`` scales every stage: channels (w, 2w, 4w, 8w); ``width=64`` is the standard ResNet-18 (the stem
then has 64 channels, as timm's). Module names follow timm's ResNet (``conv1``, ``bn1``, ``layer1``…
``layer4``, ``fc``), so with ``width=64, small_stem=False`` the state dict is timm's ``resnet18``.
Non-square inputs of any size work (convolutions, then global average pooling); never assumes F == N.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from timm.models.resnet import BasicBlock, ResNet, make_blocks
from torch import Tensor, nn

from wearspec.errors import WearspecError


@dataclass
class CNNConfig:
    """ResNet-18 settings: ``width`` channels of the first stage (64 = standard), ``small_stem`` (3×3 stride-1
    conv, no max-pool; see the module docstring), ``drop_rate`` (dropout before the classifier)."""

    width: int = 64
    small_stem: bool = True
    drop_rate: float = 0.0

    def validate(self) -> None:
        if not (isinstance(self.width, int) and self.width >= 1):
            raise WearspecError(f"cnn.width: expected an integer ≥ 1, got {self.width!r}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise WearspecError(f"cnn.drop_rate: expected a number in [0, 1), got {self.drop_rate}")


class ResNetTeacher(nn.Module):
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]) classifier of spectrograms (B, C, F, N) → logits (B, K).

    Attributes: ``net`` (the timm :class:`~timm.models.resnet.ResNet`), ``in_chans``, ``num_classes``,
    ``input_size`` ((F, N) it is meant for; any size works), ``width``, ``small_stem``,
    ``embed_channels`` (Ce = ``width``, channels of :meth:`embed`), ``num_features`` (D = 8·``width``),
    ``num_layers`` (4 stages, for layer-wise LR decay).
    """

    num_layers = 4

    def __init__(self, in_chans: int, num_classes: int, input_size: tuple[int, int], width: int = 64,
                 small_stem: bool = True, drop_rate: float = 0.0):
        super().__init__()
        CNNConfig(width, small_stem, drop_rate).validate()
        if not (isinstance(in_chans, int) and in_chans >= 1):
            raise WearspecError(f"cnn: in_chans must be an integer ≥ 1, got {in_chans!r}")
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise WearspecError(f"cnn: num_classes must be an integer ≥ 1, got {num_classes!r}")
        if len(input_size) != 2 or any(not isinstance(s, int) or s < 1 for s in input_size):
            raise WearspecError(f"cnn: input_size must be two integers ≥ 1 (F, N), got {input_size!r}")
        self.in_chans, self.num_classes, self.width = in_chans, num_classes, width
        self.small_stem = bool(small_stem)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        w = width
        net = ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_chans=in_chans,
                     channels=(w, 2 * w, 4 * w, 8 * w), drop_rate=drop_rate)
        if small_stem or w != 64:
            # timm's plain stem always has 64 channels; a scaled or small stem needs its own conv1/bn1 and a
            # layer1 built for ``w`` input channels (no 64 → w projection shortcut)
            k, s, p = (3, 1, 1) if small_stem else (7, 2, 3)
            net.conv1 = nn.Conv2d(in_chans, w, kernel_size=k, stride=s, padding=p, bias=False)
            net.bn1 = nn.BatchNorm2d(w)
            (_, net.layer1), = make_blocks((BasicBlock,), (w,), (2,), inplanes=w, act_layer=nn.ReLU,
                                           norm_layer=nn.BatchNorm2d)[0]
            if small_stem:
                net.maxpool = nn.Identity()
            net.init_weights()  # timm's init (kaiming convs, zero last BN of each block) for the new modules too
        self.net = net
        self.embed_channels = w
        self.num_features = net.num_features

    # ---- forward ---------------------------------------------------------------------------------
    def _check(self, x: Tensor) -> None:
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != self.in_chans):
            raise WearspecError(f"cnn: expected input (B, {self.in_chans}, F, N), got {tuple(x.shape)}")

    def embed(self, x: Tensor) -> Tensor:
        """Stem + ``layer1``: (B, C, F, N) → (B, Ce, F', N') with (F', N') = :meth:`embed_grid` ((F, N) with
        the small stem). DeSepTr's patch embedding of the student."""
        self._check(x)
        n = self.net
        return n.layer1(n.maxpool(n.act1(n.bn1(n.conv1(x)))))

    def features(self, x: Tensor) -> Tensor:
        """(B, C, F, N) → globally average-pooled last-stage features (B, ``num_features``)."""
        n = self.net
        x = n.layer4(n.layer3(n.layer2(self.embed(x))))
        return n.global_pool(x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, F, N) → logits (B, K) (dropout ``drop_rate`` before the classifier in training)."""
        return self.net.forward_head(self.net.layer4(self.net.layer3(self.net.layer2(self.embed(x)))))

    def embed_grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """(F', N') of :meth:`embed` for an input of size (F, N): (F, N) with the small stem; with the ImageNet
        stem ``ceil(ceil(F / 2) / 2)`` (stride-2 conv, then stride-2 max-pool), likewise for N."""
        if self.small_stem:
            return int(input_size[0]), int(input_size[1])
        return tuple(math.ceil(math.ceil(s / 2) / 2) for s in input_size)  # type: ignore[return-value]

    # ---- optimiser helpers -----------------------------------------------------------------------
    def layer_id(self, param_name: str) -> int:
        """0 for the stem, i for ``layer{i}``, 5 for the classifier (any name prefix)."""
        name = "." + param_name
        if m := re.search(r"\.layer(\d)\.", name):
            return int(m.group(1))
        if re.search(r"\.(conv1|bn1)\.", name):
            return 0
        return self.num_layers + 1

    def no_weight_decay(self) -> set[str]:
        """Nothing besides biases and norms (which a recipe exempts by shape)."""
        return set()


def build_teacher(cfg: CNNConfig, in_chans: int, num_classes: int, input_size: tuple[int, int]) -> ResNetTeacher:
    """A :class:`ResNetTeacher` from a :class:`CNNConfig` (global torch RNG; deterministic under a seed)."""
    cfg.validate()
    return ResNetTeacher(in_chans, num_classes, tuple(input_size), cfg.width, cfg.small_stem, cfg.drop_rate)
