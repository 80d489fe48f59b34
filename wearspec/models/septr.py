"""SepTr: the separable transformer for spectrograms (Ristea et al., Interspeech 2022), with a DeiT
distillation token (DeSepTr, McQuire et al., 2023). Written from the papers' descriptions.

Input (B, C, F, N) → patch embedding → token grid (B, H, W, D), H along frequency (rows), W along time
(columns); never assumed square.

* **Patch embedding.** ``Conv2d(C, D, kernel = stride = patch_size)`` after zero-padding F, N up to
  multiples of the patch (high-frequency / late-time side, the rule of :mod:`wearspec.models.backbones`).
  With ``patch_size = [1, 1]`` every time–frequency bin is a token (the paper's setting). DeSepTr's
  external embedding (the frozen CNN teacher's stem + ``layer1``) runs *before* this module
  (:class:`wearspec.models.students.Student` composes them); this module's convolution then patches the
  teacher's (B, Ce, F', N') feature map: ``[1, 1]`` is the paper's 1×1 projection of Ce channels to D.
* **Positional embeddings, one per axis.** ``pos_freq`` (1, H0, 1, D) and ``pos_time`` (1, 1, W0, D),
  learned, added with broadcasting: token (h, w) gets ``pos_freq[h] + pos_time[w]``. A grid other than the
  built (H0, W0) linearly resamples each axis (``F.interpolate``, ``align_corners=False``).
* **Class and distillation tokens.** The model keeps *one* class token c (and one distillation token d)
  per example between the axis transformers. Before an axis transformer they are replicated to every
  sequence: a time transformer sees, for each frequency row h, the sequence ``[c, d, x[h, 0], …, x[h, W-1]]``
  (B·H sequences of length 2 + W); a frequency transformer sees, for each time column w,
  ``[c, d, x[0, w], …, x[H-1, w]]`` (B·W sequences of length 2 + H). After the transformer, each sequence
  has its own updated copy of c (and d); the copies are averaged over the rows (time transformer) or the
  columns (frequency transformer) into the single c (and d) handed to the next axis transformer, as the
  paper's "the class tokens are averaged" between the vertical and horizontal transformers. The
  representation read by the heads is the final-norm of the last average (the mean over the last axis's
  rows/columns of their class tokens); the distillation token likewise feeds ``head_dist``. The tokens
  carry no positional embedding.
* **Blocks.** Block i is a time transformer then a frequency transformer (``order="time_first"``) or the
  reverse (``"freq_first"``); each is one pre-norm timm ViT block (SDPA attention, MLP ratio, drop path),
  with its own weights. Drop path grows linearly over the blocks, 0 … ``drop_path_rate``.
* **Cost.** Attention is over W + 2 or H + 2 tokens, not H·W + 2: linear in the grid size per axis.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block, init_weights_vit_timm
from torch import Tensor, nn

from wearspec.errors import WearspecError

ORDERS = ("time_first", "freq_first")


@dataclass
class SepTrConfig:
    """SepTr size: token width ``embed_dim``, ``depth`` blocks (each a time and a frequency transformer
    layer), ``num_heads``, ``mlp_ratio``, ``patch_size`` (freq, time) of the convolutional patch embedding,
    ``order`` of the two axes per block, stochastic-depth ``drop_path_rate``."""

    embed_dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    patch_size: list[int] = field(default_factory=lambda: [1, 1])
    order: str = "time_first"
    drop_path_rate: float = 0.0

    def validate(self) -> None:
        for key in ("embed_dim", "depth", "num_heads"):
            v = getattr(self, key)
            if not (isinstance(v, int) and v >= 1):
                raise WearspecError(f"septr.{key}: expected an integer ≥ 1, got {v!r}")
        if self.embed_dim % self.num_heads:
            raise WearspecError(f"septr.num_heads: embed_dim {self.embed_dim} is not divisible by "
                                f"num_heads {self.num_heads}")
        if not self.mlp_ratio > 0:
            raise WearspecError(f"septr.mlp_ratio: expected a number > 0, got {self.mlp_ratio}")
        p = self.patch_size
        if len(p) != 2 or any(not isinstance(i, int) or i < 1 for i in p):
            raise WearspecError(f"septr.patch_size: expected two integers ≥ 1 (freq, time), got {p!r}")
        if self.order not in ORDERS:
            raise WearspecError(f"septr.order: expected one of {', '.join(ORDERS)}, got {self.order!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise WearspecError(f"septr.drop_path_rate: expected a number in [0, 1), got {self.drop_path_rate}")


class SepTrBlock(nn.Module):
    """One SepTr block: ``time`` (attention along W within each frequency row) and ``freq`` (along H within
    each time column) transformer layers, applied in ``order``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float, order: str):
        super().__init__()
        self.order = order
        self.time = Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=drop_path)
        self.freq = Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=drop_path)

    def forward(self, x: Tensor, prefix: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, H, W, D) grid, prefix (B, P, D) class (+ distillation) tokens → the same shapes."""
        axes = ("time", "freq") if self.order == "time_first" else ("freq", "time")
        for axis in axes:
            x, prefix = self._along(x, prefix, axis)
        return x, prefix

    def _along(self, x: Tensor, prefix: Tensor, axis: str) -> tuple[Tensor, Tensor]:
        b, h, w, d = x.shape
        p = prefix.shape[1]
        if axis == "freq":  # columns become the sequences: (B, W, H, D)
            x = x.transpose(1, 2)
        rows, length = x.shape[1], x.shape[2]
        seq = x.reshape(b * rows, length, d)
        pre = prefix[:, None].expand(b, rows, p, d).reshape(b * rows, p, d)  # one copy per row / column
        out = (self.time if axis == "time" else self.freq)(torch.cat((pre, seq), dim=1))  # (B·rows, P + L, D)
        prefix = out[:, :p].reshape(b, rows, p, d).mean(dim=1)  # average the per-row / per-column copies
        x = out[:, p:].reshape(b, rows, length, d)
        if axis == "freq":
            x = x.transpose(1, 2)
        return x, prefix


class SepTr(nn.Module):
    """SepTr classifier: (B, C, F, N) → (cls logits (B, K), dist logits (B, K) or None).

    Args:
        cfg: :class:`SepTrConfig`.
        in_chans: C (or the external embedding's channels, e.g. the CNN teacher's ``embed_channels``).
        input_size: (F, N) the model is built for (sizes ``pos_freq``/``pos_time``); other sizes resample.
        num_classes: K; 0 gives identity heads (``forward`` then returns the features).
        distillation: add the distillation token and ``head_dist``.

    Attributes: ``grid`` (H0, W0) token grid of ``input_size``, ``embed_dim``, ``num_layers`` (= depth),
    ``patch_size``, ``in_chans``, ``input_size``, ``distillation``.
    """

    def __init__(self, cfg: SepTrConfig, in_chans: int, input_size: tuple[int, int], num_classes: int = 0,
                 distillation: bool = True):
        super().__init__()
        cfg.validate()
        if not (isinstance(in_chans, int) and in_chans >= 1):
            raise WearspecError(f"septr: in_chans must be an integer ≥ 1, got {in_chans!r}")
        if len(input_size) != 2 or any(not isinstance(s, int) or s < 1 for s in input_size):
            raise WearspecError(f"septr: input_size must be two integers ≥ 1 (F, N), got {input_size!r}")
        self.cfg, self.in_chans, self.distillation = cfg, in_chans, bool(distillation)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.patch_size = (int(cfg.patch_size[0]), int(cfg.patch_size[1]))
        self.grid = tuple(math.ceil(s / k) for s, k in zip(self.input_size, self.patch_size))
        d = self.embed_dim = cfg.embed_dim
        self.num_layers = cfg.depth
        self.patch_embed = nn.Conv2d(in_chans, d, kernel_size=self.patch_size, stride=self.patch_size)
        self.pos_freq = nn.Parameter(torch.zeros(1, self.grid[0], 1, d))
        self.pos_time = nn.Parameter(torch.zeros(1, 1, self.grid[1], d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if distillation else None
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(SepTrBlock(d, cfg.num_heads, cfg.mlp_ratio, r, cfg.order) for r in rates)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, num_classes) if num_classes else nn.Identity()
        self.head_dist = (nn.Linear(d, num_classes) if num_classes else nn.Identity()) if distillation else None
        for t in (self.pos_freq, self.pos_time, self.cls_token, self.dist_token):
            if t is not None:
                trunc_normal_(t, std=0.02)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                init_weights_vit_timm(m, name)

    # ---- shapes ----------------------------------------------------------------------------------
    def token_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the token grid for an input of size (F, N)."""
        return math.ceil(size[0] / self.patch_size[0]), math.ceil(size[1] / self.patch_size[1])

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, F, N) → token grid with positional embeddings (B, H, W, D)."""
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != self.in_chans):
            raise WearspecError(f"septr: expected input (B, {self.in_chans}, F, N), got {tuple(x.shape)}")
        pad_f, pad_n = (-x.shape[-2]) % self.patch_size[0], (-x.shape[-1]) % self.patch_size[1]
        if pad_f or pad_n:
            x = F.pad(x, (0, pad_n, 0, pad_f))
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # (B, H, W, D)
        h, w = x.shape[1], x.shape[2]
        return x + _resample_axis(self.pos_freq, h, 1) + _resample_axis(self.pos_time, w, 2)

    # ---- forward ---------------------------------------------------------------------------------
    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, C, F, N) → (class representation (B, D), distillation representation (B, D) or None),
        both after the final LayerNorm."""
        x = self.embed(x)
        b = x.shape[0]
        tokens = [self.cls_token] + ([self.dist_token] if self.dist_token is not None else [])
        prefix = torch.cat(tokens, dim=1).expand(b, -1, -1)  # (B, P, D)
        for blk in self.blocks:
            x, prefix = blk(x, prefix)
        prefix = self.norm(prefix)
        return prefix[:, 0], (prefix[:, 1] if self.dist_token is not None else None)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, C, F, N) → (``head`` (B, K), ``head_dist`` (B, K) or None)."""
        c, d = self.forward_features(x)
        return self.head(c), (self.head_dist(d) if d is not None else None)

    # ---- optimiser helpers -----------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Positional embeddings and the class / distillation tokens (names as in ``named_parameters()``)."""
        names = {n for n, _ in self.named_parameters()}
        return {"pos_freq", "pos_time", "cls_token", "dist_token"} & names

    def layer_id(self, param_name: str) -> int:
        """0 for the embedding (patch conv, positional embeddings, tokens), i + 1 for block i (both its axis
        layers), ``num_layers + 1`` for the final norm and the heads. Any name prefix works."""
        name = "." + param_name
        if m := re.search(r"\.blocks\.(\d+)\.", name):
            return int(m.group(1)) + 1
        if re.search(r"\.(patch_embed|pos_freq|pos_time|cls_token|dist_token)(\.|$)", name):
            return 0
        return self.num_layers + 1


def _resample_axis(pos: Tensor, size: int, dim: int) -> Tensor:
    """A per-axis positional embedding (1, H0, 1, D) (``dim=1``) or (1, 1, W0, D) (``dim=2``) resampled to
    ``size`` along that axis by linear interpolation; unchanged at its own size."""
    if pos.shape[dim] == size:
        return pos
    v = pos.squeeze(3 - dim).transpose(1, 2)  # (1, D, L0)
    v = F.interpolate(v.float(), size=size, mode="linear", align_corners=False).to(pos.dtype).transpose(1, 2)
    return v.unsqueeze(3 - dim)
