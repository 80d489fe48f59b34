"""The encoder: raw windows (B, C, T) → :class:`SpectrogramFrontend` → (B, C, F, N) → backbone, as one module.

Its description (the ``"encoder"`` block of every checkpoint, :func:`encoder_meta`) holds only plain
values, so checkpoints load with ``torch.load(weights_only=True)``::

    {"frontend": frontend.config(), "backbone": to_dict(BackboneConfig), "in_chans": C, "input_size": [F, N],
     "channels": [...], "rate": Hz, "window": samples}

:func:`encoder_from_checkpoint` rebuilds the encoder from a pretraining checkpoint and loads the teacher or
student weights (or only the front end's normalisation, for a random-init baseline).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wearspec.config import from_dict, to_dict
from wearspec.data.frontend import SpectrogramFrontend
from wearspec.utils.checkpoint import load_checkpoint
from wearspec.errors import WearspecError
from wearspec.models.backbones import BackboneConfig, BackboneOutput, SpectrogramBackbone, build_backbone

RANDOM_SEED = 0  # backbone init of ``which="random"`` (and of every encoder_from_checkpoint build)
META_KEYS = ("frontend", "backbone", "in_chans", "input_size", "channels", "rate", "window")


class SpectrogramEncoder(nn.Module):
    """raw windows (B, C, T) → ``frontend`` → (B, C, F, N) → ``backbone`` → :class:`BackboneOutput`."""

    def __init__(self, frontend: SpectrogramFrontend, backbone: SpectrogramBackbone):
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone

    def forward(self, x_raw: Tensor) -> BackboneOutput:
        """(B, C, T) → pooled (B, D), tokens (B, h·w, Dt), grid (h, w)."""
        return self.backbone(self.frontend(x_raw))

    def probe_features(self, x_raw: Tensor, n_last: int = 1, avgpool: bool = False) -> Tensor:
        """(B, C, T) → (B, ``backbone.probe_dim(n_last, avgpool)``) linear-probe features."""
        return self.backbone.probe_features(self.frontend(x_raw), n_last=n_last, avgpool=avgpool)

    def probe_dim(self, n_last: int = 1, avgpool: bool = False) -> int:
        return self.backbone.probe_dim(n_last, avgpool)

    def no_weight_decay(self) -> set[str]:
        """The backbone's :meth:`~SpectrogramBackbone.no_weight_decay` names, as in this module's
        ``named_parameters()`` (the front end has no parameters)."""
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()}

    def layer_id(self, param_name: str) -> int:
        """The backbone's layer-wise LR decay depth of a parameter (any name prefix)."""
        return self.backbone.layer_id(param_name)

    def meta(self, channels: list[str], rate: float, window: int) -> dict[str, Any]:
        """The checkpoint's ``"encoder"`` block for this encoder (see :func:`encoder_meta`)."""
        return encoder_meta(self.frontend.config(), self.backbone.cfg, self.backbone.in_chans,
                            self.backbone.input_size, channels, rate, window)

    @classmethod
    def from_meta(cls, meta: dict[str, Any], seed: int | None = None) -> "SpectrogramEncoder":
        """Build from an ``"encoder"`` block: the front end from its config (statistics unfitted until a
        ``load_state_dict``), the backbone randomly initialised (with ``seed`` if given, without touching
        the global RNG)."""
        if not isinstance(meta, dict):
            raise WearspecError(f"encoder meta: expected a mapping, got {type(meta).__name__}")
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise WearspecError(f"encoder meta: missing key {missing[0]!r} (expected {', '.join(META_KEYS)})")
        if not isinstance(meta["frontend"], dict) or not isinstance(meta["backbone"], dict):
            raise WearspecError("encoder meta: 'frontend' and 'backbone' must be mappings")
        size = meta["input_size"]
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise WearspecError(f"encoder meta: input_size must be [F, N], got {size!r}")
        frontend = SpectrogramFrontend.from_config(meta["frontend"])
        cfg = from_dict(BackboneConfig, meta["backbone"], prefix="backbone.")
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            backbone = build_backbone(cfg, meta["in_chans"], (size[0], size[1]))
        return cls(frontend, backbone)


def encoder_meta(frontend_cfg: dict[str, Any], backbone_cfg: BackboneConfig, in_chans: int,
                 input_size: tuple[int, int] | list[int], channels: list[str], rate: float,
                 window: int) -> dict[str, Any]:
    """The ``"encoder"`` block: plain dicts/lists/str/int/float only (``weights_only``-loadable)."""
    return {"frontend": dict(frontend_cfg), "backbone": to_dict(backbone_cfg), "in_chans": int(in_chans),
            "input_size": [int(input_size[0]), int(input_size[1])], "channels": [str(c) for c in channels],
            "rate": float(rate), "window": int(window)}


def encoder_from_checkpoint(path: str | os.PathLike, which: str = "teacher") -> tuple[SpectrogramEncoder, dict]:
    """Rebuild the encoder of a pretraining checkpoint → (encoder in eval mode, its ``"encoder"`` block).

    ``which``: ``"teacher"`` (the EMA teacher, DINO's choice for evaluation), ``"student"``, or
    ``"random"``: the front end's state (normalisation statistics) from the teacher, the backbone randomly
    initialised with seed :data:`RANDOM_SEED` — the "no pretraining" baseline of a probe.
    Every problem is a one-line :class:`WearspecError` naming the file.
    """
    if which not in ("teacher", "student", "random"):
        raise WearspecError(f"{path}: which must be 'teacher', 'student' or 'random', got {which!r}")
    path = Path(path)
    ckpt = load_checkpoint(path)  # safe load; format/version checks; errors name the file
    meta = ckpt.get("encoder")
    if not isinstance(meta, dict):
        raise WearspecError(f"{path}: no 'encoder' block (the model description) in this checkpoint")
    source = "teacher" if which == "random" else which
    state = ckpt.get(source)
    if not isinstance(state, dict):
        raise WearspecError(f"{path}: no '{source}' weights in this checkpoint (stage {ckpt.get('stage')!r})")
    try:
        encoder = SpectrogramEncoder.from_meta(meta, seed=RANDOM_SEED)
    except WearspecError as e:
        raise WearspecError(f"{path}: 'encoder' block: {e}") from None
    except (TypeError, ValueError, KeyError, AssertionError) as e:
        raise WearspecError(f"{path}: 'encoder' block describes no buildable encoder ({e})") from None
    target: nn.Module = encoder
    if which == "random":
        target = encoder.frontend
        state = {k[len("frontend."):]: v for k, v in state.items() if isinstance(k, str) and k.startswith("frontend.")}
    problem = state_mismatch(target, state)
    if problem:
        raise WearspecError(f"{path}: '{source}' weights do not fit the encoder described in 'encoder': {problem}")
    target.load_state_dict(state)
    return encoder.eval(), meta


def state_mismatch(module: nn.Module, state: dict) -> str | None:
    """The first missing key, unexpected key or shape mismatch of ``state`` for ``module``, or None."""
    own = module.state_dict()
    for k in own:
        if k not in state:
            return f"missing key {k!r}" + _more(sum(k2 not in state for k2 in own) - 1)
    for k in state:
        if k not in own:
            return f"unexpected key {k!r}" + _more(sum(k2 not in own for k2 in state) - 1)
    for k, v in own.items():
        got = state[k]
        if not isinstance(got, Tensor):
            return f"{k!r} is a {type(got).__name__}, not a tensor"
        if k.endswith(("norm_mean", "norm_std")) and v.numel() == 0:  # unfitted front end: resized on load
            continue
        if got.shape != v.shape:
            return f"shape of {k!r} is {tuple(got.shape)} in the checkpoint, {tuple(v.shape)} in the model"
    return None


def _more(n: int) -> str:
    return f" (and {n} more)" if n > 0 else ""
