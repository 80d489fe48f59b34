import numpy as np
import pytest

from wearspec.data.windowing import (
    Recording,
    WindowBatch,
    WindowSpec,
    cut_windows,
    resample,
    uniform_from_timestamps,
    window_labels,
)
from wearspec.errors import WearspecError


def test_resample_keeps_a_sinusoid():
    t = np.arange(1000) / 100.0
    x = np.sin(2 * np.pi * 2.0 * t)[None]
    y = resample(x, 100.0, 50.0)
    assert y.shape == (1, 500)
    ref = np.sin(2 * np.pi * 2.0 * np.arange(500) / 50.0)
    assert np.abs(y[0, 20:-20] - ref[20:-20]).max() < 1e-2
    assert resample(x, 100.0, 100.0) is x
    z = resample(x, 100.0, 64.0)  # non-integer ratio
    assert z.shape == (1, 640)


def test_windows_starts_and_labels():
    rec = Recording("s", "r", np.arange(300, dtype=float)[None].repeat(2, 0), 50.0,
                    labels=np.repeat([0, 1, 2], 100), start=10.0)
    spec = WindowSpec(rate=50, length_s=1.0, hop_s=0.5)
    w, s, lab = cut_windows(rec, spec, 2)
    assert w.shape == (11, 2, 50)  # 6 s, 1 s windows, 0.5 s hop
    np.testing.assert_allclose(s, 10.0 + np.arange(11) * 0.5)
    np.testing.assert_array_equal(w[1, 0], np.arange(25, 75))
    assert [lab[0], lab[2], lab[4], lab[6], lab[8], lab[10]] == [0, 0, 1, 1, 2, 2]


def test_window_label_policies():
    labels = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [-1, -1, -1, 2], [3, 3, 3, 3]])
    assert list(window_labels(labels, WindowSpec(label_policy="majority"))) == [0, 0, -1, 3]
    assert list(window_labels(labels, WindowSpec(label_policy="pure"))) == [-1, -1, -1, 3]
    assert list(window_labels(labels, WindowSpec(label_policy="center"))) == [0, 1, -1, 3]


@pytest.mark.parametrize("policy,expected", [("drop", 3), ("interpolate", 4), ("zero", 4)])
def test_nan_policies(policy, expected):
    x = np.ones((1, 100))
    x[0, 5] = np.nan  # one NaN sample in window 0 (20 samples): 5 % missing
    x[0, 25:40] = np.inf  # 75 % missing in window 1
    rec = Recording("s", "r", x, 10.0)
    spec = WindowSpec(rate=10, length_s=2, hop_s=2, nan_policy=policy, max_nan_fraction=0.1)
    w, s, _ = cut_windows(rec, spec)
    assert len(w) == expected and np.isfinite(w).all()
    if policy == "interpolate":
        assert w[0, 0, 5] == pytest.approx(1.0)
    if policy == "zero":
        assert w[0, 0, 5] == 0.0


def test_nan_policy_error_names_source_and_sample():
    x = np.ones((2, 50))
    x[1, 17] = np.nan
    with pytest.raises(WearspecError, match=r"rec\.csv, sample 17: NaN/Inf"):
        cut_windows(Recording("s", "r", x, 10.0, source="rec.csv"), WindowSpec(rate=10, length_s=1, hop_s=1,
                                                                                nan_policy="error"))


def test_short_recording_policies():
    rec = Recording("s", "r", np.ones((1, 30)), 10.0, source="short.csv")
    with pytest.raises(WearspecError, match="short.csv: recording is 3.00 s long, shorter than one window"):
        cut_windows(rec, WindowSpec(rate=10, length_s=5, hop_s=1))
    assert len(cut_windows(rec, WindowSpec(rate=10, length_s=5, hop_s=1, short_policy="skip"))[0]) == 0
    w, _, _ = cut_windows(rec, WindowSpec(rate=10, length_s=5, hop_s=1, short_policy="pad"))
    assert w.shape == (1, 1, 50) and w[0, 0, 29] == 1 and w[0, 0, 30] == 0


def test_channel_count_mismatch():
    with pytest.raises(WearspecError, match="f.txt: expected 3 channels, got 2"):
        cut_windows(Recording("s", "r", np.ones((2, 100)), 10.0, source="f.txt"), WindowSpec(rate=10, length_s=1), 3)


def test_window_batch_resample_and_pad():
    b = WindowBatch("s", "r", np.ones((4, 3, 128)), 50.0, labels=np.array([0, 1, 2, 3]))
    w, s, lab = cut_windows(b, WindowSpec(rate=25, length_s=2.56, hop_s=1.28), 3)
    assert w.shape == (4, 3, 64) and list(lab) == [0, 1, 2, 3]


def test_spec_validation():
    for bad in (dict(rate=0), dict(length_s=0.01), dict(hop_s=0.0001), dict(nan_policy="keep"),
                dict(max_nan_fraction=2), dict(label_policy="mode")):
        with pytest.raises(WearspecError):
            WindowSpec(**bad).validate()


def test_uniform_from_timestamps():
    t = np.concatenate([np.arange(100) / 50.0, 10 + np.arange(100) / 50.0])
    segs = list(uniform_from_timestamps(t, 50.0, "a.csv"))
    assert segs == [(0, 100, 50.0), (100, 200, 50.0)]
    with pytest.raises(WearspecError, match="inconsistent sampling rate: timestamps imply 50 Hz but the declared rate is 100"):
        list(uniform_from_timestamps(t, 100.0, "a.csv"))
    with pytest.raises(WearspecError, match=r"a.csv, row 3: timestamps must increase"):
        list(uniform_from_timestamps(np.array([0.0, 0.1, 0.2, 0.1]), None, "a.csv"))
    jitter = np.cumsum(np.where(np.arange(200) % 3 == 0, 0.04, 0.01))
    with pytest.raises(WearspecError, match="inconsistent sampling rate: .* of intervals differ"):
        list(uniform_from_timestamps(jitter, None, "b.csv"))


def test_edge_cases_single_timestamp_and_empty_pad():
    with pytest.raises(WearspecError, match="cannot give a sampling rate"):
        list(uniform_from_timestamps(np.array([1.0]), None, "one.csv"))
    assert list(uniform_from_timestamps(np.array([1.0]), 10.0, "one.csv")) == [(0, 1, 10.0)]
    with pytest.raises(WearspecError, match=r"g.csv, row 12: timestamps must increase"):
        list(uniform_from_timestamps(np.array([0.0, 0.1, 0.05]), None, "g.csv", first_row=10))
    rec = Recording("s", "r", np.zeros((1, 0)), 10.0, labels=np.zeros(0, np.int32))
    w, _, lab = cut_windows(rec, WindowSpec(rate=10, length_s=1, hop_s=1, short_policy="pad"))
    assert w.shape == (1, 1, 10) and list(lab) == [-1]
