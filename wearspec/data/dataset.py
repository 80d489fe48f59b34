"""PyTorch access to a window store: a map-style Dataset and a resumable distributed sampler.

``WindowDataset`` yields ``{"x": (C, T) float32, "label": int64, "subject": int64, "index": int64}``.
It implements ``__getitems__`` so a DataLoader fetches a whole batch with one memmap read per shard.
It works with ``torch.utils.data.DistributedSampler`` and with worker processes (shards are
memory-mapped lazily inside each worker; nothing is loaded whole).

``ResumableSampler`` is a drop-in for ``DistributedSampler`` that can also report and restore its
position inside an epoch, so a checkpointed run resumes on exactly the next batch.
"""

from __future__ import annotations

import math
import os
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError


class WindowDataset(Dataset):
    """Windows of ``store`` at ``indices`` (all windows by default).

    labelled=True keeps only windows with a label and checks that the store has labels.
    """

    def __init__(
        self,
        store: WindowStore | str | os.PathLike,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        labelled: bool = False,
    ):
        self.store = store if isinstance(store, WindowStore) else WindowStore(store)
        idx = np.arange(len(self.store)) if indices is None else np.asarray(indices, dtype=np.int64)
        if labelled:
            if not self.store.label_names:
                raise WearspecError(f"{self.store.path}: the store has no labels (prepare it from labelled data)")
            idx = idx[self.store.labels[idx] >= 0]
            if idx.size == 0:
                raise WearspecError(f"{self.store.path}: no labelled windows in the selected subjects")
        self.indices = idx

    def __len__(self) -> int:
        return len(self.indices)

    def _item(self, x: np.ndarray, i: int) -> dict:
        return {
            "x": torch.from_numpy(x),
            "label": torch.tensor(int(self.store.labels[i]), dtype=torch.int64),
            "subject": torch.tensor(int(self.store.subjects[i]), dtype=torch.int64),
            "index": torch.tensor(int(i), dtype=torch.int64),
        }

    def __getitem__(self, k: int) -> dict:
        i = int(self.indices[k])
        return self._item(self.store.read(i), i)

    def __getitems__(self, ks: list[int]) -> list[dict]:
        idx = self.indices[np.asarray(ks, dtype=np.int64)]
        batch = self.store.read_batch(idx)
        return [self._item(batch[j], int(i)) for j, i in enumerate(idx)]


LARGE = 1 << 20  # from this many items on, the shuffled order is a keyed permutation computed piecewise
_CHUNK = 1 << 16  # items of the order computed at a time while iterating


def _mix(x: np.ndarray, key: np.uint64) -> np.ndarray:
    """A round function on uint64 lanes: key, multiply, xor-shift (splitmix64's finaliser)."""
    z = x ^ key
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def feistel_permutation(n: int, seed: int, positions: np.ndarray) -> np.ndarray:
    """Items at ``positions`` of a seeded pseudo-random permutation of ``range(n)``, in O(len(positions)) memory:
    a 4-round balanced Feistel network on the smallest even number of bits that holds ``n``, with cycle walking
    (a value ≥ n is encrypted again; the domain is < 4n, so a few rounds at most). Every seed gives a bijection."""
    half = max(1, (max(int(n) - 1, 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    keys = [np.uint64(k) for k in np.random.default_rng([int(seed), 0x5EED]).integers(0, 2**63, 4, dtype=np.int64)]
    with np.errstate(over="ignore"):
        def encrypt(v: np.ndarray) -> np.ndarray:
            left, right = v >> np.uint64(half), v & mask
            for k in keys:
                left, right = right, left ^ (_mix(right, k) & mask)
            return (left << np.uint64(half)) | right

        out = encrypt(np.asarray(positions, dtype=np.uint64))
        walk = out >= np.uint64(n)
        while walk.any():
            out[walk] = encrypt(out[walk])
            walk = out >= np.uint64(n)
    return out.astype(np.int64)


class ResumableSampler(Sampler[int]):
    """Shuffled, rank-sharded order over ``n`` items that can resume mid-epoch.

    Same contract as ``DistributedSampler`` (``set_epoch``; every rank gets ``ceil(n / world)``
    items, padded by wrapping, or ``floor`` with ``drop_last``), plus ``state_dict()`` /
    ``load_state_dict()`` with ``{"epoch", "position"}`` where ``position`` counts items of this
    rank already consumed in the epoch. Call :meth:`advance` as batches are consumed.

    Memory stays small for any ``n``: the order is handed out in pieces of 65536 items; below :data:`LARGE`
    items it is ``torch.randperm`` (seeded by seed + epoch), from there on a keyed permutation
    (:func:`feistel_permutation`) computed piece by piece, never held whole (10⁸ items would be 800 MB).
    """

    def __init__(self, n: int, *, rank: int = 0, world_size: int = 1, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        if n <= 0:
            raise WearspecError("sampler: the dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n, self.rank, self.world = n, rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.num_samples = n // world_size if drop_last else math.ceil(n / world_size)
        if self.num_samples == 0:
            raise WearspecError(f"sampler: {n} windows cannot be shared by {world_size} ranks with drop_last")
        self.epoch = 0
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.position = 0
        self.epoch = epoch

    def advance(self, count: int) -> None:
        self.position = min(self.position + count, self.num_samples)

    def order(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Items ``start:stop`` of this rank's order for the current epoch (all of it by default)."""
        stop = self.num_samples if stop is None else min(stop, self.num_samples)
        j = np.arange(start, max(stop, start), dtype=np.int64) * self.world + self.rank  # global positions
        j = j % self.n  # padding (not drop_last) wraps to the start of the order
        if not self.shuffle:
            return j
        if self.n >= LARGE:
            return feistel_permutation(self.n, self.seed * 1_000_003 + self.epoch, j)
        if getattr(self, "_perm_key", None) != (self.seed, self.epoch):
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            self._perm, self._perm_key = torch.randperm(self.n, generator=g).numpy(), (self.seed, self.epoch)
        return self._perm[j]

    def __iter__(self) -> Iterator[int]:
        for a in range(self.position, self.num_samples, _CHUNK):
            yield from self.order(a, a + _CHUNK).tolist()

    def __len__(self) -> int:
        return self.num_samples - self.position

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "n": self.n, "world": self.world}

    def load_state_dict(self, state: dict) -> None:
        if state.get("n") != self.n or state.get("world") != self.world:
            raise WearspecError(
                f"sampler state is for {state.get('n')} windows on {state.get('world')} ranks, "
                f"not {self.n} windows on {self.world} ranks"
            )
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
