"""Per-iteration schedules, AdamW parameter groups and the EMA teacher update.

Every schedule is a float64 ``np.ndarray`` with one value per optimisation step (index it with the global
step, which the checkpoint saves): ``lr = lr_schedule(5e-4, 1024, total_steps, warmup_steps)[step]``.

* :func:`cosine_schedule`: linear warm-up then a half-cosine from ``base`` towards ``final``.
* :func:`lr_schedule` (linear scaling rule), :func:`wd_schedule` (0.04 → 0.4),
  :func:`momentum_schedule` (teacher EMA 0.996 → 1), :func:`teacher_temperature_schedule`
  (0.04 → 0.04–0.07 over the first epochs, then constant).
* :func:`param_groups`: AdamW groups without weight decay on biases, norms and named tokens, each tagged
  with ``apply_wd`` and ``lr_scale`` so the training harness sets the step's values with
  ``g["lr"] = lr[step] * g["lr_scale"]`` and ``g["weight_decay"] = wd[step] if g["apply_wd"] else 0``.
* :func:`ema_update`: teacher ← m·teacher + (1 − m)·student, one fused call over all parameters.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from wearspec.errors import WearspecError


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> np.ndarray:
    """(total_steps,) float64: linear warm-up, then cosine decay (DINO's ``cosine_scheduler`` semantics).

    Steps ``0 .. warmup_steps-1`` go linearly from ``warmup_start`` to ``base`` (both ends included);
    the remaining ``T = total_steps - warmup_steps`` steps are ``final + (base - final)·(1 + cos(π·t/T))/2``
    for ``t = 0 .. T-1``: the cosine part starts at ``base`` and would reach ``final`` at step T, one past
    the end, so the last value is within ``(base - final)·π²/(4T²)`` of ``final``.
    """
    total_steps, warmup_steps = int(total_steps), int(warmup_steps)
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise WearspecError(f"schedule: need total_steps ≥ 1 and 0 ≤ warmup_steps ≤ total_steps, got "
                            f"{total_steps} and {warmup_steps}")
    warmup = np.linspace(warmup_start, base, warmup_steps, dtype=np.float64)
    t = np.arange(total_steps - warmup_steps, dtype=np.float64)
    decay = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * t / max(len(t), 1)))
    return np.concatenate([warmup, decay])


def scaled_lr(base_lr: float, global_batch: int, reference_batch: int = 256) -> float:
    """The linear scaling rule: ``base_lr × global_batch / reference_batch`` (global = all ranks, all
    accumulation steps)."""
    if global_batch < 1 or reference_batch < 1:
        raise WearspecError(f"lr: global_batch and reference_batch must be ≥ 1, got {global_batch}, "
                            f"{reference_batch}")
    return float(base_lr) * int(global_batch) / int(reference_batch)


def lr_schedule(base_lr: float, global_batch: int, total_steps: int, warmup_steps: int = 0,
                min_lr: float = 1e-6, reference_batch: int = 256) -> np.ndarray:
    """(total_steps,) learning rates: warm-up from 0 to ``base_lr × global_batch / reference_batch``, then
    cosine to ``min_lr`` (DINO: base_lr 5e-4, 10 warm-up epochs, min_lr 1e-6)."""
    return cosine_schedule(scaled_lr(base_lr, global_batch, reference_batch), min_lr, total_steps, warmup_steps)


def wd_schedule(total_steps: int, start: float = 0.04, end: float = 0.4) -> np.ndarray:
    """(total_steps,) weight decay, cosine from ``start`` up to ``end`` (DINO 0.04 → 0.4), no warm-up."""
    return cosine_schedule(start, end, total_steps)


def momentum_schedule(total_steps: int, start: float = 0.996, end: float = 1.0) -> np.ndarray:
    """(total_steps,) teacher EMA momentum, cosine from ``start`` to ``end`` (DINO 0.996 → 1)."""
    return cosine_schedule(start, end, total_steps)


def teacher_temperature_schedule(warmup_temp: float = 0.04, final_temp: float = 0.04, warmup_epochs: int = 30, *,
                                 total_epochs: int, steps_per_epoch: int) -> np.ndarray:
    """(total_epochs × steps_per_epoch,) teacher temperatures: linear from ``warmup_temp`` to ``final_temp``
    over the first ``warmup_epochs`` epochs (per step, both ends included), then constant ``final_temp``.

    Lives here with the other schedules (``wearspec.ssl.losses`` re-exports it). DINO warms 0.04 → 0.04–0.07
    over 30 epochs; a high final temperature collapses to the uniform output on small data (lower it, see
    :mod:`wearspec.ssl.monitor`). ``warmup_epochs`` longer than the run is cut at the end of the run.
    """
    total = int(total_epochs) * int(steps_per_epoch)
    if total_epochs < 1 or steps_per_epoch < 1 or warmup_epochs < 0 or min(warmup_temp, final_temp) <= 0:
        raise WearspecError(f"teacher temperature: need epochs, steps ≥ 1, warmup_epochs ≥ 0 and temperatures > 0, "
                            f"got {total_epochs}, {steps_per_epoch}, {warmup_epochs}, {warmup_temp}, {final_temp}")
    n_warm = int(warmup_epochs) * int(steps_per_epoch)
    temps = np.concatenate([np.linspace(warmup_temp, final_temp, n_warm, dtype=np.float64),
                            np.full(max(total - n_warm, 0), final_temp, dtype=np.float64)])
    return temps[:total]


# -- Optimiser parameter groups -------------------------------------------------------------------
def _matches(name: str, patterns: Iterable[str]) -> bool:
    parts = name.split(".")
    return any(name == p or name.endswith("." + p) or p in parts for p in patterns)


def is_no_decay(name: str, param: torch.Tensor, no_decay_names: Iterable[str] = ()) -> bool:
    """True for parameters that get no weight decay: 1-D ones (biases, norm weights), those ending in
    ``.bias``, weight-norm gains (``parametrizations.weight.original0``) and those matching a name in
    ``no_decay_names`` (equal to it, ending in ``.<it>``, or having it as a dotted component:
    ``pos_embed`` matches ``backbone.pos_embed``)."""
    return (param.ndim <= 1 or name.endswith(".bias") or name.endswith("parametrizations.weight.original0")
            or _matches(name, no_decay_names))


def param_groups(model: nn.Module, weight_decay: float, no_decay_names: Iterable[str] = frozenset(),
                 layer_decay: float | None = None,
                 layer_id_fn: Callable[[str], int] | None = None) -> list[dict]:
    """AdamW parameter groups: ``torch.optim.AdamW(param_groups(model, 0.04, {"pos_embed", "cls_token"}))``.

    Each trainable parameter (``requires_grad``) is in exactly one group; frozen ones (e.g. the fixed
    weight-norm gain of a DINO head) are left out. Keys of every group:

    * ``params``, ``param_names``: the tensors and their names (names travel in the optimiser state);
    * ``apply_wd`` (bool) and ``weight_decay`` (``weight_decay`` or 0.0): no decay on what
      :func:`is_no_decay` selects; names from ``model.no_weight_decay()`` (the timm convention) are added
      to ``no_decay_names``;
    * ``layer_id`` (int) and ``lr_scale`` (float): with ``layer_decay`` and ``layer_id_fn(name) -> int``
      (0 = embeddings … L = head), ``lr_scale = layer_decay ** (L - layer_id)`` where L is the largest id
      seen (layer-wise LR decay for fine-tuning); otherwise one layer, id 0, scale 1.0.
    """
    if (layer_decay is None) != (layer_id_fn is None):
        raise WearspecError("param_groups: layer_decay and layer_id_fn go together (give both or neither)")
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise WearspecError(f"param_groups: layer_decay must be in (0, 1], got {layer_decay}")
    names = set(no_decay_names)
    if callable(getattr(model, "no_weight_decay", None)):
        names |= set(model.no_weight_decay())
    entries = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            layer = int(layer_id_fn(name)) if layer_id_fn is not None else 0
            entries.append((layer, not is_no_decay(name, p, names), name, p))
    top = max((e[0] for e in entries), default=0)
    groups: dict[tuple[int, bool], dict] = {}
    for layer, apply_wd, name, p in entries:
        g = groups.setdefault((layer, apply_wd), {
            "params": [], "param_names": [], "apply_wd": apply_wd,
            "weight_decay": float(weight_decay) if apply_wd else 0.0, "layer_id": layer,
            "lr_scale": 1.0 if layer_decay is None else float(layer_decay) ** (top - layer)})
        g["params"].append(p)
        g["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


# -- EMA teacher ----------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel or ``torch.compile`` wrapper (any depth)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: every teacher parameter ← m·teacher + (1 − m)·student; every buffer is copied.

    Parameters are matched by name (``named_parameters`` of both, DDP/compile wrappers unwrapped), so the
    teacher must have the student's structure (``teacher = copy.deepcopy(student)``); frozen parameters are
    averaged too. Buffers (e.g. front-end normalisation statistics, BatchNorm running stats) are copied from
    the student, not averaged: they are statistics, not learned weights. One ``torch._foreach`` call per
    device/dtype, no Python loop over tensors. momentum 1: the teacher is unchanged.
    """
    teacher, student = _unwrap(teacher), _unwrap(student)
    t_params, s_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        diff = sorted(set(t_params) ^ set(s_params))[:3]
        raise WearspecError(f"ema_update: teacher and student parameters differ ({', '.join(diff)} ...); build the "
                            "teacher as a copy of the student")
    m = float(momentum)
    t_list = [t_params[n] for n in t_params]
    s_list = [s_params[n].detach() for n in t_params]
    if t_list:
        torch._foreach_mul_(t_list, m)
        torch._foreach_add_(t_list, s_list, alpha=1.0 - m)
    s_buffers = dict(student.named_buffers())
    for name, buf in teacher.named_buffers():
        if name in s_buffers:
            buf.copy_(s_buffers[name])
