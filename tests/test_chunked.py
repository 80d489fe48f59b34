"""Chunked windowing (wearspec.data.chunked) equals cutting the whole recording at once."""

from __future__ import annotations

import numpy as np
import pytest

from wearspec.data.chunked import RecordingStream, cut_stream
from wearspec.data.windowing import Recording, WindowSpec, cut_windows
from wearspec.errors import WearspecError


def _signal(n: int, c: int = 3, seed: int = 0, nan_runs=((50, 53), (400, 460), (997, 1004))) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(size=(c, n)), axis=1).astype(np.float32)
    for a, b in nan_runs:
        x[a % c, a:b] = np.nan
    if n > 700:
        x[1, 700] = np.inf
    return x


def _chunks(x, labels, sizes):
    pos, k = 0, 0
    while pos < x.shape[1]:
        n = sizes[k % len(sizes)]
        yield x[:, pos : pos + n], None if labels is None else labels[pos : pos + n]
        pos, k = pos + n, k + 1


def _both(x, labels, spec, rate, sizes, start=3.0):
    whole = cut_windows(Recording("s", "r", x, rate, labels, start=start, source="f"), spec, x.shape[0])
    parts = list(cut_stream(RecordingStream("s", "r", rate, _chunks(x, labels, sizes), start=start, source="f"),
                            spec, x.shape[0]))
    got = [np.concatenate([p[i] for p in parts]) if parts else whole[i][:0] for i in range(3)]
    return whole, got


@pytest.mark.parametrize("policy", ["interpolate", "drop", "zero"])
@pytest.mark.parametrize("sizes", [(1,), (7, 130, 2), (333,), (5000,)])
def test_same_rate_is_bit_identical_across_chunk_edges(policy, sizes):
    x = _signal(2100)
    labels = (np.arange(2100) // 170 % 4 - 1).astype(np.int32)
    spec = WindowSpec(rate=50, length_s=2, hop_s=0.7, nan_policy=policy, max_nan_fraction=0.3)
    whole, got = _both(x, labels, spec, 50.0, sizes)
    assert len(whole[0]) > 10
    for a, b in zip(whole, got):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rate,target", [(100.0, 50.0), (30.0, 50.0), (100.0, 30.0)])
@pytest.mark.parametrize("sizes", [(97,), (1000, 13)])
def test_resampled_matches_whole_recording(rate, target, sizes):
    x = _signal(3000, seed=1)
    spec = WindowSpec(rate=target, length_s=2, hop_s=1)
    whole, got = _both(x, None, spec, rate, sizes)
    assert len(whole[0]) > 5 and len(got[0]) == len(whole[0])
    np.testing.assert_allclose(got[0], whole[0], atol=1e-5)
    np.testing.assert_array_equal(got[1], whole[1])
    np.testing.assert_array_equal(got[2], whole[2])


def test_short_recordings_and_errors():
    x = _signal(60, nan_runs=())
    spec = WindowSpec(rate=50, length_s=2, hop_s=1, short_policy="pad")
    whole, got = _both(x, np.zeros(60, np.int32), spec, 50.0, (25,))
    for a, b in zip(whole, got):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(WearspecError, match="shorter than one window"):
        _both(x, None, WindowSpec(rate=50, length_s=2, hop_s=1), 50.0, (25,))
    bad = _signal(300)
    with pytest.raises(WearspecError, match=r"f, sample 50: NaN/Inf"):
        list(cut_stream(RecordingStream("s", "r", 50.0, _chunks(bad, None, (40,)), source="f"),
                        WindowSpec(rate=50, length_s=2, hop_s=1, nan_policy="error"), 3))


def test_buffer_stays_bounded():
    """A long recording in small chunks: the native buffer never holds more than a chunk and a window."""
    from wearspec.data import chunked

    spec = WindowSpec(rate=50, length_s=2, hop_s=1)
    item = RecordingStream("s", "r", 100.0, _chunks(_signal(20000, nan_runs=((10, 30),)), None, (500,)))
    win = chunked._Windower(item, spec, 3)
    peak = 0
    for data, labels in item.chunks:
        win.push(data, labels)
        for _ in win.advance(final=False):
            pass
        peak = max(peak, win.x.shape[1], win.tx.shape[1] if win.tx is not None else 0)
    assert peak < 500 + 2 * win.rs.margin + 2 * spec.window * 2
