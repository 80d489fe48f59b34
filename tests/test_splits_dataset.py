import itertools
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from wearspec.data.dataset import ResumableSampler, WindowDataset
from wearspec.data.splits import kfold, leave_one_subject_out, predefined_split, subject_split
from wearspec.data.store import StoreWriter, WindowStore
from wearspec.errors import WearspecError


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(1)
    with StoreWriter(tmp_path / "st", channels=["a", "b"], rate=10, window=8, hop=4, label_names=["x", "y", "z"],
                     shard_windows=7) as w:
        for s in range(10):
            n = 5 + s
            w.add(rng.standard_normal((n, 2, 8)), f"s{s}", f"s{s}-r", np.arange(n) * 0.4,
                  np.where(np.arange(n) % 4 == 3, -1, np.arange(n) % 3), split="test" if s >= 8 else "train")
    return WindowStore(tmp_path / "st")


def _subjects_of(store, idx):
    return set(store.subjects[idx].tolist())


def test_subject_split_disjoint_and_complete(store):
    sp = subject_split(store.subjects, val_fraction=0.2, test_fraction=0.3, seed=3)
    parts = [_subjects_of(store, getattr(sp, k)) for k in ("train", "val", "test")]
    assert [len(p) for p in parts] == [5, 2, 3]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(sp.train) + len(sp.val) + len(sp.test) == len(store)
    assert subject_split(store.subjects, seed=3).subjects == subject_split(store.subjects, seed=3).subjects
    named = subject_split(store.subjects, test_subjects=["s1", "s2"], val_subjects=["s0"],
                          subject_names=store.subject_names)
    assert named.subjects["test"] == [1, 2] and named.subjects["val"] == [0]
    with pytest.raises(WearspecError, match="unknown subject 'nobody'"):
        subject_split(store.subjects, test_subjects=["nobody"], subject_names=store.subject_names)
    with pytest.raises(WearspecError, match=r"split.val_subjects: \['s1'\] are test subjects too"):
        subject_split(store.subjects, test_subjects=["s0", "s1"], val_subjects=["s1", "s2"],
                      subject_names=store.subject_names)


def test_a_predefined_split_that_is_not_subject_wise_is_flagged(store, tmp_path):
    from wearspec.data.splits import SplitConfig, make_splits

    labelled = np.flatnonzero(store.labels >= 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # s8, s9 are the test part, the others train: subject-wise, no warning
        make_splits(store, labelled, SplitConfig(mode="predefined"))
    rng = np.random.default_rng(2)
    with StoreWriter(tmp_path / "mixed", channels=["a"], rate=10, window=8, hop=4, label_names=["x", "y"]) as w:
        for s in range(3):  # every subject has a train and a test recording (a split by recording)
            for part in ("train", "test"):
                w.add(rng.standard_normal((6, 1, 8)), f"m{s}", f"m{s}-{part}", np.arange(6) * 0.4,
                      np.arange(6) % 2, split=part)
    mixed = WindowStore(tmp_path / "mixed")
    with pytest.warns(UserWarning, match=r"3 subject\(s\) have windows in the test part .* not subject-wise"):
        make_splits(mixed, np.arange(len(mixed)), SplitConfig(mode="predefined"))


def test_kfold_and_loso(store):
    folds = kfold(store.subjects, 5, seed=0)
    tests = [tuple(f.subjects["test"]) for f in folds]
    assert sorted(c for t in tests for c in t) == list(range(10))
    for f in folds:
        assert not set(f.subjects["val"]) & set(f.subjects["test"])
        assert not set(f.subjects["train"]) & (set(f.subjects["val"]) | set(f.subjects["test"]))
    loso = leave_one_subject_out(store.subjects)
    assert len(loso) == 10 and all(len(f.subjects["test"]) == 1 for f in loso)
    with pytest.raises(WearspecError, match="split.k"):
        kfold(store.subjects, 11)
    pre = predefined_split(store.splits)
    assert _subjects_of(store, pre.test) == {8, 9} and len(pre.val) == 0


def test_dataset_items_and_batched_reads(store):
    ds = WindowDataset(store, labelled=True)
    assert len(ds) == int((store.labels >= 0).sum())
    item = ds[3]
    i = int(item["index"])
    np.testing.assert_array_equal(item["x"].numpy(), store.read(i))
    assert int(item["label"]) == store.labels[i]
    loader = DataLoader(ds, batch_size=6, shuffle=False)
    batch = next(iter(loader))
    assert batch["x"].shape == (6, 2, 8) and batch["x"].dtype == torch.float32
    np.testing.assert_array_equal(batch["x"].numpy(), store.read_batch(ds.indices[:6]))


def test_dataset_with_workers_and_distributed_sampler(store):
    ds = WindowDataset(store)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(ds, batch_size=5, sampler=sampler, num_workers=2)
        for b in loader:
            seen.extend(b["index"].tolist())
    assert sorted(set(seen)) == list(range(len(store)))


def test_unlabelled_store_refuses_labelled_dataset(tmp_path):
    with StoreWriter(tmp_path / "u", channels=["a"], rate=1, window=2, hop=1) as w:
        w.add(np.zeros((3, 1, 2)), "s", "r", np.zeros(3))
    with pytest.raises(WearspecError, match="has no labels"):
        WindowDataset(WindowStore(tmp_path / "u"), labelled=True)


def test_resumable_sampler_matches_and_resumes():
    a = ResumableSampler(23, rank=1, world_size=2, seed=5)
    full = list(a)
    assert len(full) == 12
    other = list(ResumableSampler(23, rank=0, world_size=2, seed=5))
    assert sorted(set(full) | set(other)) == list(range(23))
    a.advance(5)
    state = a.state_dict()
    b = ResumableSampler(23, rank=1, world_size=2, seed=5)
    b.load_state_dict(state)
    assert list(b) == full[5:] and len(b) == 7
    b.set_epoch(1)
    assert b.position == 0 and list(b) != full
    with pytest.raises(WearspecError, match="sampler state is for 23 windows on 2 ranks"):
        ResumableSampler(24, world_size=2).load_state_dict(state)


def test_keyed_permutation_is_a_bijection_and_the_large_sampler_stays_small(monkeypatch):
    import tracemalloc

    import wearspec.data.dataset as dataset_module
    from wearspec.data.dataset import feistel_permutation

    for n in (1, 2, 3, 17, 1000, 4099):
        for seed in (0, 1):
            assert sorted(feistel_permutation(n, seed, np.arange(n)).tolist()) == list(range(n))
    assert not np.array_equal(feistel_permutation(1000, 0, np.arange(1000)),
                              feistel_permutation(1000, 1, np.arange(1000)))
    # the old order (torch.randperm per epoch) is kept below LARGE: runs resume as before
    small = ResumableSampler(23, rank=1, world_size=2, seed=5)
    perm = torch.randperm(23, generator=torch.Generator().manual_seed(5)).numpy()
    assert list(small) == np.concatenate([perm, perm[:1]])[1::2].tolist()
    # a sampler over 10^8 windows: two ranks share the keyed order, resume mid-epoch, in a few MB
    monkeypatch.setattr(dataset_module, "_CHUNK", 4096)
    tracemalloc.start()
    ranks = [ResumableSampler(10**8, rank=r, world_size=2, seed=3, drop_last=True) for r in (0, 1)]
    heads = [list(itertools.islice(iter(s), 10_000)) for s in ranks]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6 and not set(heads[0]) & set(heads[1]) and max(heads[0] + heads[1]) < 10**8
    ranks[1].advance(2_500)
    again = ResumableSampler(10**8, rank=1, world_size=2, seed=3, drop_last=True)
    again.load_state_dict(ranks[1].state_dict())
    assert list(itertools.islice(iter(again), 100)) == heads[1][2_500:2_600]
