"""Fine-tuning students with class and distillation heads (DeiT / DeSepTr) for spectrograms (B, C, F, N).

Architectures (:class:`StudentConfig` ``arch``):

* ``vit`` — timm's DeiT :class:`~timm.models.deit.VisionTransformerDistilled` built with the settings of
  :class:`~wearspec.models.backbones.SpectrogramBackbone` (``dynamic_img_size``: per-forward bicubic
  resampling of the position embedding to the input's non-square grid; zero padding of F, N up to patch
  multiples). The sequence is ``[cls, dist, patches…]``: the distillation token takes part in every
  attention and gets its own position-embedding row; ``head`` reads the final-norm class token,
  ``head_dist`` the distillation token. ``distillation=False`` builds timm's plain ViT (the pretraining
  architecture). Options: ``spt`` (shifted patch tokenization) and ``lsa`` (locality self-attention) of
  Lee et al., "Vision Transformer for Small-Size Datasets" (2021); ``teacher_stem``.
* ``swin`` — :class:`SpectrogramBackbone` (Swin); its pooled feature feeds both heads (Swin has no
  sequence to add a token to).
* ``septr`` — :class:`~wearspec.models.septr.SepTr` with a distillation token (see that module).
* ``cnn`` — the teacher's ResNet-18 trained as a student (a baseline without a transformer); pooled
  features feed both heads.

``teacher_stem`` (DeSepTr; ``septr`` and ``vit``): a frozen copy of the CNN teacher's stem + ``layer1``
(:meth:`ResNetTeacher.embed`, kept in eval mode, run under ``no_grad``, parameters ``requires_grad=False``)
turns (B, C, F, N) into (B, Ce, F', N'); the student's own trainable patch embedding projects it to the
token grid: for the ViT a 1×1 convolution (patch (1, 1), the backbone's ``patch_size`` is not used; the ViT
gets a position embedding for the (F', N') grid), for SepTr its ``septr.patch_size`` convolution over the
teacher's feature map ([1, 1], one token per feature-map cell, is the paper's 1×1 projection; [2, 2] gives
a 4× shorter grid of 2 × 2 feature-map patches). The copy is part of
the student's state dict, so a saved student is self-contained.

Head fusion (:meth:`Student.predict_logits`): ``mean`` averages the two heads' *logits*, as DeiT's and
timm's code do (the paper says softmax outputs; the ranking almost never differs, and a logit output stays
fit for softmax, temperature scaling and losses); ``cls`` / ``dist`` return one head; no dist head: ``cls``.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import Attention, VisionTransformer, init_weights_vit_timm
from torch import Tensor, nn

from wearspec.config import from_dict
from wearspec.errors import WearspecError
from wearspec.models.backbones import PRESETS, BackboneConfig, SpectrogramBackbone, set_fused_attn
from wearspec.models.cnn import CNNConfig, ResNetTeacher
from wearspec.models.septr import SepTr, SepTrConfig
from wearspec.utils.checkpoint import load_checkpoint

ARCHS = ("vit", "swin", "septr", "cnn")
FUSIONS = ("mean", "cls", "dist")


@dataclass
class StudentConfig:
    """The fine-tuned model. ``backbone`` is used by ``vit``/``swin`` (its preset's arch must equal
    ``arch``), ``septr`` by ``septr``, ``cnn`` by ``cnn`` (the CNN *student*; the teacher has its own)."""

    arch: str = "vit"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    septr: SepTrConfig = field(default_factory=SepTrConfig)
    cnn: CNNConfig = field(default_factory=CNNConfig)
    distillation: bool = True  # add a distillation token / head
    teacher_stem: bool = False  # DeSepTr: frozen CNN-teacher stem + layer1 as the patch embedding (septr, vit)
    spt: bool = False  # shifted patch tokenization (vit)
    lsa: bool = False  # locality self-attention: diagonal mask + learnable temperature (vit)
    head_fusion: str = "mean"  # inference: mean | cls | dist

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise WearspecError(f"student.arch: expected one of {', '.join(ARCHS)}, got {self.arch!r}")
        for sub in (self.backbone, self.septr, self.cnn):
            sub.validate()
        if self.arch in ("vit", "swin") and PRESETS[self.backbone.name]["arch"] != self.arch:
            raise WearspecError(f"student.backbone.name: {self.backbone.name!r} is a "
                                f"{PRESETS[self.backbone.name]['arch']}, but student.arch is {self.arch!r}")
        if self.teacher_stem and self.arch not in ("septr", "vit"):
            raise WearspecError(f"student.teacher_stem: only septr and vit students take it, not {self.arch!r}")
        for key in ("spt", "lsa"):
            if getattr(self, key) and self.arch != "vit":
                raise WearspecError(f"student.{key}: only for vit students, not {self.arch!r}")
        if self.spt and self.teacher_stem:
            raise WearspecError("student.spt: shifted patch tokenization is a patch embedding; it cannot be "
                                "combined with teacher_stem (the teacher's stem is the embedding)")
        if self.head_fusion not in FUSIONS:
            raise WearspecError(f"student.head_fusion: expected mean, cls or dist, got {self.head_fusion!r}")
        if self.head_fusion == "dist" and not self.distillation:
            raise WearspecError("student.head_fusion: 'dist' needs distillation=true (there is no dist head)")


@dataclass
class StudentOutput:
    """``cls`` (B, K) logits of the class head; ``dist`` (B, K) of the distillation head, or None."""

    cls: Tensor
    dist: Tensor | None


# ---- building blocks ---------------------------------------------------------------------------------
class FrozenTeacherStem(nn.Module):
    """A frozen copy of :meth:`ResNetTeacher.embed` (stem + ``layer1``): (B, C, F, N) → (B, Ce, F', N').
    Always in eval mode (BatchNorm uses the teacher's running statistics), no gradients."""

    def __init__(self, teacher: ResNetTeacher):
        super().__init__()
        n = teacher.net
        self.layers = copy.deepcopy(nn.Sequential(OrderedDict(
            conv1=n.conv1, bn1=n.bn1, act1=n.act1, maxpool=n.maxpool, layer1=n.layer1)))
        self.layers.requires_grad_(False)
        self.in_chans, self.out_chans = teacher.in_chans, teacher.embed_channels
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenTeacherStem":
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.layers(x)


class ShiftedPatchTokenization(nn.Module):
    """SPT (Lee et al. 2021): (B, C, F, N) with F, N multiples of the patch → tokens (B, h, w, D) (NHWC,
    as timm's dynamic-size patch embedding).

    The input is shifted by half a patch, s = (max(1, pf // 2), max(1, pn // 2)), in the 4 diagonal
    directions (content moved by (-sf, -sn), (-sf, +sn), (+sf, -sn), (+sf, +sn): up-early, up-late,
    down-early, down-late; vacated bins are zero, content shifted out is dropped) and concatenated after the
    original along channels → 5·C channels (:meth:`shifted`); each (pf, pn) patch of all 5·C channels is
    flattened (channel, freq, time order), LayerNorm-ed and linearly projected to D.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: tuple[int, int], grid_size: tuple[int, int]):
        super().__init__()
        self.patch_size, self.grid_size = tuple(patch_size), tuple(grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans, self.out_chans = in_chans, 5 * in_chans
        sf, sn = max(1, patch_size[0] // 2), max(1, patch_size[1] // 2)
        self.shifts = ((-sf, -sn), (-sf, sn), (sf, -sn), (sf, sn))
        dim = self.out_chans * patch_size[0] * patch_size[1]
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, embed_dim)

    def shifted(self, x: Tensor) -> Tensor:
        """(B, C, F, N) → (B, 5·C, F, N): the input, then its 4 diagonal shifts; channel block i + 1 is
        ``out[f, n] = x[f - df, n - dn]`` for shift (df, dn) = ``shifts[i]`` (zero outside)."""
        f, n = x.shape[-2], x.shape[-1]
        out = [x]
        for df, dn in self.shifts:
            p = F.pad(x, (max(dn, 0), max(-dn, 0), max(df, 0), max(-df, 0)))
            out.append(p[..., max(-df, 0):max(-df, 0) + f, max(-dn, 0):max(-dn, 0) + n])
        return torch.cat(out, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        s, (pf, pn) = self.shifted(x), self.patch_size
        (b, c, _, _), h, w = s.shape, s.shape[2] // pf, s.shape[3] // pn
        s = s.reshape(b, c, h, pf, w, pn).permute(0, 2, 4, 1, 3, 5).reshape(b, h, w, c * pf * pn)
        return self.proj(self.norm(s))


class LocalitySelfAttention(Attention):
    """LSA (Lee et al. 2021): timm's :class:`Attention` with the diagonal of the attention matrix masked
    (a token never attends to itself, class tokens included) and a learnable temperature: logits are
    ``exp(log_scale) · q·kᵀ`` with ``log_scale`` a learned scalar per layer, initialised to
    ``log(1 / sqrt(head_dim))`` (log-parametrised so the scale stays positive). Built by :meth:`convert`."""

    @classmethod
    def convert(cls, attn: Attention) -> "LocalitySelfAttention":
        """Turn a timm ``Attention`` into LSA in place (keeps its weights) and return it."""
        if getattr(attn, "gate", None) is not None:
            raise WearspecError("student.lsa: gated attention is not supported")
        attn.__class__ = cls
        attn.log_scale = nn.Parameter(torch.tensor(math.log(attn.head_dim ** -0.5), device=attn.qkv.weight.device))
        return attn

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        return q * self.log_scale.exp().to(q.dtype), k, v  # temperature folded into q: SDPA scale = 1

    def _bias(self, n: int, like: Tensor, attn_mask: Tensor | None) -> Tensor:
        idx = torch.arange(n, device=like.device)
        eye = idx[:, None] == idx[None, :]  # (not torch.eye: its ONNX EyeLike(bool) has no ORT kernel)
        bias = torch.zeros(n, n, dtype=like.dtype, device=like.device).masked_fill(eye, float("-inf"))
        if attn_mask is not None:
            bias = bias.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else bias + attn_mask
        return bias

    def attention_weights(self, x: Tensor) -> Tensor:
        """The softmax attention matrix (B, heads, L, L) for input tokens (B, L, D) (no dropout)."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) + self._bias(x.shape[1], q, None)).softmax(dim=-1)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if is_causal:
            raise WearspecError("student.lsa: causal attention is not supported")
        b, n, _ = x.shape
        q, k, v = self._qkv(x)
        bias = self._bias(n, q, attn_mask)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            x = self.attn_drop((q @ k.transpose(-2, -1) + bias).softmax(dim=-1)) @ v
        x = self.norm(x.transpose(1, 2).reshape(b, n, self.attn_dim))
        return self.proj_drop(self.proj(x))


class ViTStudentBackbone(nn.Module):
    """(B, C, F, N) → (class representation (B, D), distillation representation (B, D) or None).

    ``model`` is timm's :class:`VisionTransformerDistilled` (``distillation``) or :class:`VisionTransformer`,
    ``num_classes=0``, built as :class:`SpectrogramBackbone` builds its ViT (so ``model.*`` names match a
    pretraining checkpoint's ``backbone.model.*``). ``patch_size`` overrides the preset's (teacher stem: 1×1).
    """

    def __init__(self, cfg: BackboneConfig, in_chans: int, input_size: tuple[int, int], distillation: bool,
                 spt: bool = False, lsa: bool = False, patch_size: tuple[int, int] | None = None):
        super().__init__()
        p = cfg.resolved()
        self.cfg, self.in_chans, self.distillation = cfg, in_chans, bool(distillation)
        self.patch_size = tuple(patch_size or p["patch"])
        padded = tuple(-(-s // k) * k for s, k in zip(input_size, self.patch_size))
        cls = VisionTransformerDistilled if distillation else VisionTransformer
        self.model = cls(img_size=padded, patch_size=self.patch_size, in_chans=in_chans, num_classes=0,
                         global_pool="token", embed_dim=p["embed_dim"], depth=p["depth"], num_heads=p["num_heads"],
                         dynamic_img_size=True, drop_path_rate=cfg.drop_path_rate)
        self.embed_dim, self.num_layers = p["embed_dim"], p["depth"]
        self.grid = tuple(self.model.patch_embed.grid_size)
        if spt:
            self.model.patch_embed = ShiftedPatchTokenization(in_chans, self.embed_dim, self.patch_size, self.grid)
            init_weights_vit_timm(self.model.patch_embed.proj)  # trunc-normal σ 0.02, zero bias (timm ViT)
        if lsa:
            for blk in self.model.blocks:
                LocalitySelfAttention.convert(blk.attn)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        pad_f, pad_n = (-x.shape[-2]) % self.patch_size[0], (-x.shape[-1]) % self.patch_size[1]
        if pad_f or pad_n:
            x = F.pad(x, (0, pad_n, 0, pad_f))
        t = self.model.forward_features(x)  # (B, P + h·w, D), final norm applied
        return t[:, 0], (t[:, 1] if self.distillation else None)

    def no_weight_decay(self) -> set[str]:
        names = {n for n, _ in self.named_parameters()}
        own = {f"model.{n}" for n in self.model.no_weight_decay()}
        return (own | {n for n in names if n.endswith(".log_scale")}) & names

    def layer_id(self, param_name: str) -> int:
        name = "." + param_name
        if m := re.search(r"\.blocks\.(\d+)\.", name):
            return int(m.group(1)) + 1
        if re.search(r"\.(patch_embed|cls_token|dist_token|pos_embed|reg_token|norm_pre)(\.|$)", name):
            return 0
        return self.num_layers + 1


# ---- the student ---------------------------------------------------------------------------------------
class Student(nn.Module):
    """Spectrograms (B, C, F, N) → :class:`StudentOutput` (class and distillation logits).

    Modules: ``stem`` (:class:`FrozenTeacherStem` or None), ``backbone`` (ViT: :class:`ViTStudentBackbone`;
    Swin: :class:`SpectrogramBackbone`; SepTr: :class:`SepTr` without heads; CNN: :class:`ResNetTeacher`
    without classifier), ``head`` and ``head_dist`` (``nn.Linear(D, K)``, trunc-normal σ 0.02, zero bias;
    ``head_dist`` is None without distillation). Attributes: ``cfg``, ``arch``, ``in_chans``,
    ``input_size``, ``num_classes``, ``feature_dim`` (D), ``num_layers`` (for layer-wise LR decay).
    """

    def __init__(self, cfg: StudentConfig, in_chans: int, input_size: tuple[int, int], num_classes: int,
                 teacher: ResNetTeacher | None = None):
        super().__init__()
        cfg.validate()
        for key, v in (("in_chans", in_chans), ("num_classes", num_classes)):
            if not (isinstance(v, int) and v >= 1):
                raise WearspecError(f"student: {key} must be an integer ≥ 1, got {v!r}")
        if len(input_size) != 2 or any(not isinstance(s, int) or s < 1 for s in input_size):
            raise WearspecError(f"student: input_size must be two integers ≥ 1 (F, N), got {input_size!r}")
        self.cfg, self.arch, self.in_chans, self.num_classes = cfg, cfg.arch, in_chans, num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.stem: FrozenTeacherStem | None = None
        size, chans = self.input_size, in_chans
        if cfg.teacher_stem:
            if teacher is None:
                raise WearspecError("student.teacher_stem: build_student needs the trained CNN teacher")
            if teacher.in_chans != in_chans:
                raise WearspecError(f"student.teacher_stem: the teacher takes {teacher.in_chans} channels, "
                                    f"the student {in_chans}")
            self.stem = FrozenTeacherStem(teacher)
            size, chans = teacher.embed_grid(self.input_size), teacher.embed_channels
        if cfg.arch == "vit":
            self.backbone = ViTStudentBackbone(cfg.backbone, chans, size, cfg.distillation, spt=cfg.spt,
                                               lsa=cfg.lsa, patch_size=(1, 1) if cfg.teacher_stem else None)
        elif cfg.arch == "swin":
            self.backbone = SpectrogramBackbone(cfg.backbone, chans, size)
        elif cfg.arch == "septr":
            self.backbone = SepTr(cfg.septr, chans, size, num_classes=0, distillation=cfg.distillation)
        else:
            self.backbone = ResNetTeacher(chans, num_classes, size, cfg.cnn.width, cfg.cnn.small_stem,
                                          cfg.cnn.drop_rate)
            self.backbone.net.reset_classifier(0)  # heads are the student's; forward → pooled features
        dim = self.backbone.num_features if cfg.arch == "cnn" else self.backbone.embed_dim
        self.feature_dim, self.num_layers = dim, self.backbone.num_layers
        self.head = nn.Linear(dim, num_classes)
        self.head_dist = nn.Linear(dim, num_classes) if cfg.distillation else None
        for h in (self.head, self.head_dist):
            if h is not None:
                trunc_normal_(h.weight, std=0.02)
                nn.init.zeros_(h.bias)

    # ---- forward ---------------------------------------------------------------------------------
    def features(self, spec: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, C, F, N) → (class features (B, D), distillation features (B, D) or None)."""
        if not torch.jit.is_tracing() and (spec.dim() != 4 or spec.shape[1] != self.in_chans):
            raise WearspecError(f"student: expected spectrograms (B, {self.in_chans}, F, N), got {tuple(spec.shape)}")
        x = self.stem(spec) if self.stem is not None else spec
        if self.arch in ("vit", "septr"):
            c, d = self.backbone(x) if self.arch == "vit" else self.backbone.forward_features(x)
        else:
            c = self.backbone(x).pooled if self.arch == "swin" else self.backbone(x)
            d = c if self.head_dist is not None else None
        return c, d

    def forward(self, spec: Tensor) -> StudentOutput:
        """(B, C, F, N) → :class:`StudentOutput` (cls (B, K), dist (B, K) or None)."""
        c, d = self.features(spec)
        return StudentOutput(cls=self.head(c), dist=self.head_dist(d) if d is not None else None)

    def predict_logits(self, spec: Tensor) -> Tensor:
        """(B, C, F, N) → (B, K) logits combined per ``cfg.head_fusion`` (``mean``: average of the two
        heads' logits; see the module docstring)."""
        return self.fuse(self(spec))

    def set_fused_attn(self, enabled: bool) -> None:
        """SDPA (default) or the explicit softmax path in every attention (Swin ONNX ``dynamo=True`` export
        needs ``False``; see :meth:`SpectrogramBackbone.set_fused_attn`)."""
        set_fused_attn(self, enabled)

    def fuse(self, out: StudentOutput) -> Tensor:
        """Combine a :class:`StudentOutput` per ``cfg.head_fusion`` (cls alone when there is no dist head)."""
        if out.dist is None or self.cfg.head_fusion == "cls":
            return out.cls
        if self.cfg.head_fusion == "dist":
            return out.dist
        return (out.cls + out.dist) / 2

    # ---- optimiser helpers -----------------------------------------------------------------------
    def head_parameters(self) -> Iterator[nn.Parameter]:
        """``head`` and ``head_dist`` parameters."""
        yield from (p for h in (self.head, self.head_dist) if h is not None for p in h.parameters())

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter except the heads and the frozen teacher stem (whatever their ``requires_grad``,
        so freezing and unfreezing with :meth:`set_backbone_trainable` see the same set)."""
        return self.backbone.parameters()

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze (``False``) or unfreeze the backbone, e.g. heads only for the first k epochs."""
        for p in self.backbone_parameters():
            p.requires_grad_(trainable)

    def no_weight_decay(self) -> set[str]:
        """Names (as in ``named_parameters()``) that get no weight decay besides biases and norms: position
        embeddings, class / distillation tokens, Swin relative position bias tables, LSA temperatures."""
        names = {n for n, _ in self.named_parameters()}
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()} & names

    def layer_id(self, param_name: str) -> int:
        """Layer-wise LR decay depth: 0 embeddings (and the frozen stem), 1…``num_layers`` blocks (CNN:
        stages), ``num_layers + 1`` final norm and heads."""
        if param_name.startswith("stem."):
            return 0
        if param_name.startswith(("head.", "head_dist.")):
            return self.num_layers + 1
        return self.backbone.layer_id(param_name)


def build_student(cfg: StudentConfig, in_chans: int, input_size: tuple[int, int], num_classes: int,
                  teacher: ResNetTeacher | None = None) -> Student:
    """A :class:`Student` for C = ``in_chans`` spectrogram channels of size (F, N) = ``input_size`` and K =
    ``num_classes``; ``teacher`` (trained) is required for ``cfg.teacher_stem``. Weights use the global torch
    RNG (deterministic under ``torch.manual_seed``)."""
    return Student(cfg, in_chans, tuple(input_size), num_classes, teacher)


# ---- initialisation from a pretraining checkpoint ------------------------------------------------------
def init_from_pretrain(student: Student, checkpoint: str | os.PathLike | dict, which: str = "teacher") -> dict:
    """Load a ``wearspec pretrain`` checkpoint's backbone (``which``: ``"teacher"`` EMA or ``"student"``)
    into a ViT or Swin student's ``backbone``; heads stay as initialised. ``checkpoint``: a file (or run
    folder) or the loaded checkpoint dict.

    Returns ``{"loaded": n, "skipped": [checkpoint keys not used], "new": [student keys left at their
    init], "from_cls": [...], "resampled": [...]}`` (keys as in ``student.backbone.state_dict()``).

    * ViT distillation token: ``model.dist_token`` ← the pretrained ``cls_token`` and its position-embedding
      row ← the class token's row (``from_cls``). The two tokens start identical in content and position;
      their heads differ (random) and the losses differ, so they separate from the first step. A random
      (trunc-normal) token would instead enter a pretrained network as an out-of-distribution input.
    * The patch part of the ViT position embedding is bicubically resampled (timm's
      ``resample_abs_pos_embed``) when the student's grid differs from the pretraining grid (``resampled``).
    * SPT or teacher-stem students replace the patch embedding: the checkpoint's ``model.patch_embed.*`` are
      ``skipped`` and the student's own stay ``new``; LSA temperatures are ``new``.

    Errors (one-line :class:`WearspecError` naming the file): another architecture (a Swin checkpoint into
    a ViT student…), another input channel count (the checkpoint's ``"encoder"`` block ``in_chans``),
    another embedding width, and any other missing / unexpected key or shape mismatch (the first one).
    """
    name = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "<checkpoint dict>"
    if which not in ("teacher", "student"):
        raise WearspecError(f"{name}: which must be 'teacher' or 'student', got {which!r}")
    if student.arch not in ("vit", "swin"):
        raise WearspecError(f"{name}: only vit and swin students load pretrained backbones, not {student.arch!r}")
    ckpt = load_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    src, ck_size, rp = _pretrained_backbone(student, ckpt, name, which)
    own = student.backbone.state_dict()
    info: dict[str, Any] = {"loaded": 0, "skipped": [], "new": [], "from_cls": [], "resampled": []}
    new_state = dict(own)
    replaced_embed = student.arch == "vit" and (student.stem is not None or student.cfg.spt)

    def fail(problem: str) -> WearspecError:
        return WearspecError(f"{name}: '{which}' backbone does not fit the student: {problem}")

    for k, v in src.items():
        if replaced_embed and k.startswith("model.patch_embed."):
            info["skipped"].append(k)
            continue
        if k not in own:
            raise fail(f"unexpected key 'backbone.{k}'")
        if not isinstance(v, Tensor):
            raise fail(f"'backbone.{k}' is a {type(v).__name__}, not a tensor")
        elif student.arch == "vit" and k == "model.pos_embed":
            v = _student_pos_embed(v, ck_size, rp["patch"], student.backbone, info, fail)
        elif v.shape != own[k].shape:
            raise fail(f"shape of 'backbone.{k}' is {tuple(v.shape)} in the checkpoint, "
                       f"{tuple(own[k].shape)} in the student")
        new_state[k] = v.to(dtype=own[k].dtype)
        info["loaded"] += 1
    for k in own:
        if k in src and not (replaced_embed and k.startswith("model.patch_embed.")):
            continue
        if k == "model.dist_token" and "model.cls_token" in src:
            new_state[k] = src["model.cls_token"].to(own[k].dtype).clone()
            info["from_cls"].append(k)
        elif k.endswith(".log_scale") or (replaced_embed and k.startswith("model.patch_embed.")):
            info["new"].append(k)
        else:
            raise fail(f"missing key 'backbone.{k}'")
    student.backbone.load_state_dict(new_state)
    return info


def _pretrained_backbone(student: Student, ckpt: Any, name: str, which: str) -> tuple[dict, list[int], dict]:
    """A pretrain checkpoint's ``which`` backbone checked against the student: (weights, input size, settings)."""
    meta, state = (ckpt.get("encoder"), ckpt.get(which)) if isinstance(ckpt, dict) else (None, None)
    if not isinstance(meta, dict):
        raise WearspecError(f"{name}: no 'encoder' block (the model description) in this checkpoint")
    if not isinstance(state, dict):
        raise WearspecError(f"{name}: no '{which}' weights in this checkpoint (stage {ckpt.get('stage')!r})")
    try:
        bcfg = from_dict(BackboneConfig, meta["backbone"], prefix="backbone.")
        rp, ck_chans, ck_size = bcfg.resolved(), int(meta["in_chans"]), [int(s) for s in meta["input_size"]]
    except (WearspecError, KeyError, TypeError, ValueError) as e:
        raise WearspecError(f"{name}: 'encoder' block describes no backbone ({type(e).__name__}: {e})") from None
    if rp["arch"] != student.arch:
        raise WearspecError(f"{name}: the checkpoint holds a {rp['arch']} backbone ({bcfg.name!r}); the student "
                            f"is a {student.arch} ({student.cfg.backbone.name!r})")
    if ck_chans != student.in_chans:
        raise WearspecError(f"{name}: the checkpoint was pretrained on {ck_chans} input channels "
                            f"(encoder.in_chans); the student takes {student.in_chans}")
    own_dim = student.backbone.embed_dim if student.arch == "vit" else student.backbone.stage_dims[0]
    if rp["embed_dim"] != own_dim:
        raise WearspecError(f"{name}: embed_dim {rp['embed_dim']} in the checkpoint, {own_dim} in the student")
    src = {k[len("backbone."):]: v for k, v in state.items() if isinstance(k, str) and k.startswith("backbone.")}
    if not src:
        raise WearspecError(f"{name}: no backbone.* weights under '{which}'")
    return src, ck_size, rp


def _student_pos_embed(pos: Tensor, ck_size: list[int], ck_patch, backbone: ViTStudentBackbone, info: dict,
                       fail) -> Tensor:
    """Checkpoint position embedding (1, 1 + h0·w0, D) → the student's (1, P + h·w, D): class row, a copy of
    it for the distillation token, the patch rows resampled to the student's grid if it differs."""
    h0, w0 = (-(-s // k) for s, k in zip(ck_size, ck_patch))
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[1] != 1 + h0 * w0:
        raise fail(f"shape of 'backbone.model.pos_embed' is {tuple(pos.shape)} in the checkpoint, expected "
                   f"(1, {1 + h0 * w0}, D) for its {h0} × {w0} patch grid")
    cls_row, patches = pos[:, :1], pos[:, 1:]
    if (h0, w0) != backbone.grid:
        patches = resample_abs_pos_embed(patches, new_size=list(backbone.grid), old_size=[h0, w0],
                                         num_prefix_tokens=0)
        info["resampled"].append("model.pos_embed")
    if backbone.distillation:
        info["from_cls"].append("model.pos_embed[1] (dist row)")
    return torch.cat([cls_row] * (2 if backbone.distillation else 1) + [patches], dim=1)
