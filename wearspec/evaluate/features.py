"""Frozen features of a window store, computed once and cached on disk.

:func:`extract_features` runs an encoder over windows (B, C, T) in inference mode and returns
``(feats (N, D) float32, labels (N,) int64, subjects (N,) int64)`` in the order of ``indices``.
:class:`FeatureCache` keeps such arrays as ``.npz`` files keyed by a string (e.g. the encoder
weights' hash + the feature options + the store and window indices), so a probe sweep or a
re-run never recomputes them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from wearspec.data.dataset import WindowDataset
from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError
from wearspec.utils.io import atomic_path

Features = tuple[np.ndarray, np.ndarray, np.ndarray]  # feats (N, D) float32, labels (N,), subjects (N,)


def _owner_module(fn: Any) -> nn.Module | None:
    """The nn.Module behind ``fn``: the module itself, a bound method's owner, or a partial's."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if isinstance(fn, nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → cuda when available, else cpu; a name that is no device, or a GPU that is not there, is a
    :class:`WearspecError` about the ``device`` setting."""
    if isinstance(device, torch.device):
        return device
    from wearspec.utils.distributed import resolve_device as checked

    try:
        return checked(str(device))
    except WearspecError as e:
        raise WearspecError(str(e).replace("runtime.device", "device", 1)) from None


def extract_features(
    encoder_fn: Callable[[torch.Tensor], torch.Tensor],
    dataset_or_store: WindowStore | WindowDataset | str | os.PathLike,
    indices: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    *,
    module: nn.Module | None = None,
    progress: bool | None = None,
) -> Features:
    """Features of the windows at ``indices`` (store window indices; default: the dataset's indices
    or every window of the store).

    ``encoder_fn`` maps raw windows (B, C, T) float32 on ``device`` to (B, D) features: an
    ``nn.Module``, a bound method such as ``encoder.probe_features`` or a ``functools.partial`` of
    one. The module behind it (or ``module``) is moved to ``device`` and put in eval mode for the
    duration of the call (its train/eval mode is restored afterwards). Reads of the next batch
    overlap with encoding of the current one. A progress bar shows on a terminal only
    (``progress=None``).
    """
    if isinstance(dataset_or_store, WindowDataset):
        store = dataset_or_store.store
        default = dataset_or_store.indices
    else:
        store = dataset_or_store if isinstance(dataset_or_store, WindowStore) else WindowStore(dataset_or_store)
        default = np.arange(len(store))
    idx = np.asarray(default if indices is None else indices, dtype=np.int64)
    if batch_size < 1:
        raise WearspecError(f"batch_size: expected ≥ 1, got {batch_size}")
    dev = resolve_device(device)
    module = module if module is not None else _owner_module(encoder_fn)
    was_training = module.training if module is not None else False
    if module is not None:
        module.to(dev).eval()
    if progress is None:
        progress = sys.stderr.isatty()
    chunks = [idx[i : i + batch_size] for i in range(0, idx.size, batch_size)]
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode(), ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(store.read_batch, chunks[0]) if chunks else None
            for i in tqdm(range(len(chunks)), desc="features", unit="batch", disable=not progress, leave=False):
                x = pending.result()
                pending = pool.submit(store.read_batch, chunks[i + 1]) if i + 1 < len(chunks) else None
                f = encoder_fn(torch.from_numpy(x).to(dev, non_blocking=True))
                if f.ndim != 2 or f.shape[0] != x.shape[0]:
                    raise WearspecError(
                        f"encoder returned features of shape {tuple(f.shape)}; expected ({x.shape[0]}, D)")
                out.append(f.float().cpu().numpy())
    finally:
        if module is not None and was_training:
            module.train()
    feats = np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, 0), np.float32)
    return feats, store.labels[idx].astype(np.int64), store.subjects[idx].astype(np.int64)


def hash_module(module: nn.Module) -> str:
    """SHA-256 of a module's class name and its state dict (names, dtypes, shapes and values)."""
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def hash_array(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype}|{a.shape}".encode() + a.tobytes()).hexdigest()[:16]


def cache_key(**parts: Any) -> str:
    """A canonical key string from JSON-able parts (sorted keys), e.g.
    ``cache_key(encoder=hash_module(enc), n_last=4, avgpool=False, store=..., indices=hash_array(idx))``."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)


class FeatureCache:
    """``.npz`` files of features under ``folder``, one per key.

    The file name is a hash of the key; the key itself is stored inside and checked on load, so two
    keys never share a file. Writes are atomic (a crash leaves no partial file).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"

    def load(self, key: str) -> Features | None:
        """The cached arrays for ``key``, or None when absent (or unreadable, or for another key)."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    return None
                return z["feats"], z["labels"], z["subjects"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged file: recompute
            return None

    def save(self, key: str, feats: np.ndarray, labels: np.ndarray, subjects: np.ndarray) -> Path:
        p = self.path(key)
        with atomic_path(p) as tmp, open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), feats=np.asarray(feats, np.float32),
                     labels=np.asarray(labels), subjects=np.asarray(subjects))
        return p

    def get_or_compute(self, key: str, compute: Callable[[], Features]) -> tuple[Features, bool]:
        """``(features, hit)``: the cached arrays, or ``compute()``'s result after saving it."""
        hit = self.load(key)
        if hit is not None:
            return hit, True
        result = compute()
        self.save(key, *result)
        return result, False
