"""Metrics, features and cache, k-NN, linear probe and plots of ``wearspec.evaluate``."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from wearspec.data.dataset import WindowDataset
from wearspec.data.store import StoreWriter, WindowStore
from wearspec.evaluate import linear as linear_mod
from wearspec.evaluate.features import FeatureCache, cache_key, extract_features, hash_module
from wearspec.evaluate.knn import knn_predict
from wearspec.evaluate.linear import LinearProbeConfig, fit_linear_probe, linear_probe
from wearspec.evaluate.metrics import (
    accuracy,
    classification_report,
    cohen_kappa,
    confusion_matrix,
    macro_f1,
    mean_sd,
    per_class_f1,
)
from wearspec.evaluate.plots import plot_confusion, plot_per_subject, plot_training_curves

PNG = b"\x89PNG\r\n\x1a\n"

# -- metrics ---------------------------------------------------------------------------------------

T6 = [0, 0, 1, 1, 2, 2]
P6 = [0, 1, 1, 1, 2, 0]


def test_accuracy_f1_kappa_hand_computed():
    assert accuracy(T6, P6) == pytest.approx(4 / 6)
    # class 0: TP1 FP1 FN1 → 1/2; class 1: TP2 FP1 → 4/5; class 2: TP1 FN1 → 2/3
    assert per_class_f1(T6, P6) == pytest.approx({0: 0.5, 1: 0.8, 2: 2 / 3})
    assert macro_f1(T6, P6) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # p_o = 2/3, p_e = (2·2 + 2·3 + 2·1) / 36 = 1/3 → κ = (1/3) / (2/3)
    assert cohen_kappa(T6, P6) == pytest.approx(0.5)
    np.testing.assert_array_equal(confusion_matrix(T6, P6, 4),
                                  [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)


def test_macro_f1_absent_classes():
    t, p = [0, 0, 1], [0, 2, 1]  # class 2 predicted but never true: F1 0, averaged
    assert macro_f1(t, p) == pytest.approx((2 / 3 + 1 + 0) / 3)
    # class 3: no support and no predictions → excluded, not 0
    assert macro_f1(t, p, labels=[0, 1, 2, 3]) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert math.isnan(per_class_f1(t, p, labels=[3])[3])
    assert macro_f1(t, p, labels=[0, 1]) == pytest.approx((2 / 3 + 1) / 2)
    assert math.isnan(macro_f1([], [])) and math.isnan(accuracy([], [])) and math.isnan(cohen_kappa([], []))


def test_kappa_edge_cases():
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) == 1.0  # p_e = 1, perfect: defined as 1
    assert cohen_kappa([0, 0, 0], [1, 1, 1]) == 0.0  # one class each, never agree
    assert cohen_kappa([0, 0, 0], [0, 0, 1]) == 0.0  # rows [3,0], cols [2,1]: (3·2 − 6) / (9 − 6)
    assert cohen_kappa([0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    assert cohen_kappa([0, 1], [1, 0]) == pytest.approx(-1.0)


def test_mean_sd_sample_sd():
    assert mean_sd([0.5]) == {"mean": 0.5, "sd": 0.0, "n": 1}
    r = mean_sd([1.0, 2.0, 4.0])
    assert r["mean"] == pytest.approx(7 / 3) and r["sd"] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert mean_sd([1.0, float("nan")])["n"] == 1


def test_classification_report_per_subject():
    subjects = np.array([0, 0, 0, 0, 1, 1])
    r = classification_report(T6, P6, subjects, ["a", "b", "c"], subject_names=["A", "B"])
    assert r["n"] == 6 and r["n_subjects"] == 2
    assert r["pooled"]["accuracy"] == pytest.approx(4 / 6) and r["pooled"]["kappa"] == pytest.approx(0.5)
    a, b = r["per_subject"]["A"], r["per_subject"]["B"]
    # A: t [0,0,1,1], p [0,1,1,1]; B: t [2,2], p [2,0]
    assert (a["n"], a["accuracy"], b["accuracy"]) == (4, 0.75, 0.5)
    assert a["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2) and b["macro_f1"] == pytest.approx(1 / 3)
    assert a["kappa"] == pytest.approx(0.5) and b["kappa"] == pytest.approx(0.0)
    acc = r["subject_summary"]["accuracy"]
    assert acc["mean"] == pytest.approx(0.625) and acc["sd"] == pytest.approx(0.25 / math.sqrt(2)) and acc["n"] == 2
    assert r["per_class"]["a"] == {"f1": 0.5, "precision": 0.5, "recall": 0.5, "support": 2, "predicted": 2}
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    one = classification_report([1, 1], [1, 1], ["s", "s"], ["a", "b", "c"])
    assert one["subject_summary"]["kappa"] == {"mean": 1.0, "sd": 0.0, "n": 1}
    assert one["per_class"]["a"]["f1"] is None and one["per_class"]["b"]["f1"] == 1.0


# -- k-NN ------------------------------------------------------------------------------------------


def _knn_brute(train, ytr, test, k, T, n_classes):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    preds, scores = [], []
    for q in test:
        q = q / np.linalg.norm(q)
        sims = [float(np.dot(q, x)) for x in train]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * n_classes
        for i in order:
            votes[ytr[i]] += math.exp(sims[i] / T)
        scores.append(votes)
        preds.append(max(range(n_classes), key=lambda c: (votes[c], -c)))
    return np.array(preds), np.array(scores)


def test_knn_matches_brute_force(rng):
    centers = rng.normal(size=(4, 8))
    ytr = rng.integers(0, 4, 120)
    train = centers[ytr] + rng.normal(scale=1.5, size=(120, 8))
    test = centers[rng.integers(0, 4, 37)] + rng.normal(scale=1.5, size=(37, 8))
    for k in (1, 5, 20, 500):
        pred, scores = knn_predict(train.astype(np.float32), ytr, test.astype(np.float32), k=k, T=0.07,
                                   n_classes=5, chunk_size=8)
        bp, bs = _knn_brute(train, ytr, test, min(k, 120), 0.07, 5)
        np.testing.assert_array_equal(pred, bp)
        np.testing.assert_allclose(scores, bs, rtol=2e-3)
        assert scores.shape == (37, 5) and pred.dtype == np.int64
    # separable toy problem: perfect
    pred, _ = knn_predict(np.eye(3).repeat(5, 0), np.arange(3).repeat(5), np.eye(3) + 0.01, k=5)
    np.testing.assert_array_equal(pred, [0, 1, 2])


# -- linear probe ----------------------------------------------------------------------------------


def _blobs(rng, n, centers, scale=1.0):
    y = rng.integers(0, len(centers), n)
    return (centers[y] + rng.normal(scale=scale, size=(n, centers.shape[1]))).astype(np.float32), y


FAST = LinearProbeConfig(lrs=[1e-2, 1e-1], weight_decays=[0.0, 1e-3], epochs=15, batch_size=64)


def test_linear_probe_separable_blobs_and_determinism(rng):
    centers = rng.normal(size=(4, 12)) * 4 + 50  # offset: standardisation must cope
    xtr, ytr = _blobs(rng, 300, centers)
    xva, yva = _blobs(rng, 80, centers)
    xte, yte = _blobs(rng, 80, centers)
    probe, pred = linear_probe(xtr, ytr, xva, yva, xte, 4, FAST, seed=3)
    assert accuracy(yte, pred) >= 0.99
    sel = probe.selection()
    assert sel["selected_on"] == "val" and len(sel["sweep"]) == 4
    assert (sel["lr"], sel["weight_decay"]) in [(p["lr"], p["weight_decay"]) for p in sel["sweep"]]
    assert sel["score"] == max(p["val_macro_f1"] for p in sel["sweep"])
    again = fit_linear_probe(xtr, ytr, xva, yva, 4, FAST, seed=3)
    np.testing.assert_array_equal(again.weight, probe.weight)
    np.testing.assert_array_equal(again.bias, probe.bias)
    balanced = fit_linear_probe(xtr, ytr, xva, yva, 4, LinearProbeConfig(
        lrs=[0.1], weight_decays=[0.0], epochs=10, batch_size=0, optimizer="adamw", class_balanced=True))
    assert accuracy(yte, balanced.predict(xte)[0]) >= 0.99


def _reference_probe(x, y, n_classes, lr, wd, cfg, seed):
    """One nn.Linear trained with torch.optim, the schedule and batch order of ``_train_heads``."""
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(n_classes, x.shape[1], generator=g) * 0.01)
        head.bias.zero_()
    opt = (torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=wd) if cfg.optimizer == "sgd"
           else torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd))
    weight = linear_mod._class_weights(y, n_classes) if cfg.class_balanced else None
    steps = math.ceil(len(x) / cfg.batch_size)
    total, step = cfg.epochs * steps, 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=g)
        for k in range(steps):
            opt.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            b = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            loss = torch.nn.functional.cross_entropy(head(x[b]), y[b], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return head


@pytest.mark.parametrize("optimizer,balanced", [("sgd", False), ("adamw", True)])
def test_joint_sweep_equals_separate_training(rng, optimizer, balanced):
    centers = rng.normal(size=(3, 6)) * 2
    xtr, ytr = _blobs(rng, 120, centers)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    cfg = LinearProbeConfig(lrs=[1e-2, 1e-1], weight_decays=[0.0, 1e-2], epochs=4, batch_size=32,
                            optimizer=optimizer, class_balanced=balanced)
    points = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    w, b = linear_mod._train_heads(x, y, 3, points, cfg, seed=1)
    for i, (lr, wd) in enumerate(points):
        ref = _reference_probe(x, y, 3, lr, wd, cfg, seed=1)
        torch.testing.assert_close(w[i], ref.weight.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b[i], ref.bias.detach(), rtol=1e-4, atol=1e-5)


def test_selection_uses_validation_only(rng):
    """A near-frozen probe (tiny lr) vs a trained one: val labels favour the trained probe, while test
    labels are crafted to equal the near-frozen probe's predictions, so a test-selected sweep would
    pick the tiny lr."""
    centers = rng.normal(size=(3, 10)) * 3
    xtr, ytr = _blobs(rng, 200, centers)
    xva, yva = _blobs(rng, 60, centers)
    xte, _ = _blobs(rng, 60, centers)
    cfg = LinearProbeConfig(lrs=[1e-9, 0.1], weight_decays=[0.0], epochs=10, batch_size=50)
    frozen = fit_linear_probe(xtr, ytr, xva, yva, 3, LinearProbeConfig(lrs=[1e-9], weight_decays=[0.0], epochs=10,
                                                                       batch_size=50))
    yte = frozen.predict(xte)[0]  # labels a test-selected sweep would fit perfectly with lr=1e-9

    class Guard:
        """Test features that refuse to be read before selection is over."""

        selected = False

        def __array__(self, dtype=None, copy=None):
            assert Guard.selected, "test features were read before model selection finished"
            return xte if dtype is None else xte.astype(dtype)

    real_fit = linear_mod.fit_linear_probe

    def fit_then_flag(*args, **kwargs):
        probe = real_fit(*args, **kwargs)
        Guard.selected = True
        return probe

    linear_mod.fit_linear_probe = fit_then_flag
    try:
        probe, pred = linear_probe(xtr, ytr, xva, yva, Guard(), 3, cfg)
    finally:
        linear_mod.fit_linear_probe = real_fit
    assert probe.lr == 0.1 and probe.selected_on == "val"
    assert macro_f1(yte, frozen.predict(xte)[0]) == 1.0 > macro_f1(yte, pred)
    # without validation windows the training score decides, and the report says so
    no_val = fit_linear_probe(xtr, ytr, np.zeros((0, 10)), np.zeros(0), 3, cfg)
    assert no_val.selected_on == "train" and "train_macro_f1" in no_val.sweep[0]


# -- features and cache ----------------------------------------------------------------------------


class StandIn(nn.Module):
    """Fixed random projection of flattened windows, with the encoder's probe API."""

    def __init__(self, c, t, d=6):
        super().__init__()
        self.register_buffer("proj", torch.randn(c * t, d, generator=torch.Generator().manual_seed(0)))
        self.calls = 0
        self.modes = []

    def probe_features(self, x_raw, n_last=1, avgpool=False):
        self.calls += 1
        self.modes.append((self.training, torch.is_inference_mode_enabled()))
        return x_raw.flatten(1) @ self.proj * n_last


@pytest.fixture
def store(tmp_path, rng):
    with StoreWriter(tmp_path / "st", channels=["a", "b"], rate=10, window=8, hop=4, label_names=["x", "y"],
                     shard_windows=5) as w:
        for s in range(3):
            w.add(rng.normal(size=(7, 2, 8)), f"s{s}", f"r{s}", np.arange(7.0), np.arange(7) % 2)
    return WindowStore(tmp_path / "st")


def test_extract_features_order_mode_and_dataset(store):
    enc = StandIn(2, 8).train()
    idx = np.array([20, 3, 4, 11, 0])
    feats, labels, subjects = extract_features(enc.probe_features, store, idx, batch_size=2, progress=False)
    want = torch.from_numpy(store.read_batch(idx)).flatten(1) @ enc.proj
    np.testing.assert_allclose(feats, want.numpy(), rtol=1e-6)
    assert feats.dtype == np.float32 and feats.shape == (5, 6)
    np.testing.assert_array_equal(labels, store.labels[idx])
    np.testing.assert_array_equal(subjects, store.subjects[idx])
    assert enc.modes == [(False, True)] * 3 and enc.training  # eval + inference mode inside, restored after
    ds = WindowDataset(store, indices=[1, 2, 3])
    f2, _, _ = extract_features(lambda x: enc.probe_features(x, n_last=2), ds, module=enc, progress=False)
    np.testing.assert_allclose(f2, 2 * (torch.from_numpy(store.read_batch([1, 2, 3])).flatten(1) @ enc.proj).numpy(),
                               rtol=1e-6)


def test_feature_cache_hit_skips_encoder(store, tmp_path):
    enc = StandIn(2, 8)
    cache = FeatureCache(tmp_path / "features")
    key = cache_key(encoder=hash_module(enc), n_last=1, indices=[0, 1, 2])
    compute = lambda: extract_features(enc.probe_features, store, [0, 1, 2], progress=False)  # noqa: E731
    (f1, l1, s1), hit1 = cache.get_or_compute(key, compute)
    calls = enc.calls
    (f2, l2, s2), hit2 = cache.get_or_compute(key, compute)
    assert (hit1, hit2) == (False, True) and enc.calls == calls
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(l1, l2)
    assert [p.name for p in (tmp_path / "features").iterdir()] == [cache.path(key).name]  # no temp files left
    assert cache.load(cache_key(encoder=hash_module(enc), n_last=2, indices=[0, 1, 2])) is None
    other = StandIn(2, 8)
    with torch.no_grad():
        other.proj.add_(1)
    assert hash_module(other) != hash_module(enc) and hash_module(StandIn(2, 8)) == hash_module(enc)


# -- plots -----------------------------------------------------------------------------------------


def test_plots_write_pngs_atomically(tmp_path):
    out = tmp_path / "plots"
    p1 = plot_confusion([[5, 1, 0], [2, 3, 0], [0, 0, 0]], ["walk", "run", "sit"], out / "cm.png")
    p2 = plot_per_subject({"s1": {"macro_f1": 0.8}, "s2": {"macro_f1": 0.6}}, out / "subj.png")
    records = [{"step": i, "loss": 5 - 0.01 * i, "teacher_entropy": 3.0, "lr": 1e-4 * (i + 1), "note": "x"}
               for i in range(50)]
    p3 = plot_training_curves(records, out / "curves.png")
    p4 = plot_training_curves([{"epoch": 1}], out / "empty.png")
    for p in (p1, p2, p3, p4):
        assert p.read_bytes()[:8] == PNG
    assert sorted(f.name for f in out.iterdir()) == ["cm.png", "curves.png", "empty.png", "subj.png"]
