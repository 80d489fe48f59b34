"""The classical baseline: window features against a plain per-window reference, and the models on a split."""

import numpy as np
import pytest

from wearspec.config import from_dict
from wearspec.data.splits import SplitConfig, make_splits
from wearspec.data.store import StoreWriter, WindowStore
from wearspec.errors import WearspecError
from wearspec.evaluate import classical as cl
from wearspec.evaluate.classical import (
    ClassicalConfig,
    band_edges,
    classical_baseline,
    feature_names,
    magnitude_groups,
    window_features,
)

CH6 = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]


def _reference(w: np.ndarray, rate: float, channels: list[str]) -> dict:
    """One window (C, T) → {name: value}, one signal and one statistic at a time."""
    w = w.astype(np.float64)
    signals = {c: w[i] for i, c in enumerate(channels)}
    for name, (a, b, c) in magnitude_groups(channels):
        signals[name] = np.sqrt(w[a] ** 2 + w[b] ** 2 + w[c] ** 2)
    out = {}
    t = w.shape[1]
    freqs = np.fft.rfftfreq(t, 1 / rate)
    for name, s in signals.items():
        d = s - s.mean()
        p = {q: np.percentile(s, q) for q in (5, 25, 50, 75, 95)}
        power = np.abs(np.fft.rfft(d)) ** 2 / t**2
        for k in range(1, len(power)):
            if not (t % 2 == 0 and k == t // 2):
                power[k] *= 2
        power[0] = 0
        k = 1 + int(np.argmax(power[1:]))
        vals = {"mean": s.mean(), "sd": s.std(), "min": s.min(), "max": s.max(),
                **{f"p{q}": v for q, v in p.items()}, "iqr": p[75] - p[25],
                "mad_diff": np.mean(np.abs(np.diff(s))),
                "zcr": np.mean([d[i] * d[i + 1] < 0 for i in range(t - 1)]),
                "dom_freq": freqs[k], "dom_share": power[k] / power.sum()}
        for lo, hi in band_edges(rate, t):
            inside = [(lo <= f < hi) or (f == hi == rate / 2) for f in freqs]
            vals[f"band_{lo:g}-{hi:g}Hz"] = np.log1p(power[inside].sum() / 1e-6)
        out.update({f"{name}:{k}": v for k, v in vals.items()})
    for i in range(len(channels)):
        for j in range(i + 1, len(channels)):
            out[f"corr:{channels[i]},{channels[j]}"] = np.corrcoef(w[i], w[j])[0, 1]
    return out


@pytest.mark.parametrize("t,rate,dtype", [(128, 50.0, np.float32), (75, 20.0, np.float16)])
def test_features_match_reference(rng, t, rate, dtype):
    x = (rng.normal(size=(7, 6, t)) + rng.normal(size=(7, 6, 1))).astype(dtype)
    feats, names = window_features(x, rate, CH6, chunk=3)  # chunks of 3: 3 + 3 + 1
    assert feats.dtype == np.float32 and feats.shape == (7, len(names)) and names == feature_names(CH6, rate, t)
    assert len(set(names)) == len(names)
    for n in (0, 3, 6):
        ref = _reference(x[n], rate, CH6)
        assert sorted(ref) == sorted(names)
        np.testing.assert_allclose(feats[n], [ref[k] for k in names], rtol=2e-5, atol=2e-5)


def test_long_windows_are_cut_into_smaller_chunks(rng, monkeypatch):
    x = rng.normal(size=(10, 3, 50)).astype(np.float32)
    whole, _ = window_features(x, 25.0, ["x", "y", "z"])
    monkeypatch.setattr(cl, "CHUNK_VALUES", 4 * 50 * 3)  # 4 signals (3 channels and |xyz|): 3 windows a chunk
    sizes = []
    real = cl._features_chunk
    monkeypatch.setattr(cl, "_features_chunk", lambda part, *a: sizes.append(len(part)) or real(part, *a))
    np.testing.assert_array_equal(window_features(x, 25.0, ["x", "y", "z"])[0], whole)
    assert sizes == [3, 3, 3, 1]


def test_constant_channels_give_zero_not_nan(rng):
    x = rng.normal(size=(4, 3, 64)).astype(np.float32)
    x[:, 1] = 0.1  # constant, not representable exactly: de-meaning leaves rounding dust
    x[2] = 5.0  # a whole window constant
    feats, names = window_features(x, 32.0, ["a", "b", "c"])
    assert np.isfinite(feats).all()
    col = dict(zip(names, feats.T))
    for stat in ("sd", "iqr", "mad_diff", "zcr", "dom_freq", "dom_share", "band_1-2Hz"):
        assert (col[f"b:{stat}"] == 0).all(), stat
    assert (col["corr:a,b"] == 0).all() and (col["corr:b,c"] == 0).all()
    np.testing.assert_allclose(col["b:mean"][[0, 1, 3]], 0.1, rtol=1e-6)
    assert (feats[2][[i for i, n in enumerate(names) if n.endswith(":sd") or n.startswith("corr")]] == 0).all()


def test_magnitudes_from_channel_names():
    assert magnitude_groups(CH6) == [("|acc|", (0, 1, 2)), ("|gyro|", (3, 4, 5))]
    assert magnitude_groups(["x", "y", "z"]) == [("|xyz|", (0, 1, 2))]
    assert magnitude_groups(["hand_acc_x", "hand_acc_y", "hand_acc_z", "hr"]) == [("|hand_acc|", (0, 1, 2))]
    assert magnitude_groups(["c0", "c1", "c2", "c3", "c4", "c5"]) == [("|c0,c1,c2|", (0, 1, 2)),
                                                                      ("|c3,c4,c5|", (3, 4, 5))]
    assert magnitude_groups(["c0", "c1"]) == [] and magnitude_groups(["mic"]) == []
    names = feature_names(["mic"], 16000.0, 16000)
    assert not any(n.startswith("corr") or n.startswith("|") for n in names)
    assert band_edges(50.0, 128)[-1] == (16.0, 25.0) and band_edges(50.0, 128)[0] == (0.0, 0.5)
    assert band_edges(50.0, 50)[0] == (1.0, 2.0)  # 1 Hz bins: the sub-Hz bands hold no bin
    assert len(feature_names(CH6 * 1 + [f"e{i}" for i in range(7)], 50.0, 128)) > 0  # 13 channels: no corr
    assert not any(n.startswith("corr") for n in feature_names([f"e{i}" for i in range(13)], 50.0, 128))


def test_bad_input():
    with pytest.raises(WearspecError, match=r"window_features: expected windows \(N, 2, T ≥ 2\)"):
        window_features(np.zeros((3, 3, 10)), 10.0, ["a", "b"])
    x = np.zeros((3, 2, 10), np.float32)
    x[1, 0, 4] = np.nan
    with pytest.raises(WearspecError, match="window 1 holds NaN"):
        window_features(x, 10.0, ["a", "b"])
    with pytest.raises(WearspecError, match="classical.models"):
        ClassicalConfig(models=["svm"]).validate()
    with pytest.raises(WearspecError, match="unknown config key n_tree "):
        from_dict(ClassicalConfig, {"n_tree": 3})


def _store(path, rng, subjects=8, per=16):
    """Two well separated classes (a 2 Hz vs a 6 Hz tone) with subject-specific amplitude and noise."""
    t = np.arange(40) / 20.0
    with StoreWriter(path, channels=["ax", "ay", "az"], rate=20, window=40, hop=20,
                     label_names=["slow", "fast"], shard_windows=50) as w:
        for s in range(subjects):
            y = np.arange(per) % 2
            f = np.where(y == 0, 2.0, 6.0)[:, None, None]
            x = rng.uniform(0.5, 2) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6, (per, 3, 1)))
            w.add(x + rng.normal(scale=0.3, size=x.shape), f"s{s}", f"s{s}-r", np.arange(per) * 1.0, y)
    return WindowStore(path)


def test_models_beat_chance_and_never_fit_on_test(tmp_path, rng, monkeypatch):
    store = _store(tmp_path / "store", rng)
    splits = make_splits(store, np.flatnonzero(store.labels >= 0), SplitConfig(mode="kfold", k=4, val_fraction=0.2))
    seen = []
    real = cl.fit_model

    def spy(model, train_x, train_y, val_x, val_y, cfg, seed=0):
        seen.append((model, train_x, val_x))
        return real(model, train_x, train_y, val_x, val_y, cfg, seed)

    monkeypatch.setattr(cl, "fit_model", spy)
    cfg = ClassicalConfig(n_trees=20, n_jobs=1, logreg_cs=[0.1, 1.0])
    res = classical_baseline(store, splits, cfg, seed=0)
    feats, _ = cl.store_features(store, np.arange(len(store)))
    assert res["enabled"] and res["models"] == ["logreg", "forest"] and res["features"]["count"] == feats.shape[1]
    for i, sp in enumerate(splits):  # each fit got exactly the split's training rows; validation rows only to choose
        for model, train_x, val_x in seen[2 * i:2 * i + 2]:
            np.testing.assert_array_equal(train_x, feats[sp.train])
            np.testing.assert_array_equal(val_x, feats[sp.val])
    for m in ("logreg", "forest"):
        r = res[m]
        assert r["n"] == len(store) and r["n_subjects"] == 8  # every subject tested once over the folds
        assert r["pooled"]["macro_f1"] > 0.9 and set(r["subject_summary"]) == {"accuracy", "macro_f1", "kappa"}
        assert len(r["selection"]) == 4
    assert {s["C"] for s in res["logreg"]["selection"]} <= {0.1, 1.0}
    assert res["logreg"]["selection"][0]["selected_on"] == "val" and len(res["logreg"]["selection"][0]["sweep"]) == 2
    assert [s["name"] for s in res["splits"]] == [sp.name for sp in splits]
    assert classical_baseline(store, splits, ClassicalConfig(enabled=False)) == {"enabled": False}
    one_class = make_splits(store, np.flatnonzero(store.labels == 0), SplitConfig(mode="kfold", k=2))
    with pytest.raises(WearspecError, match="split fold1of2: the training subjects' windows hold fewer than 2"):
        classical_baseline(store, one_class, cfg)
    only = classical_baseline(store, splits[:1], ClassicalConfig(models=["forest"], n_trees=5, n_jobs=1))
    assert only["models"] == ["forest"] and "logreg" not in only
