"""Temporal neighbours in a window store: for a window, another window of the same recording close in time.

Self-supervised views made only by augmenting one short window (a 2.56 s window is a step or two) are weak: the
two views share every sample, so the encoder can match them by low-level detail. A window cut a moment later
from the same recording shows the same activity with different samples (COLA and temporal-neighbourhood
coding use the same prior: what a person does changes slowly). :class:`TemporalNeighbours` draws, for each
window, one window of the same recording whose start lies within ``max_s`` seconds of its own (to the microsecond) (never itself
when another is in reach; itself when the recording has no other window that close).

Only the windows given at construction are candidates (e.g. pretraining's selection, without excluded
subjects). Memory: one int64 and one float64 per candidate window plus two int64 per recording; a batch's draw
is ``B`` binary searches. Draws come from a ``torch.Generator``, so a run that saves its generator resumes the
same draws.
"""

from __future__ import annotations

import numpy as np
import torch

from wearspec.errors import WearspecError


class TemporalNeighbours:
    """Neighbour draws among ``indices`` of a store (arrays ``recordings`` and ``starts`` in seconds)."""

    def __init__(self, recordings: np.ndarray, starts: np.ndarray, indices: np.ndarray, max_s: float):
        if not np.isfinite(max_s) or max_s <= 0:
            raise WearspecError(f"crops.neighbour_s: expected a time > 0 s, got {max_s}")
        idx = np.asarray(indices, dtype=np.int64)
        rec, start = np.asarray(recordings)[idx], np.asarray(starts, dtype=np.float64)[idx]
        order = np.lexsort((start, rec))  # by recording, then start
        self.order = idx[order]  # sorted position → store index
        self.starts = start[order]
        rec_sorted = rec[order]
        codes, first = np.unique(rec_sorted, return_index=True)
        self._codes = codes
        self._first = first.astype(np.int64)
        self._end = np.append(first[1:], len(rec_sorted)).astype(np.int64)
        self._recordings = np.asarray(recordings)
        self._all_starts = np.asarray(starts, dtype=np.float64)
        self.max_s = float(max_s) + 1e-6  # a reach of exactly k hops includes the k-th window despite rounding

    def draw(self, index: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        """Store indices (B,) of one neighbour per window in ``index`` (store indices among the candidates)."""
        index = np.asarray(index, dtype=np.int64)
        device = generator.device if generator is not None else "cpu"
        u = torch.rand(index.size, generator=generator, device=device, dtype=torch.float64).cpu().numpy()
        r = np.searchsorted(self._codes, self._recordings[index])
        first, end = self._first[r], self._end[r]
        s = self._all_starts[index]
        out = np.empty_like(index)
        for k in range(index.size):
            a, b = int(first[k]), int(end[k])
            seg = self.starts[a:b]
            lo = a + int(np.searchsorted(seg, s[k] - self.max_s, side="left"))
            hi = a + int(np.searchsorted(seg, s[k] + self.max_s, side="right"))
            me = a + int(np.searchsorted(seg, s[k], side="left"))
            if hi - lo <= 1:
                out[k] = index[k]
                continue
            j = lo + min(int(u[k] * (hi - lo - 1)), hi - lo - 2)  # uniform over the others in reach
            out[k] = self.order[j + 1 if j >= me else j]
        return out
