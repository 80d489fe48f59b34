"""Pretraining settings derived from the window store: the one place that fills what a recipe leaves open.

A setting left at ``null`` in a pretraining config (``None`` in :class:`~wearspec.ssl.pretrain.PretrainConfig`)
is chosen here from what the store says of itself (number of windows, window length, rate, channels), by
:func:`derive_pretrain_settings`; the run writes the resolved values into its ``config.yaml`` and logs what it
chose and why, so a resumed run (and a reader of the run folder) sees the same numbers. A value given in the
YAML or on the command line is never changed.

What is derived, and why (each rule was checked on the data-shape matrix of BENCHMARKS.md, not on one draw):

* ``augment.rotation_max_deg`` — rotations of the sensor frame up to **45°** (a generous spread of how a
  wrist or hip device sits from one wearer to the next). A full 3-D rotation (180°) teaches the encoder to
  ignore orientation and the plane of motion, which some activity sets are defined by (arm exercises,
  postures): on such data the SSL features fell below a random-init backbone. At the derived length (≈ 2000
  steps) 45° against 20° gave +0.025 linear / +0.042 k-NN on 2.56 s daily activities (with temporal-neighbour
  views in both runs) and −0.001 / −0.007 on 2.56 s arm exercises (BENCHMARKS.md). Give 180 when the mounting is truly arbitrary (a phone in a pocket).
* ``head.out_dim`` (the number of prototypes K) — a power of two near windows / 16, within [64, 65536]:
  K ≫ the number of windows leaves most prototypes unused and the targets near uniform (DINO's 65536 is for
  ImageNet's 1.3 M images; 3.7 k windows get 256).
* ``optim.epochs`` — enough epochs for about :data:`TARGET_STEPS` optimisation steps at the global batch, at
  least :data:`MIN_EPOCHS` and at most :data:`MAX_EPOCHS`: a small store needs many passes, a large one few.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from wearspec.data.augment import triads_from_channels

TARGET_STEPS = 2000
MIN_EPOCHS, MAX_EPOCHS = 10, 300
ROTATION_DEG = 45.0
K_RANGE = (64, 65536)


@dataclass(frozen=True)
class StoreShape:
    """What the derivation reads of a store: the windows pretraining sees and their geometry."""

    windows: int  # windows in the pretraining pool (after exclusions)
    window: int  # samples per window
    rate: float  # Hz
    channels: tuple[str, ...]


def prototypes_for(windows: int) -> int:
    """K: the power of two nearest to ``windows / 16``, clipped to :data:`K_RANGE`."""
    k = 2 ** int(round(math.log2(max(windows / 16.0, 1.0))))
    return int(min(max(k, K_RANGE[0]), K_RANGE[1]))


def epochs_for(windows: int, global_batch: int, steps_per_epoch: int = 0) -> int:
    """Epochs that give about :data:`TARGET_STEPS` steps of ``global_batch`` over ``windows`` windows (epochs of
    ``steps_per_epoch`` steps when that is > 0 and shorter than a pass)."""
    full = max(windows // max(global_batch, 1), 1)
    steps_per_epoch = min(full, steps_per_epoch) if steps_per_epoch > 0 else full
    return int(min(max(math.ceil(TARGET_STEPS / steps_per_epoch), MIN_EPOCHS), MAX_EPOCHS))


def derive_pretrain_settings(cfg: Any, shape: StoreShape, world_size: int = 1) -> dict[str, dict[str, Any]]:
    """Fill, in place, every derived setting of ``cfg`` (a ``PretrainConfig``) that is None; returns what was
    chosen: ``{"augment.rotation_max_deg": {"value": 45.0, "why": "..."}, ...}`` (empty when all were given)."""
    chosen: dict[str, dict[str, Any]] = {}

    def choose(section: str, key: str, value: Any, why: str) -> None:
        part = getattr(cfg, section)
        if getattr(part, key) is None:
            setattr(part, key, value)
            chosen[f"{section}.{key}"] = {"value": value, "why": why}

    triads = triads_from_channels(list(shape.channels))
    choose("augment", "rotation_max_deg", ROTATION_DEG,
           f"mounting-scale rotations of the {len(triads)} sensor triad(s); 180 erases orientation" if triads
           else "no x/y/z triads in the channels: rotation is off whatever the angle")
    choose("head", "out_dim", prototypes_for(shape.windows), f"≈ {shape.windows} windows / 16, power of two")
    global_batch = cfg.optim.batch_size * max(world_size, 1)
    choose("optim", "epochs", epochs_for(shape.windows, global_batch, cfg.optim.steps_per_epoch),
           f"≈ {TARGET_STEPS} steps of {global_batch} windows over {shape.windows} windows "
           f"(within {MIN_EPOCHS}–{MAX_EPOCHS} epochs)")
    return chosen
