import json
import os

import numpy as np
import pytest

from wearspec.data.store import StoreWriter, WindowStore, check_output
from wearspec.errors import WearspecError


def _write(path, n=10, c=3, t=20, shard=4, dtype="float32", labels=True, fingerprint="fp", rng=None,
           overwrite=False):
    rng = rng or np.random.default_rng(0)
    x = rng.standard_normal((n, c, t)).astype(np.float32)
    y = rng.integers(0, 2, n).astype(np.int32) if labels else None
    with StoreWriter(path, channels=[f"c{i}" for i in range(c)], rate=10, window=t, hop=t // 2,
                     label_names=["a", "b"] if labels else [], dtype=dtype, shard_windows=shard,
                     fingerprint=fingerprint, overwrite=overwrite) as w:
        w.add(x[: n // 2], "s1", "r1", np.arange(n // 2) * 1.0, None if y is None else y[: n // 2])
        w.add(x[n // 2 :], "s2", "r2", np.arange(n - n // 2) * 1.0, None if y is None else y[n // 2 :],
              split="test")
    return x, y


def test_roundtrip_shards_and_index(tmp_path):
    x, y = _write(tmp_path / "st", n=11, shard=4)
    st = WindowStore(tmp_path / "st")
    assert len(st) == 11 and st.channels == ["c0", "c1", "c2"] and st.window == 20 and st.hop == 10
    assert len(list((tmp_path / "st" / "shards").iterdir())) == 3
    np.testing.assert_array_equal(st.read(7), x[7])
    order = [10, 0, 5, 4, 3]
    np.testing.assert_array_equal(st.read_batch(order), x[order])
    np.testing.assert_array_equal(st.labels, y)
    assert st.subject_names == ["s1", "s2"] and list(st.subjects) == [0] * 5 + [1] * 6
    assert list(st.splits) == [-1] * 5 + [2] * 6
    s = st.summary()
    assert s["windows"] == 11 and sum(s["per_label"].values()) == 11
    assert not list(tmp_path.glob(".st.tmp-*"))


def test_float16_store_and_overflow(tmp_path):
    x, _ = _write(tmp_path / "h", dtype="float16")
    st = WindowStore(tmp_path / "h")
    assert st.read(0).dtype == np.float32
    np.testing.assert_allclose(st.read_batch(range(10)), x, rtol=1e-3, atol=1e-3)
    with pytest.raises(WearspecError, match="overflow float16"):
        with StoreWriter(tmp_path / "o", channels=["a"], rate=1, window=2, hop=1, dtype="float16") as w:
            w.add(np.full((1, 1, 2), 1e6), "s", "r", np.zeros(1))
    assert not (tmp_path / "o").exists()


def test_error_inside_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "st", channels=["a"], rate=1, window=2, hop=1) as w:
            w.add(np.zeros((3, 1, 2)), "s", "r", np.zeros(3))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_shape_nan_and_label_checks(tmp_path):
    with StoreWriter(tmp_path / "st", channels=["a", "b"], rate=1, window=4, hop=1, label_names=["x"]) as w:
        with pytest.raises(WearspecError, match=r"expected windows of shape \(n, 2, 4\)"):
            w.add(np.zeros((1, 3, 4)), "s", "r", np.zeros(1))
        with pytest.raises(WearspecError, match="NaN"):
            w.add(np.full((1, 2, 4), np.nan), "s", "r", np.zeros(1))
        with pytest.raises(WearspecError, match="label code 1 has no name"):
            w.add(np.zeros((1, 2, 4)), "s", "r", np.zeros(1), np.array([1]))
        w.add(np.zeros((1, 2, 4)), "s", "r", np.zeros(1), np.array([0]))
    assert len(WindowStore(tmp_path / "st")) == 1


def test_empty_store_is_an_error(tmp_path):
    with pytest.raises(WearspecError, match="no windows"):
        with StoreWriter(tmp_path / "st", channels=["a"], rate=1, window=2, hop=1):
            pass
    assert not (tmp_path / "st").exists()


def test_truncated_shard_and_bad_manifest(tmp_path):
    _write(tmp_path / "st")
    shard = tmp_path / "st" / "shards" / "00001.bin"
    shard.write_bytes(shard.read_bytes()[:-7])
    with pytest.raises(WearspecError, match="00001.bin: shard is missing or truncated"):
        WindowStore(tmp_path / "st")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(WearspecError, match="manifest.json: invalid JSON at line 1"):
        WindowStore(tmp_path / "bad")
    with pytest.raises(WearspecError, match="not a window store"):
        WindowStore(tmp_path / "nothing")


def test_check_output(tmp_path):
    assert check_output(tmp_path / "absent", "fp") is False
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", "fp") is False
    _write(tmp_path / "st", fingerprint="fp")
    assert check_output(tmp_path / "st", "fp") is True
    with pytest.raises(WearspecError, match="already holds a different store"):
        check_output(tmp_path / "st", "other")
    assert check_output(tmp_path / "st", "other", overwrite=True) is False
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(WearspecError, match="holds no window store"):
        check_output(tmp_path / "junk", "fp")
    with pytest.raises(WearspecError, match="refusing to overwrite"):
        check_output(tmp_path / "junk", "fp", overwrite=True)


def test_overwrite_replaces_atomically(tmp_path):
    _write(tmp_path / "st", n=6, fingerprint="a")
    with pytest.raises(WearspecError, match="refusing to replace it"):  # a store is replaced only when asked
        _write(tmp_path / "st", n=8, fingerprint="b")
    assert len(WindowStore(tmp_path / "st")) == 6
    _write(tmp_path / "st", n=8, fingerprint="b", overwrite=True)
    st = WindowStore(tmp_path / "st")
    assert len(st) == 8 and json.loads((tmp_path / "st" / "manifest.json").read_text())["fingerprint"] == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]


def test_duplicate_indices_and_shard_array(tmp_path):
    x, _ = _write(tmp_path / "st", n=9, shard=4)
    st = WindowStore(tmp_path / "st")
    got = st.read_batch(np.array([3, 3, 8, 0, 4, 5]))
    np.testing.assert_array_equal(got, x[[3, 3, 8, 0, 4, 5]])
    assert got.flags.writeable and st.read(2).flags.writeable
    np.testing.assert_array_equal(st.shard_array(1), x[4:8])
    with pytest.raises(IndexError):
        st.read_batch([9])


def test_failed_writer_removes_the_folders_it_created(tmp_path):
    with pytest.raises(WearspecError):
        with StoreWriter(tmp_path / "a" / "b" / "st", channels=["a"], rate=1, window=2, hop=1):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_store_of_many_shards_reads_under_a_low_open_file_limit(tmp_path, monkeypatch):
    import resource

    import wearspec.data.store as store_module

    n = 300
    with StoreWriter(tmp_path / "many", channels=["a"], rate=1.0, window=4, hop=4, shard_windows=2) as w:
        w.add(np.arange(n * 4, dtype=np.float32).reshape(n, 1, 4), "s", "r", np.arange(n) * 4.0)
    store = WindowStore(tmp_path / "many")
    assert len(store.manifest["shards"]) == n // 2
    monkeypatch.setattr(store_module, "MAX_OPEN_SHARDS", 32)  # what a limit of 64 open files gives
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    open_now = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, open_now + store_module.MAX_OPEN_SHARDS + 16), hard))
    try:
        idx = np.random.default_rng(0).permutation(n)
        got = store.read_batch(idx)
        assert np.array_equal(got[:, 0, 0], idx * 4.0)
        assert len(store._fds) <= 32
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
