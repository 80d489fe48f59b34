"""Temporal-neighbour views: draws stay in the recording and the time reach, never the window itself when another
is in reach, follow the generator; pretraining with them uses real neighbours and resumes bitwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import synthetic_store
from wearspec.config import load_config
from wearspec.data.neighbours import TemporalNeighbours
from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError
from wearspec.ssl.model import ViewMaker
from wearspec.ssl.pretrain import PretrainConfig, run_pretrain
from wearspec.utils.checkpoint import list_checkpoints, load_checkpoint

TINY = [
    "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "head.out_dim=64",
    "head.hidden_dim=32", "head.bottleneck_dim=16", "optim.batch_size=16", "crops.n_local=0",
    "frontend.fit_windows=64", "runtime.device=cpu", "optim.epochs=2", "runtime.ckpt_every=100",
]


def _layout(rng):
    """Three recordings (one with a single window), starts every 1.28 s, shuffled store order."""
    rec = np.repeat([0, 1, 2], [20, 9, 1])
    start = np.concatenate([np.arange(20) * 1.28, np.arange(9) * 1.28 + 100.0, [5.0]])
    perm = rng.permutation(rec.size)
    return rec[perm], start[perm]


def test_draws_stay_in_reach_and_follow_the_generator():
    rec, start = _layout(np.random.default_rng(0))
    nb = TemporalNeighbours(rec, start, np.arange(rec.size), max_s=2.56)
    idx = np.arange(rec.size)
    seen = set()
    for seed in range(50):
        near = nb.draw(idx, torch.Generator().manual_seed(seed))
        assert (rec[near] == rec).all()
        assert (np.abs(start[near] - start) <= 2.56 + 1e-5).all()
        lone = rec == 2
        assert (near[lone] == idx[lone]).all() and (near[~lone] != idx[~lone]).all()
        seen.update(zip(idx.tolist(), near.tolist()))
    # every neighbour within ±2 windows is drawn (interior windows have 4)
    inner = [i for i in idx if rec[i] == 0 and 2 * 1.28 <= start[i] <= 17 * 1.28]
    assert all(sum(1 for a, _ in seen if a == i) == 4 for i in inner)
    a = nb.draw(idx, torch.Generator().manual_seed(7))
    b = nb.draw(idx, torch.Generator().manual_seed(7))
    assert np.array_equal(a, b)


def test_only_the_given_windows_are_candidates():
    rec, start = np.zeros(10, int), np.arange(10) * 1.0
    nb = TemporalNeighbours(rec, start, np.array([0, 2, 4, 6, 8]), max_s=2.0)
    for seed in range(20):
        near = nb.draw(np.array([0, 4, 8]), torch.Generator().manual_seed(seed))
        assert set(near.tolist()) <= {0, 2, 4, 6, 8} and near[0] == 2 and near[2] == 6
    with pytest.raises(WearspecError, match="crops.neighbour_s"):
        TemporalNeighbours(rec, start, np.arange(10), max_s=0.0)


def test_view_maker_cuts_the_second_global_view_from_the_neighbour():
    class Identity(torch.nn.Module):
        def forward(self, x):
            return x[:, :, None, :]

    class Crops:
        def __call__(self, spec, generator):
            return [spec, spec, spec]

    vm = ViewMaker(Identity(), lambda x, g: x, Crops(), lambda v, g: v, n_global=2)
    x, other = torch.zeros(2, 3, 8), torch.ones(2, 3, 8)
    views = vm(x, None, other)
    assert [float(v.mean()) for v in views] == [0.0, 1.0, 0.0]  # global 1, global 2 (neighbour), local from 1
    assert [float(v.mean()) for v in vm(x, None)] == [0.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory, "nb")


def test_pretraining_with_neighbours_uses_them_and_resumes_bitwise(store, tmp_path, monkeypatch):
    s = WindowStore(store)
    pairs = []
    real = TemporalNeighbours.draw

    def spy(self, index, generator=None):
        near = real(self, index, generator)
        pairs.append((np.asarray(index).copy(), near))
        return near

    monkeypatch.setattr(TemporalNeighbours, "draw", spy)
    cfg = lambda out, *extra: load_config(PretrainConfig, None, [f"store={store}", f"output={out}", *TINY,
                                                                  "crops.neighbour_s=5", *extra])
    run_pretrain(cfg(tmp_path / "a"))
    idx, near = map(np.concatenate, zip(*pairs))
    assert (s.recordings[near] == s.recordings[idx]).all()
    assert (np.abs(s.starts[near] - s.starts[idx]) <= 5).all() and (near != idx).mean() > 0.9
    run_pretrain(cfg(tmp_path / "b", "runtime.max_steps=5"))
    run_pretrain(cfg(tmp_path / "b"))
    sa, sb = (load_checkpoint(list_checkpoints(tmp_path / r / "checkpoints")[-1]) for r in "ab")
    for k in sa["teacher_net"]:
        assert torch.equal(sa["teacher_net"][k], sb["teacher_net"][k]), k
    with pytest.raises(WearspecError, match="crops.neighbour_s"):
        run_pretrain(cfg(tmp_path / "c", "crops.neighbour_s=-1"))
