"""timm ViT and Swin backbones for spectrograms (B, C, F, N): any channel count, non-square, variable size.

One model takes every crop of the multi-crop recipe: global crops of the size it was built for
(``input_size`` = (F, N)) and smaller local crops or frequency sub-bands. Shapes are never assumed square;
the frequency axis F is the image height (rows), the time axis N the width.

Variable input sizes:

* **Patch padding (both archs).** An input whose F or N is not a multiple of the patch size (pf, pn) is
  zero-padded on the high-frequency (bottom) and late-time (right) side up to the next multiple, inside
  :meth:`SpectrogramBackbone.forward`. Zero is the channel mean of a normalised spectrogram. The model is
  built for the padded ``input_size``, so a global-size input never needs position interpolation.
* **ViT.** ``dynamic_img_size=True``: the learned absolute position embedding (built for the global grid
  (h0, w0)) is resampled per forward to the input's grid (h, w) by timm's ``resample_abs_pos_embed``
  (bicubic, antialiased, with an explicit non-square ``old_size``; the CLS entry is kept). At the global
  grid it is returned unchanged, so a global crop gives exactly timm's plain forward.
* **Swin.** Windows are fixed per stage at construction (timm clamps a window to a stage grid of the
  global crop that is smaller than it, with no shift there). timm 1.0.31's dynamic-size path pads a stage
  grid that is not a multiple of the window *after* the cyclic shift and does not mask the padding: padded
  tokens take part in the attention, and the wrapped first rows/columns share windows with the last ones
  while being split from their neighbours. Here every Swin block pads *before* shifting (as the original
  Swin) and masks padded keys as well as the shift regions, so the tokens of a crop do not depend on how
  much window padding it needed; without padding the result is timm's. Patch merging of an odd grid pads
  one zero row/column (timm; ``ceil(g / 2)`` tokens out).

Attention runs through ``F.scaled_dot_product_attention`` in both archs (timm enables it for ViT; for Swin
timm calls it experimental and leaves it off, here it is switched on at the same level as ViT's).
Export: both archs export to ONNX at the global size with ``torch.onnx.export`` (legacy or
``dynamo=True``); for ``dynamo=True`` a Swin needs :meth:`SpectrogramBackbone.set_fused_attn` ``(False)``.

Token grids: ViT (h, w) = (ceil(F / pf), ceil(N / pn)); Swin the same, halved (``ceil``) once per stage
after the first. Tokens are row-major over (frequency, time).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import use_fused_attn
from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock, window_partition, window_reverse
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from wearspec.errors import WearspecError

# name: arch, embed_dim (Swin: stage 1), depth (Swin: blocks per stage), num_heads (Swin: per stage),
#       patch (freq, time), window (freq, time; Swin only)
PRESETS: dict[str, dict] = {
    "vit_tiny_cpu": dict(arch="vit", embed_dim=128, depth=4, num_heads=4, patch=(4, 4)),
    "swin_tiny_cpu": dict(arch="swin", embed_dim=48, depth=(2, 2), num_heads=(2, 4), patch=(2, 2), window=(4, 4)),
    "vit_small": dict(arch="vit", embed_dim=384, depth=12, num_heads=6, patch=(16, 16)),
    "vit_base": dict(arch="vit", embed_dim=768, depth=12, num_heads=12, patch=(16, 16)),
    "swin_tiny": dict(arch="swin", embed_dim=96, depth=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), patch=(4, 4),
                      window=(7, 7)),
    "swin_small": dict(arch="swin", embed_dim=96, depth=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), patch=(4, 4),
                       window=(7, 7)),
}


@dataclass
class BackboneConfig:
    """Which backbone: a preset ``name`` and optional overrides (0 / empty = the preset's value).

    For Swin, ``depth`` overrides the blocks of *every* stage and ``num_heads`` the heads of the first stage
    (doubled per stage, as in the presets); ``embed_dim`` is the first stage's width (doubled per stage).
    ``patch_size`` and ``window_size`` are (freq, time) and may differ per axis.
    """

    name: str = "vit_tiny_cpu"
    patch_size: list[int] = field(default_factory=list)
    window_size: list[int] = field(default_factory=list)
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    drop_path_rate: float = 0.0

    def validate(self) -> None:
        if self.name not in PRESETS:
            raise WearspecError(f"backbone.name: unknown backbone {self.name!r}; known: {', '.join(PRESETS)}")
        for key in ("patch_size", "window_size"):
            v = getattr(self, key)
            if v and (len(v) != 2 or any(not isinstance(i, int) or i < 1 for i in v)):
                raise WearspecError(f"backbone.{key}: expected [] or two integers ≥ 1 (freq, time), got {v!r}")
        if self.window_size and PRESETS[self.name]["arch"] != "swin":
            raise WearspecError(f"backbone.window_size: only Swin backbones have windows, {self.name!r} is a ViT")
        for key in ("embed_dim", "depth", "num_heads"):
            if getattr(self, key) < 0:
                raise WearspecError(f"backbone.{key}: expected 0 (preset value) or a positive integer, "
                                    f"got {getattr(self, key)}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise WearspecError(f"backbone.drop_path_rate: expected a number in [0, 1), got {self.drop_path_rate}")
        r = self.resolved()
        if r["embed_dim"] % _first(r["num_heads"]):
            raise WearspecError(f"backbone.num_heads: embed_dim {r['embed_dim']} is not divisible by "
                                f"num_heads {_first(r['num_heads'])}")

    def resolved(self) -> dict:
        """The preset with this config's overrides applied (a new dict)."""
        p = dict(PRESETS[self.name])
        swin = p["arch"] == "swin"
        if self.embed_dim:
            p["embed_dim"] = self.embed_dim
        if self.depth:
            p["depth"] = (self.depth,) * len(p["depth"]) if swin else self.depth
        if self.num_heads:
            p["num_heads"] = tuple(self.num_heads * 2 ** i for i in range(len(p["depth"]))) if swin else self.num_heads
        if self.patch_size:
            p["patch"] = tuple(self.patch_size)
        if swin and self.window_size:
            p["window"] = tuple(self.window_size)
        return p


def _first(v) -> int:
    return v[0] if isinstance(v, (tuple, list)) else v


@dataclass
class BackboneOutput:
    """``pooled`` (B, D): ViT final-norm CLS token, Swin mean of the normalised last-stage tokens;
    ``tokens`` (B, h·w, Dt): last-stage patch tokens (no CLS), row-major over (freq, time);
    ``grid`` (h, w): their grid, h along frequency, w along time."""

    pooled: Tensor
    tokens: Tensor
    grid: tuple[int, int]


class SpectrogramBackbone(nn.Module):
    """A timm ViT or Swin (``self.model``, ``num_classes=0``) for (B, C, F, N) spectrograms.

    Attributes: ``arch`` ("vit" | "swin"), ``embed_dim`` (D of ``pooled``), ``token_dim`` (Dt of
    ``tokens``), ``in_chans`` (C), ``input_size`` ((F, N) of a global crop), ``patch_size``,
    ``num_layers`` (transformer blocks in all), ``cfg`` (the :class:`BackboneConfig`).
    """

    def __init__(self, cfg: BackboneConfig, in_chans: int, input_size: tuple[int, int]):
        super().__init__()
        cfg.validate()
        if not (isinstance(in_chans, int) and in_chans >= 1):
            raise WearspecError(f"backbone: in_chans must be an integer ≥ 1, got {in_chans!r}")
        if len(input_size) != 2 or any(not isinstance(s, int) or s < 1 for s in input_size):
            raise WearspecError(f"backbone: input_size must be two integers ≥ 1 (F, N), got {input_size!r}")
        p = cfg.resolved()
        self.cfg, self.arch, self.in_chans = cfg, p["arch"], in_chans
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.patch_size: tuple[int, int] = p["patch"]
        padded = tuple(_ceil_to(s, k) for s, k in zip(self.input_size, self.patch_size))
        if self.arch == "vit":
            self.model = VisionTransformer(
                img_size=padded, patch_size=self.patch_size, in_chans=in_chans, num_classes=0, global_pool="token",
                embed_dim=p["embed_dim"], depth=p["depth"], num_heads=p["num_heads"], dynamic_img_size=True,
                drop_path_rate=cfg.drop_path_rate)
            self.embed_dim = self.token_dim = p["embed_dim"]
            self.num_layers = p["depth"]
            self.stage_dims = [p["embed_dim"]]
        else:
            self.model = SwinTransformer(
                img_size=padded, patch_size=self.patch_size, in_chans=in_chans, num_classes=0, global_pool="avg",
                embed_dim=p["embed_dim"], depths=p["depth"], num_heads=p["num_heads"], window_size=p["window"],
                strict_img_size=False, drop_path_rate=cfg.drop_path_rate)
            fused = use_fused_attn()  # the level timm uses for ViT (off when timm is set "exportable")
            for blk in self.model.modules():
                if type(blk) is SwinTransformerBlock:
                    blk.__class__ = _MaskedSwinBlock  # only `_attn` differs: pad before shift, mask the padding
                    blk.attn.fused_attn = fused  # timm marks SDPA for Swin "experimental" (off by default)
            self.stage_dims = [p["embed_dim"] * 2 ** i for i in range(len(p["depth"]))]
            self.embed_dim = self.token_dim = self.stage_dims[-1]
            self.num_layers = sum(p["depth"])
        self._depths = p["depth"] if self.arch == "swin" else None

    # ---- shapes ----------------------------------------------------------------------------------
    def token_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of ``tokens`` for an input of spectrogram size (F, N)."""
        h, w = (math.ceil(s / k) for s, k in zip(size, self.patch_size))
        for _ in range(len(self._depths) - 1 if self._depths else 0):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        return h, w

    def _prepare(self, x: Tensor) -> Tensor:
        """Check (B, C, F, N) and zero-pad F, N up to multiples of the patch size (high freq / late time)."""
        if not torch.jit.is_tracing():
            if x.dim() != 4 or x.shape[1] != self.in_chans:
                raise WearspecError(f"backbone: expected input (B, {self.in_chans}, F, N), got {tuple(x.shape)}")
        pad_f = (-x.shape[-2]) % self.patch_size[0]
        pad_n = (-x.shape[-1]) % self.patch_size[1]
        return F.pad(x, (0, pad_n, 0, pad_f)) if pad_f or pad_n else x

    # ---- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> BackboneOutput:
        """(B, C, F, N) → :class:`BackboneOutput` (pooled (B, D), tokens (B, h·w, Dt), grid (h, w))."""
        x = self._prepare(x)
        if self.arch == "vit":
            t = self.model.forward_features(x)  # (B, 1 + h·w, D), final norm applied
            grid = (x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1])
            return BackboneOutput(pooled=t[:, 0], tokens=t[:, 1:], grid=grid)
        t = self.model.forward_features(x)  # (B, h, w, D) NHWC, final norm applied
        grid = (t.shape[1], t.shape[2])
        tokens = t.flatten(1, 2)
        return BackboneOutput(pooled=tokens.mean(1), tokens=tokens, grid=grid)

    def forward_masked(self, x: Tensor, mask: Tensor, mask_token: Tensor) -> BackboneOutput:
        """ViT only: :meth:`forward` with the patch embeddings at ``mask`` (B, h, w) bool replaced by
        ``mask_token`` (D,) before the position embedding (iBOT's masked image modelling: the student predicts
        what the teacher sees at the hidden patches). The token is the caller's parameter, so the encoder's
        weights stay those of :meth:`forward`."""
        if self.arch != "vit":
            raise WearspecError("backbone: masked patches need a ViT (loss.mask_ratio > 0 with a Swin)")
        x = self._prepare(x)
        m = self.model
        t = m.patch_embed(x)  # (B, h, w, D): dynamic_img_size keeps the grid
        if mask.shape != t.shape[:3]:
            raise WearspecError(f"backbone: mask {tuple(mask.shape)} does not match the patch grid {tuple(t.shape[:3])}")
        t = torch.where(mask[..., None], mask_token.to(t.dtype), t)
        t = m.norm(m.blocks(m.norm_pre(m.patch_drop(m._pos_embed(t)))))
        return BackboneOutput(pooled=t[:, 0], tokens=t[:, 1:], grid=tuple(mask.shape[1:]))

    def probe_features(self, x: Tensor, n_last: int = 1, avgpool: bool = False) -> Tensor:
        """Linear-probe features (B, :meth:`probe_dim`), DINO/EsViT style.

        ViT: the CLS tokens of the last ``n_last`` blocks, each through the final norm, concatenated
        (oldest first); with ``avgpool`` also the mean patch token of the last block (after the norm).
        Swin: the mean token of each of the last ``n_last`` stages, concatenated; the last stage through the
        final norm, earlier ones through a parameter-free LayerNorm (they have no trained norm of their own).
        ``avgpool`` changes nothing for Swin (its features are average-pooled already).
        """
        self._check_n_last(n_last)
        x = self._prepare(x)
        if self.arch == "vit":  # [(patch tokens (B, L, D), prefix tokens (B, 1, D))] of the last n blocks
            inter = self.model.forward_intermediates(x, indices=n_last, norm=True, output_fmt="NLC",
                                                     intermediates_only=True, return_prefix_tokens=True)
            out = [prefix[:, 0] for _, prefix in inter]
            if avgpool:
                out.append(inter[-1][0].mean(1))
            return torch.cat(out, dim=-1)
        # [(B, D_i, h_i, w_i)] of the last n stages; timm applies the final norm to the last stage only
        inter = self.model.forward_intermediates(x, indices=n_last, norm=True, intermediates_only=True)
        feats = []
        for i, t in enumerate(inter):
            t = t.permute(0, 2, 3, 1)  # (B, h_i, w_i, D_i)
            if i < len(inter) - 1:
                t = F.layer_norm(t, t.shape[-1:])
            feats.append(t.mean(dim=(1, 2)))
        return torch.cat(feats, dim=-1)

    def probe_dim(self, n_last: int = 1, avgpool: bool = False) -> int:
        """Width of :meth:`probe_features` for these arguments."""
        self._check_n_last(n_last)
        if self.arch == "vit":
            return self.embed_dim * (n_last + int(avgpool))
        return sum(self.stage_dims[-n_last:])

    def _check_n_last(self, n_last: int) -> None:
        most = self.num_layers if self.arch == "vit" else len(self.stage_dims)
        if not (isinstance(n_last, int) and 1 <= n_last <= most):
            unit = "blocks" if self.arch == "vit" else "stages"
            raise WearspecError(f"probe n_last: expected 1…{most} (the backbone's {unit}), got {n_last!r}")

    def set_fused_attn(self, enabled: bool) -> None:
        """Switch every attention between SDPA (``F.scaled_dot_product_attention``, the default) and timm's
        explicit softmax path. Exporting a Swin with ``torch.onnx.export(dynamo=True)`` needs ``False``
        (torch 2.14 cannot decompose SDPA followed by timm's ``WindowAttention`` reshape); ViT exports
        either way."""
        set_fused_attn(self, enabled)

    # ---- optimiser helpers -----------------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """Names (as in ``named_parameters()``) that get no weight decay besides biases and norms:
        ViT ``model.pos_embed``, ``model.cls_token``; Swin every ``relative_position_bias_table``."""
        names = {n for n, _ in self.named_parameters()}
        if self.arch == "vit":
            return {f"model.{n}" for n in self.model.no_weight_decay()} & names
        return {n for n in names if n.endswith("relative_position_bias_table")}

    def layer_id(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise LR decay: 0 embeddings, i + 1 for block i (Swin: blocks
        numbered across stages; a stage's patch merging goes with the previous stage's last block), and
        ``num_layers + 1`` for the final norm and anything else (heads). Works with any name prefix
        (``backbone.model.blocks.3…``)."""
        name = "." + param_name
        if self.arch == "vit":
            if m := re.search(r"\.blocks\.(\d+)\.", name):
                return int(m.group(1)) + 1
            if re.search(r"\.(patch_embed|cls_token|pos_embed|reg_token|norm_pre)(\.|$)", name):
                return 0
            return self.num_layers + 1
        if m := re.search(r"\.layers\.(\d+)\.blocks\.(\d+)\.", name):
            return sum(self._depths[:int(m.group(1))]) + int(m.group(2)) + 1
        if m := re.search(r"\.layers\.(\d+)\.downsample\.", name):
            return sum(self._depths[:int(m.group(1))])
        if re.search(r"\.patch_embed\.", name):
            return 0
        return self.num_layers + 1


def build_backbone(cfg: BackboneConfig, in_chans: int, input_size: tuple[int, int]) -> SpectrogramBackbone:
    """A :class:`SpectrogramBackbone` for C = ``in_chans`` channels and global crops (F, N) = ``input_size``.
    Weights use timm's default init from the global torch RNG (deterministic under ``torch.manual_seed``)."""
    return SpectrogramBackbone(cfg, in_chans, tuple(input_size))


def _ceil_to(v: int, k: int) -> int:
    return -(-v // k) * k


# ---- Swin: pad, then shift, and mask the padding ----------------------------------------------------
class _MaskedSwinBlock(SwinTransformerBlock):
    """timm's Swin block with a window attention that is exact for any grid size.

    (B, H, W, C) → zero-pad to window multiples (Hp, Wp) → cyclic shift → window attention whose mask keeps
    each query to keys of its own shift region *and* of the real (unpadded) grid → reverse → crop to (H, W).
    With no padding this is the original Swin computation.
    """

    def _attn(self, x: Tensor) -> Tensor:
        h, w, c = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])  # static sizes (export: constants)
        (wh, ww), (sh, sw) = self.window_size, self.shift_size
        hp, wp = _ceil_to(h, wh), _ceil_to(w, ww)
        if hp != h or wp != w:
            x = _pad_grid(x, hp, wp)
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        mask = _window_mask(h, w, hp, wp, (wh, ww), (sh, sw), x)
        windows = window_partition(x, (wh, ww)).view(-1, wh * ww, c)  # (B·nW, wh·ww, C)
        out = self.attn(windows, mask=mask).view(-1, wh, ww, c)
        x = window_reverse(out, (wh, ww), hp, wp)  # (B, Hp, Wp, C)
        if sh or sw:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x[:, :h, :w].contiguous() if (hp != h or wp != w) else x


def _pad_grid(x: Tensor, hp: int, wp: int) -> Tensor:
    """(B, H, W, C) → (B, Hp, Wp, C), zeros below and right (masked in attention, so any value would do)."""
    return F.pad(x, (0, 0, 0, wp - x.shape[2], 0, hp - x.shape[1]))


def _window_mask(h: int, w: int, hp: int, wp: int, window: tuple[int, int], shift: tuple[int, int],
                 like: Tensor) -> Tensor | None:
    """Additive mask (nW, wh·ww, wh·ww) of 0 / -100 for the shifted, padded grid, or None if nothing to mask,
    on ``like``'s device and dtype. Cached in eager mode; built afresh (a constant of the graph) while
    tracing, compiling or exporting, so that no fake or traced tensor is ever cached."""
    if hp == h and wp == w and not (shift[0] or shift[1]):
        return None
    if type(like) is torch.Tensor and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
        return _cached_mask(h, w, hp, wp, window, shift, like.device, like.dtype)
    return _region_mask(h, w, hp, wp, window, shift).to(device=like.device, dtype=like.dtype)


@functools.lru_cache(maxsize=256)
def _cached_mask(h: int, w: int, hp: int, wp: int, window: tuple[int, int], shift: tuple[int, int],
                 device: torch.device, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False), torch.no_grad():  # a normal tensor even if first built in inference mode
        return _region_mask(h, w, hp, wp, window, shift).to(device=device, dtype=dtype)


def _region_mask(h: int, w: int, hp: int, wp: int, window: tuple[int, int], shift: tuple[int, int]) -> Tensor:
    """The mask, float32 on the CPU. Region labels live in the shifted frame: 3 × 3 shift regions (as in
    Swin) and label -1 for padding. A query attends only to keys with its own label; padded queries
    (discarded later) see padded keys only. Built in numpy: while tracing or exporting it is then one constant
    of the graph, not a chain of indexed assignments (ScatterND in ONNX, which TensorRT handles badly)."""
    (wh, ww), (sh, sw) = window, shift
    label = np.zeros((hp, wp), np.int64)
    cnt = 0
    for rows in ((0, hp - wh), (hp - wh, hp - sh), (hp - sh, hp)) if sh else ((0, hp),):
        for cols in ((0, wp - ww), (wp - ww, wp - sw), (wp - sw, wp)) if sw else ((0, wp),):
            label[rows[0]:rows[1], cols[0]:cols[1]] = cnt
            cnt += 1
    valid = np.zeros((hp, wp), bool)
    valid[:h, :w] = True
    valid = np.roll(valid, (-sh, -sw), axis=(0, 1))  # padding positions after the shift
    label[~valid] = -1
    # (nW, wh·ww) in window_partition's order: windows row by row, each window's cells row by row
    lw = label.reshape(hp // wh, wh, wp // ww, ww).transpose(0, 2, 1, 3).reshape(-1, wh * ww)
    same = lw[:, :, None] == lw[:, None, :]
    return torch.from_numpy(np.where(same, 0.0, -100.0).astype(np.float32))


def set_fused_attn(module: nn.Module, enabled: bool) -> None:
    """Set ``fused_attn`` (SDPA on, or timm's explicit softmax path) on every attention inside ``module``:
    timm's ViT/Swin attention, the students' and SepTr's."""
    for m in module.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = bool(enabled)

