"""The probe recipe end to end with a stand-in encoder on a small labelled store."""

import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from wearspec.config import from_dict, load_config
from wearspec.data.store import StoreWriter
from wearspec.errors import WearspecError
from wearspec.evaluate import probe as probe_mod
from wearspec.evaluate.probe import ProbeConfig, resolve_checkpoint, run_probe

LABELS = ["lie", "walk", "run"]
META = {"channels": ["ax", "ay"], "rate": 20.0, "window": 16, "hop": 8}


class StandIn(nn.Module):
    """Fixed random projection of flattened windows (the encoder's probe API)."""

    def __init__(self, d=12, seed=0):
        super().__init__()
        self.register_buffer("proj", torch.randn(2 * 16, d, generator=torch.Generator().manual_seed(seed)))
        self.calls = 0

    def probe_features(self, x_raw, n_last=1, avgpool=False):
        self.calls += 1
        return x_raw.flatten(1) @ self.proj


def _write(path, rng, labelled=True, channels=("ax", "ay"), subjects=8):
    templates = rng.normal(size=(3, 2, 16)) * 2
    with StoreWriter(path, channels=list(channels), rate=20, window=16, hop=8,
                     label_names=LABELS if labelled else [], shard_windows=32) as w:
        for s in range(subjects):
            y = np.arange(12) % 3
            x = templates[y] + rng.normal(scale=0.5, size=(12, 2, 16))
            w.add(x, f"p{s:02d}", f"p{s:02d}-r", np.arange(12) * 0.4, y if labelled else None,
                  split="test" if s >= 6 else "train")
    return path


@pytest.fixture
def store(tmp_path, rng):
    return _write(tmp_path / "store", rng)


def _cfg(store, out, **kw):
    data = {"store": str(store), "output": str(out), "device": "cpu", "batch_size": 20,
            "linear": {"lrs": [0.01, 0.1], "weight_decays": [0.0, 0.001], "epochs": 10, "batch_size": 32},
            "classical": {"enabled": False}}  # on in test_classical_rows_beside_the_deep_ones (keeps the rest fast)
    data.update(kw)
    return from_dict(ProbeConfig, data)


def test_holdout_end_to_end_and_cache(store, tmp_path, capsys, monkeypatch):
    out = tmp_path / "probe"
    cfg = _cfg(store, out, split={"mode": "holdout", "test_subjects": ["p06", "p07"], "val_subjects": ["p05"]})
    enc = StandIn()
    seen = []
    real_fit = probe_mod.fit_linear_probe

    def fit_spy(train_feats, train_labels, val_feats, val_labels, *a, **k):
        seen.append(np.concatenate([train_feats, val_feats]))
        return real_fit(train_feats, train_labels, val_feats, val_labels, *a, **k)

    monkeypatch.setattr(probe_mod, "fit_linear_probe", fit_spy)
    report = run_probe(cfg, encoder=enc, meta=META)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert report["splits"][0]["subjects"] == {"train": ["p00", "p01", "p02", "p03", "p04"], "val": ["p05"],
                                               "test": ["p06", "p07"]}
    for method in ("knn", "linear"):
        r = report[method]
        assert r["n"] == 24 and set(r["per_subject"]) == {"p06", "p07"}
        assert set(r["pooled"]) == {"n", "accuracy", "macro_f1", "kappa"}
        assert set(r["subject_summary"]["macro_f1"]) == {"mean", "sd", "n"}
        assert r["pooled"]["accuracy"] > 0.9  # well separated classes
        assert len(r["confusion_matrix"]) == 3 and set(r["per_class"]) == set(LABELS)
        assert (out / f"confusion_{method}.png").read_bytes()[:4] == b"\x89PNG"
    sel = report["linear"]["selection"][0]
    assert sel["selected_on"] == "val" and len(sel["sweep"]) == 4 and {"lr", "weight_decay"} <= set(sel)
    assert report["knn"]["k"] == 20 and report["config"]["split"]["mode"] == "holdout"
    assert report["features"]["dim"] == 12 and report["encoder"]["channels"] == ["ax", "ay"]
    # the linear probe never saw test rows (train + val = the 6 non-test subjects × 12 windows)
    assert seen[0].shape[0] == 72
    assert "linear" in capsys.readouterr().out
    calls = enc.calls
    assert calls > 0
    again = run_probe(cfg, encoder=enc, meta=META, verbose=False)
    assert enc.calls == calls  # features came from <output>/features/
    assert again["linear"]["pooled"] == report["linear"]["pooled"]  # deterministic
    # the same weights with other settings that the weights do not hold (here the encoder's description):
    # the cache must not serve the old features
    run_probe(cfg, encoder=enc, meta=dict(META, frontend={"log": "none"}), verbose=False)
    assert enc.calls > calls
    assert not [f for f in os.listdir(out) if f.startswith(".")]


class ViTLike(StandIn):
    """CLS columns carry only noise; the mean-patch-token column (appended with ``avgpool``) the signal."""

    def __init__(self):
        super().__init__(d=4)
        self.avgpool_seen = []

    def probe_features(self, x_raw, n_last=1, avgpool=False):
        self.calls += 1
        self.avgpool_seen.append(avgpool)
        noise = torch.randn(x_raw.shape[0], 4 * n_last, generator=torch.Generator().manual_seed(self.calls))
        return torch.cat([noise] + ([x_raw.flatten(1) @ self.proj] if avgpool else []), dim=1)

    def probe_dim(self, n_last=1, avgpool=False):
        return 4 * (n_last + int(avgpool))


def test_label_efficiency_probe_uses_the_asked_fraction_of_training_labels(store, tmp_path, monkeypatch):
    from wearspec.evaluate.probe import few_label_rows

    labels = np.repeat([0, 1, 2], [50, 30, 3])
    rows = few_label_rows(labels, 0.1, seed=0)
    assert [int(np.sum(labels[rows] == c)) for c in (0, 1, 2)] == [5, 3, 1]  # per class, at least one
    assert np.array_equal(rows, few_label_rows(labels, 0.1, seed=0)) and len(set(rows.tolist())) == len(rows)
    sizes = []
    real_fit = probe_mod.fit_linear_probe

    def fit_spy(train_feats, *a, **k):
        sizes.append(len(train_feats))
        return real_fit(train_feats, *a, **k)

    monkeypatch.setattr(probe_mod, "fit_linear_probe", fit_spy)
    cfg = _cfg(store, tmp_path / "p", split={"mode": "holdout", "test_subjects": ["p06", "p07"],
                                             "val_subjects": ["p05"]}, few_labels=0.25)
    report = run_probe(cfg, encoder=StandIn(), meta=META)
    assert sizes[1] < sizes[0] / 3 and report["linear_few"]["fraction"] == 0.25
    assert report["linear_few"]["n"] == report["linear"]["n"] and "per_subject" in report["linear_few"]
    off = run_probe(_cfg(store, tmp_path / "q", split={"mode": "holdout", "test_subjects": ["p06", "p07"],
                                                       "val_subjects": ["p05"]}, few_labels=0.0),
                    encoder=StandIn(), meta=META)
    assert "linear_few" not in off
    with pytest.raises(WearspecError, match="few_labels"):
        run_probe(_cfg(store, tmp_path / "r", few_labels=1.0), encoder=StandIn(), meta=META)


def test_avgpool_auto_chooses_on_validation(store, tmp_path):
    split = {"mode": "kfold", "k": 4, "val_fraction": 0.2}
    enc = ViTLike()
    report = run_probe(_cfg(store, tmp_path / "auto", split=split, n_last=2, avgpool="auto"), encoder=enc, meta=META,
                       verbose=False)
    assert set(enc.avgpool_seen) == {True}  # extracted once with the patch mean, the CLS set is its leading columns
    assert report["features"]["sets"] == {"cls": 8, "cls+avgpool": 12} and report["features"]["avgpool"] == "auto"
    for method in ("knn", "linear"):
        sels = report[method]["selection"]
        assert len(sels) == 4 and {s["features"] for s in sels} == {"cls+avgpool"}  # the signal wins everywhere
        for s in sels:  # both sets were scored on validation, the chosen one is the better
            scores = s["features_val_macro_f1"]
            assert set(scores) == {"cls", "cls+avgpool"} and scores["cls+avgpool"] > scores["cls"]
        assert report[method]["pooled"]["accuracy"] > 0.9
    # false (the default): the CLS features only, nothing to choose; the noise is all the probe gets
    off = run_probe(_cfg(store, tmp_path / "off", split=split, n_last=2), encoder=ViTLike(),
                    meta=META, verbose=False)
    assert off["features"]["sets"] == {"cls": 8}
    assert {s["features"] for s in off["linear"]["selection"]} == {"cls"}
    assert "features_val_macro_f1" not in off["linear"]["selection"][0]
    assert off["linear"]["pooled"]["accuracy"] < 0.7
    # no validation windows: nothing to choose on, the first set (CLS only) is kept
    pre = run_probe(_cfg(store, tmp_path / "pre", split={"mode": "predefined"}, n_last=2, avgpool="auto"),
                    encoder=ViTLike(),
                    verbose=False)
    assert pre["linear"]["selection"][0]["features"] == "cls" and pre["knn"]["selection"][0]["features"] == "cls"
    # an encoder whose features do not grow with avgpool (Swin), or one without probe_dim: one set
    swin_like = types.SimpleNamespace(probe_dim=lambda n_last, avgpool: 48)
    assert probe_mod.feature_sets(_cfg(store, tmp_path / "x", avgpool="auto"), swin_like, 48) == [("pooled", 48)]
    assert probe_mod.feature_sets(_cfg(store, tmp_path / "x", avgpool="auto"), StandIn(), 12) == [("features", 12)]
    assert probe_mod.feature_sets(_cfg(store, tmp_path / "x", avgpool=True), ViTLike(), 12) == [("cls+avgpool", 12)]


def test_choose_features_ties_and_missing_scores():
    sets = [("a", 3), ("b", 5)]
    fits = []
    name, cols, fitted, scores = probe_mod.choose_features(sets, lambda c: fits.append(c) or f"m{c}",
                                                           lambda m, c: 0.5)
    assert (name, cols, fitted, fits) == ("a", 3, "m3", [3, 5]) and scores == {"a": 0.5, "b": 0.5}  # tie: first
    name, *_ = probe_mod.choose_features(sets, lambda c: c, lambda m, c: {3: float("nan"), 5: 0.1}[c])
    assert name == "b"  # a finite score beats none
    name, *_ = probe_mod.choose_features(sets, lambda c: c, lambda m, c: 0.9 if c == 3 else 0.2)
    assert name == "a"


def test_classical_rows_beside_the_deep_ones(store, tmp_path, capsys):
    split = {"mode": "kfold", "k": 4, "val_fraction": 0.2}
    classical = {"n_trees": 10, "n_jobs": 1, "logreg_cs": [0.1, 1.0]}
    report = run_probe(_cfg(store, tmp_path / "on", split=split, classical=classical), encoder=StandIn(), meta=META)
    table = capsys.readouterr().out
    cl = report["classical"]
    assert cl["enabled"] and cl["models"] == ["logreg", "forest"]
    for m, row in (("logreg", "features+LR"), ("forest", "features+RF")):
        r = cl[m]  # the probe's structure and the same test windows, pooled over the same folds
        assert r["n"] == report["linear"]["n"] == 96
        assert r["per_subject"].keys() == report["linear"]["per_subject"].keys()
        assert set(r["pooled"]) == {"n", "accuracy", "macro_f1", "kappa"} and len(r["selection"]) == 4
        assert r["pooled"]["macro_f1"] > 0.8  # template classes: features separate them too
        assert any(line.startswith(row) for line in table.splitlines())
    assert [set(f["classical"]) for f in report["splits"]] == [{"logreg", "forest"}] * 4
    assert [f["classical"]["forest"]["n"] for f in report["splits"]] == [f["linear"]["n"] for f in report["splits"]]
    on_disk = json.loads((tmp_path / "on" / "report.json").read_text())
    assert on_disk["classical"]["forest"]["pooled"] == report["classical"]["forest"]["pooled"]
    off = run_probe(load_config(ProbeConfig, None, [f"store={store}", f"output={tmp_path / 'off'}", "device=cpu",
                                                     "split.mode=kfold", "split.k=4", "linear.epochs=5",
                                                     "classical.enabled=false"]), encoder=StandIn(), meta=META)
    table = capsys.readouterr().out
    assert "classical" not in off and "features+" not in table and "k-NN" in table
    assert all("classical" not in f for f in off["splits"]) and off["config"]["classical"]["enabled"] is False


def test_kfold_aggregates_every_subject_once(store, tmp_path):
    cfg = _cfg(store, tmp_path / "kf", split={"mode": "kfold", "k": 4, "val_fraction": 0.2})
    enc = StandIn()
    report = run_probe(cfg, encoder=enc, meta=META, verbose=False)
    assert len(report["splits"]) == 4 and len(report["linear"]["selection"]) == 4
    tested = [s for f in report["splits"] for s in f["subjects"]["test"]]
    assert sorted(tested) == [f"p{s:02d}" for s in range(8)]
    for method in ("knn", "linear"):
        assert report[method]["n"] == 96 and report[method]["n_subjects"] == 8
        assert report[method]["subject_summary"]["accuracy"]["n"] == 8
    assert enc.calls == 5  # 96 windows in batches of 20: every window encoded once for all folds


def test_predefined_and_loso(store, tmp_path):
    pre = run_probe(_cfg(store, tmp_path / "pre", split={"mode": "predefined"}), encoder=StandIn(), verbose=False)
    assert pre["splits"][0]["subjects"]["test"] == ["p06", "p07"]
    assert pre["linear"]["selection"][0]["selected_on"] == "train"  # no validation windows in the split
    loso = run_probe(_cfg(store, tmp_path / "loso", split={"mode": "loso"}, which="random"), encoder=StandIn(),
                     verbose=False)
    assert len(loso["splits"]) == 8 and loso["linear"]["n_subjects"] == 8


def test_errors(store, tmp_path, rng):
    unlabelled = _write(tmp_path / "unlabelled", rng, labelled=False)
    with pytest.raises(WearspecError, match="has no labels"):
        run_probe(_cfg(unlabelled, tmp_path / "o1"), encoder=StandIn(), meta=META)
    swapped = dict(META, channels=["ay", "ax"])
    with pytest.raises(WearspecError,
                       match=r"store.*does not match the encoder of ckpt\.pt: same channels in a different order"):
        run_probe(_cfg(store, tmp_path / "o2", checkpoint="ckpt.pt"), encoder=StandIn(), meta=swapped)
    with pytest.raises(WearspecError, match=r"channels differ \(store \['ax', 'ay'\], encoder \['gx', 'gy'\]\)"):
        run_probe(_cfg(store, tmp_path / "o3"), encoder=StandIn(), meta=dict(META, channels=["gx", "gy"]))
    with pytest.raises(WearspecError, match="sampling rate differs"):
        run_probe(_cfg(store, tmp_path / "o4"), encoder=StandIn(), meta=dict(META, rate=50))
    with pytest.raises(WearspecError, match="window length differs"):
        run_probe(_cfg(store, tmp_path / "o5"), encoder=StandIn(), meta=dict(META, window=32))
    with pytest.raises(WearspecError, match="checkpoint=… is required"):
        run_probe(_cfg(store, tmp_path / "o6"))
    with pytest.raises(WearspecError, match="split.mode"):
        _cfg(store, tmp_path, split={"mode": "random"})
    with pytest.raises(WearspecError, match="unknown config key linear.lr "):
        _cfg(store, tmp_path, linear={"lr": 0.1})
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_checkpoint_folder_and_loader(store, tmp_path, monkeypatch):
    run_dir = tmp_path / "pretrain"
    (run_dir / "checkpoints").mkdir(parents=True)
    for i, name in enumerate(["checkpoint_0002.pt", "checkpoint_0010.pt", ".checkpoint_0011.pt.tmp-x"]):
        f = run_dir / "checkpoints" / name
        f.write_bytes(b"x")
        os.utime(f, ns=(10**18 + i * 10**9,) * 2)
    assert resolve_checkpoint(run_dir).name == "checkpoint_0010.pt"
    # a pretraining run's ckpt-<step>.pt files: the highest step, whatever the modification times say
    steps = tmp_path / "steps"
    (steps / "checkpoints").mkdir(parents=True)
    for i, name in enumerate(["ckpt-00000200.pt", "ckpt-00000100.pt"]):  # copied in this order
        f = steps / "checkpoints" / name
        f.write_bytes(b"x")
        os.utime(f, ns=(10**18 + i * 10**9,) * 2)
    assert resolve_checkpoint(steps).name == "ckpt-00000200.pt"
    with pytest.raises(WearspecError, match="checkpoint not found"):
        resolve_checkpoint(tmp_path / "nothing")
    loaded = []

    def fake_loader(path, which="teacher"):
        loaded.append((os.path.basename(path), which))
        return StandIn(), dict(META)

    monkeypatch.setitem(sys.modules, "wearspec.models.encoder",
                        types.SimpleNamespace(encoder_from_checkpoint=fake_loader))
    report = run_probe(_cfg(store, tmp_path / "o", checkpoint=str(run_dir), which="student"), verbose=False)
    assert loaded == [("checkpoint_0010.pt", "student")]
    assert report["checkpoint"].endswith("checkpoint_0010.pt") and report["which"] == "student"


def test_config_from_yaml_and_overrides(tmp_path):
    y = tmp_path / "probe.yaml"
    y.write_text("store: s\noutput: o\nsplit:\n  mode: kfold\n  k: 3\nlinear:\n  lrs: [0.01, 0.1]\n")
    cfg = load_config(ProbeConfig, y, ["linear.epochs=5", "n_last=1"])
    assert cfg.split.k == 3 and cfg.linear.lrs == [0.01, 0.1] and cfg.linear.epochs == 5 and cfg.n_last == 1
    assert cfg.avgpool is False  # the default: CLS tokens only
    assert load_config(ProbeConfig, y, ["avgpool=true"]).avgpool is True
    assert load_config(ProbeConfig, y, ["avgpool=auto"]).avgpool == "auto"
    with pytest.raises(WearspecError, match="avgpool"):
        load_config(ProbeConfig, y, ["avgpool=sometimes"])
