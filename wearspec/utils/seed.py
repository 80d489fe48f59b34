"""Seeding and the RNG state that a checkpoint must carry for an exact resume."""

from __future__ import annotations

import hashlib
import random
import warnings

import numpy as np
import torch

from wearspec.errors import WearspecError


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) with ``seed + rank``."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def rng_state(generator: torch.Generator | None = None) -> dict:
    """This process's torch RNG states (global CPU, the current CUDA device's, and ``generator``'s with its
    device type) as CPU tensors and strings, so that ``torch.load(weights_only=True)`` can read them back."""
    state: dict = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device: init_distributed sets it per process
    if generator is not None:
        state["generator"] = generator.get_state()
        state["generator_device"] = generator.device.type
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None, source=None) -> None:
    """Restore :func:`rng_state`'s states. A generator state saved on another device type (a run resumed on
    cpu after cuda, or the reverse) cannot be restored: ``generator`` is then re-seeded from its own seed and
    the saved state, so the resumed run is still deterministic, with a warning naming ``source``."""
    torch.set_rng_state(state["torch"].cpu())  # RNG states must be CPU byte tensors whatever map_location did
    if isinstance(state.get("cuda"), torch.Tensor) and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
    if generator is None or "generator" not in state:
        return
    saved = state["generator"].cpu()
    saved_on = state.get("generator_device", "cpu")
    if saved_on == generator.device.type:
        generator.set_state(saved)
        return
    warnings.warn(f"{source or 'checkpoint'}: the view generator's state was saved on {saved_on} and cannot be "
                  f"restored on {generator.device.type}; re-seeded, so the resumed run is deterministic but not "
                  "bitwise the run it continues", stacklevel=2)
    digest = hashlib.sha256(saved.numpy().tobytes()).digest()
    generator.manual_seed((generator.initial_seed() ^ int.from_bytes(digest[:8], "little")) % 2**63)


def restore_rank_rng(ranks: list, rank: int, world_size: int, generator: torch.Generator | None, source) -> None:
    """Set this rank's RNG state from a checkpoint's per-rank list; another world size is a one-line error
    naming ``source`` (the checkpoint file)."""
    if len(ranks) != world_size:
        raise WearspecError(f"{source}: saved by {len(ranks)} rank(s), resumed on {world_size}; "
                            "resume with the same number of processes")
    set_rng_state(ranks[rank], generator, source)
