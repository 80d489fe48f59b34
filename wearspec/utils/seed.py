"""Seeding and the RNG state that a checkpoint must carry for an exact resume."""

from __future__ import annotations

import random

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
    """This process's torch RNG states (global CPU, every CUDA device, and ``generator``) as tensors,
    so that ``torch.load(weights_only=True)`` can read them back."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def restore_rank_rng(ranks: list, rank: int, world_size: int, generator: torch.Generator | None, source) -> None:
    """Set this rank's RNG state from a checkpoint's per-rank list; another world size is a one-line error
    naming ``source`` (the checkpoint file)."""
    if len(ranks) != world_size:
        raise WearspecError(f"{source}: saved by {len(ranks)} rank(s), resumed on {world_size}; "
                            "resume with the same number of processes")
    set_rng_state(ranks[rank], generator)
