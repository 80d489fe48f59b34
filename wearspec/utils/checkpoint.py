"""Checkpoints: atomic writes, keep-last-k, newest-first discovery, safe loading.

Files are ``<dir>/ckpt-<step:08d>.pt`` written by ``torch.save`` to a temporary name in the same
folder, flushed to disk, then renamed, so a crash never leaves a truncated checkpoint under a real
name. Loading uses ``torch.load(weights_only=True)``: a checkpoint holds tensors, dicts, lists,
strings and numbers only, never arbitrary pickled objects. Every file written by :func:`save_torch` gets a
sidecar ``<file>.sha256`` (:mod:`wearspec.utils.integrity`) that is checked before ``torch.load``: a damaged
checkpoint named explicitly is refused with one line; a damaged newest one in a run folder is skipped with a
warning, and the run resumes from the previous intact one. Final weights are also exported as safetensors
(:func:`save_weights`).
"""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from wearspec.errors import WearspecError
from wearspec.utils import distributed as du
from wearspec.utils.integrity import check_sidecar, sha256_file, sidecar_path, write_sidecar
from wearspec.utils.io import atomic_path
from wearspec.utils.seed import rng_state

FORMAT = "wearspec-checkpoint"
VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    return Path(folder) / f"ckpt-{step:08d}.pt"


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Checkpoints in ``folder``, oldest first (by step)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict, folder: str | os.PathLike, step: int, keep_last: int = 3) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step``; keep only the newest ``keep_last``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(folder, step)
    save_torch({"format": FORMAT, "version": VERSION, **state}, target)
    if keep_last > 0:
        for old in list_checkpoints(folder)[:-keep_last]:
            old.unlink(missing_ok=True)
            sidecar_path(old).unlink(missing_ok=True)
    return target


def save_torch(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (temporary name, fsync, rename) with its SHA-256 in the
    sidecar ``<path>.sha256``. The old sidecar goes first, so a crash in between leaves a file without one
    (loaded unverified), never a file with a wrong one."""
    path = Path(path)
    sidecar_path(path).unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
        digest = sha256_file(tmp)
    write_sidecar(path, digest)
    return path


def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False):
    """``torch.load(weights_only=True)`` after checking the sidecar checksum (when there is one). A mismatch,
    a damaged or foreign file, a raw pickle: one-line :class:`WearspecError` naming the file (torch's own
    warnings are not printed; nothing in the file runs)."""
    check_sidecar(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # truncated zip, foreign pickle, unsafe globals
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WearspecError(f"{path}: not a wearspec checkpoint (cannot load it safely: {first[:200]})") from None


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict) -> None:
    """Restore a GradScaler's state. A scaler that was off (float32 or bf16 autocast) saved ``{}``: a run
    resumed with fp16 then starts from a fresh loss scale instead of failing on the empty state."""
    if saved:
        scaler.load_state_dict(saved)


def save_run_checkpoint(state: Callable[[], dict], folder: str | os.PathLike, step: int, keep_last: int,
                        model: torch.nn.Module, generator: torch.Generator | None, log) -> None:
    """The checkpoint of a training run that may be one of several ranks, at ``step``. Every rank gives its
    RNG state (stored as ``rng``, one entry per rank, for :func:`wearspec.utils.seed.restore_rank_rng`) and a
    digest of ``model``'s weights; rank 0 logs the digests and whether the replicas agree (a console warning
    when they do not), writes ``state()`` with the RNG states through :func:`save_checkpoint`; every rank then
    waits at a barrier. ``log``: the run's :class:`~wearspec.utils.logging.RunLogger`."""
    rngs = du.all_gather_objects(rng_state(generator))
    digests = du.all_gather_objects(du.param_digest(model))
    in_sync = len(set(digests)) == 1
    if not in_sync:
        log.info(f"step {step}: warning: ranks hold different weights ({digests})")
    if log.is_main:
        log.log(step, event="checkpoint", replica_digests=digests, replicas_in_sync=in_sync)
        save_checkpoint({**state(), "rng": rngs}, folder, step, keep_last)
    du.barrier()


def data_record(store, windows: int) -> dict:
    """What a training checkpoint records of its data (``state["data"]``): the window store's fingerprint and
    how many windows the run trains on."""
    return {"store_fingerprint": store_fingerprint(store), "windows": int(windows)}


def store_fingerprint(store) -> str:
    """The window store's fingerprint from its manifest ("" for a store that records none)."""
    return str(store.manifest.get("fingerprint", ""))


def check_same_store(state: dict, store, checkpoint: str | os.PathLike, remedy: str = "use a new output folder"
                     ) -> None:
    """Refuse to resume (or build on) ``checkpoint`` (loaded as ``state``) with a store other than the one it
    was trained on (its :func:`data_record`; checkpoints without one pass), e.g. a store prepared again at the
    same path. ``remedy`` ends the error message."""
    trained_on = (state.get("data") or {}).get("store_fingerprint")
    here = store_fingerprint(store)
    if trained_on and trained_on != here:
        raise WearspecError(f"{checkpoint}: this run was trained on another store (fingerprint {trained_on}); "
                            f"{store.path} has {here}: {remedy}")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a wearspec checkpoint safely; every problem is a one-line WearspecError naming the file."""
    path = Path(path)
    if path.is_dir():
        newest = latest_checkpoint(path) or latest_checkpoint(path / "checkpoints")
        if newest is None:
            raise WearspecError(f"{path}: no checkpoint (ckpt-*.pt) in this folder or its checkpoints/")
        path = newest
    if not path.is_file():
        raise WearspecError(f"{path}: checkpoint not found")
    state = load_torch(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise WearspecError(f"{path}: not a wearspec checkpoint (no format={FORMAT!r})")
    if state.get("version") != VERSION:
        raise WearspecError(f"{path}: checkpoint version {state.get('version')} is not supported (expected {VERSION})")
    return state


# A checkpoint written just before a crash can show up late on another node of a shared folder (NFS caches
# directory listings for a few seconds): ranks that disagree look again this many times, this far apart.
AGREE_ATTEMPTS, AGREE_WAIT_S = 5, 2.0


def agreed_latest_checkpoint(folder: str | os.PathLike, store) -> Path | None:
    """The checkpoint that every rank resumes from: the :func:`latest_checkpoint` of ``folder``, which must be
    the same file on every rank, read from the same window ``store`` (its fingerprint). Ranks that see different
    newest checkpoints look again (:data:`AGREE_ATTEMPTS` times, :data:`AGREE_WAIT_S` apart; all of them decide
    alike from the same gathered views). Otherwise every rank stops with the same one-line error, before any of
    them loads anything: on several nodes the output folder must be one that all of them share and the store the
    same on each. Alone, :func:`latest_checkpoint`."""
    for attempt in range(AGREE_ATTEMPTS):
        newest = latest_checkpoint(folder)
        views = du.all_gather_objects((store_fingerprint(store), newest.name if newest else None))
        fingerprint, name = views[0]
        for rank, (fp, _) in enumerate(views[1:], start=1):
            if fp != fingerprint:
                raise WearspecError(f"{store.path}: rank {rank} reads another window store (fingerprint {fp}) than "
                                    f"rank 0 ({fingerprint}); every node needs the same store")
        differ = [(rank, nm) for rank, (_, nm) in enumerate(views) if nm != name]
        if not differ:
            return newest
        if attempt + 1 < AGREE_ATTEMPTS:
            time.sleep(AGREE_WAIT_S)
    rank, nm = differ[0]
    raise WearspecError(f"{folder}: rank 0 sees {name or 'no checkpoint'} as the newest checkpoint but rank "
                        f"{rank} sees {nm or 'none'} (after {AGREE_ATTEMPTS} looks, {AGREE_WAIT_S:g} s apart); the "
                        "output folder must be one that every node shares")


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``folder`` that matches its checksum and loads, or None. Damaged ones are
    skipped with a warning on stderr (writes are atomic, so this means the file was damaged afterwards)."""
    for p in reversed(list_checkpoints(folder)):
        try:
            load_torch(p, mmap=True)
            return p
        except WearspecError as e:
            print(f"wearspec: warning: skipping damaged checkpoint {p} ({str(e).removeprefix(f'{p}: ')[:200]}); "
                  "trying the previous one", file=sys.stderr)
    return None


def save_weights(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write a flat state dict as safetensors, atomically, with its SHA-256 sidecar (as :func:`save_torch`)."""
    from safetensors.torch import save_file

    sidecar_path(path).unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        digest = sha256_file(tmp)
    write_sidecar(path, digest)
