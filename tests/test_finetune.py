"""Fine-tuning: distillation losses, class weights, the classifier checkpoint, the teacher → student recipe
(outputs, exact resume, skipped stages, early stopping, SSL init with layer decay and a frozen backbone,
label fraction), bad inputs, configs, and two ranks under torchrun."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wearspec.config import from_dict, load_config
from wearspec.data.prepare import PrepareConfig
from wearspec.data.frontend import SpectrogramFrontend
from wearspec.data.prepare import prepare
from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError
from wearspec.finetune.losses import (DistillationLoss, class_weights, cross_entropy, hard_distillation,
                                      soft_distillation)
from wearspec.finetune.recipe import FinetuneConfig, label_subset, run_finetune
from wearspec.models.classifier import Classifier, classifier_meta, load_classifier, save_classifier
from wearspec.models.cnn import CNNConfig, build_teacher
from wearspec.models.students import StudentConfig, StudentOutput, build_student
from wearspec.utils.checkpoint import list_checkpoints, load_checkpoint
from wearspec.utils.logging import read_metrics

ROOT = Path(__file__).resolve().parents[1]
# DeSepTr in miniature: CNN teacher (width 8), SepTr student (embed 16, depth 1) on its stem, hard distillation
TINY = ["runtime.device=cpu", "frontend.fit_windows=64", "runtime.ckpt_every=100", "teacher.cnn.width=8",
        "teacher.epochs=2", "teacher.batch_size=16", "student.epochs=2", "student.batch_size=16",
        "student.model.septr.embed_dim=16", "student.model.septr.depth=1", "student.model.septr.num_heads=2"]
VIT = ["stages=[student]", "student.model.arch=vit", "student.model.teacher_stem=false", "student.distill.kind=none",
       "student.model.backbone.embed_dim=32", "student.model.backbone.depth=2", "student.model.backbone.num_heads=2"]
PRETRAIN_TINY = ["backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "head.out_dim=128",
                 "head.hidden_dim=32", "head.bottleneck_dim=16", "optim.batch_size=16", "crops.n_local=2",
                 "frontend.fit_windows=64", "runtime.device=cpu"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two cores shared with other work: one intra-op thread is several times faster for these tiny models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft") / "store"
    prepare("synthetic", None, out, load_config(PrepareConfig, None, ["synthetic.subjects=5",
                                                                      "synthetic.minutes_per_subject=1.5"]))
    return out


def _cfg(store, out, *extra) -> FinetuneConfig:
    return load_config(FinetuneConfig, None, [f"store={store}", f"output={out}", *TINY, *extra])


@pytest.fixture(scope="module")
def deseptr_run(store, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted teacher → student run (holdout split)."""
    out = tmp_path_factory.mktemp("ft") / "run"
    return out, run_finetune(_cfg(store, out))


# ---- losses ------------------------------------------------------------------------------------------
def test_distillation_formulas():
    torch.manual_seed(0)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    for tau in (1.0, 3.0):
        p_t, p_s = (t / tau).softmax(-1), (s / tau).softmax(-1)
        kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean() * tau ** 2
        assert torch.allclose(soft_distillation(s, t, tau), kl, atol=1e-6)
    assert torch.allclose(hard_distillation(s, t), -(s.log_softmax(-1)[torch.arange(6), t.argmax(-1)]).mean())
    assert soft_distillation(t, t, 2.0).abs() < 1e-6


def test_cross_entropy_matches_torch_and_takes_soft_labels():
    torch.manual_seed(0)
    z, y, w = torch.randn(8, 4), torch.randint(0, 4, (8,)), torch.rand(4) + 0.5
    for weight, eps in ((None, 0.0), (w, 0.0), (w, 0.1)):
        assert torch.allclose(cross_entropy(z, y, weight, eps), F.cross_entropy(z, y, weight=weight,
                                                                               label_smoothing=eps), atol=1e-6)
    soft = torch.softmax(torch.randn(8, 4), -1)  # e.g. cut-mix mixtures
    assert torch.allclose(cross_entropy(z, soft), -(soft * z.log_softmax(-1)).sum(-1).mean(), atol=1e-6)
    expected = -(soft * w * z.log_softmax(-1)).sum() / (soft * w).sum()
    assert torch.allclose(cross_entropy(z, soft, w), expected, atol=1e-6)


def test_distillation_loss_weighting_and_heads():
    torch.manual_seed(0)
    cls, dist, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    out = StudentOutput(cls, dist)
    for alpha in (0.5, 0.2):
        got = DistillationLoss("hard", alpha)(out, y, t)
        assert torch.allclose(got, (1 - alpha) * F.cross_entropy(cls, y) + alpha * F.cross_entropy(dist, t.argmax(-1)))
    got = DistillationLoss("soft", 0.5, tau=2.0)(out, y, t)
    assert torch.allclose(got, 0.5 * F.cross_entropy(cls, y) + 0.5 * soft_distillation(dist, t, 2.0))
    # no dist head: distil on the class head
    got = DistillationLoss("hard")(StudentOutput(cls, None), y, t)
    assert torch.allclose(got, 0.5 * F.cross_entropy(cls, y) + 0.5 * F.cross_entropy(cls, t.argmax(-1)))
    # none: CE on both heads, averaged; on cls alone without a dist head
    none = DistillationLoss("none", label_smoothing=0.1)
    assert torch.allclose(none(out, y), (F.cross_entropy(cls, y, label_smoothing=0.1)
                                         + F.cross_entropy(dist, y, label_smoothing=0.1)) / 2)
    assert torch.allclose(none(StudentOutput(cls, None), y), F.cross_entropy(cls, y, label_smoothing=0.1))
    # cut-mix soft labels (B, K)
    soft = torch.softmax(torch.randn(6, 5), -1)
    got = DistillationLoss("hard")(out, soft, t)
    assert torch.allclose(got, 0.5 * F.cross_entropy(cls, soft) + 0.5 * F.cross_entropy(dist, t.argmax(-1)))
    with pytest.raises(WearspecError, match="needs the teacher's logits"):
        DistillationLoss("soft")(out, y, None)
    with pytest.raises(WearspecError, match="distill.kind"):
        DistillationLoss("medium")


def test_class_weights():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    w = class_weights(labels, 3)
    inv = 1 / np.array([4, 2, 1])
    assert np.allclose(w.numpy(), inv / inv.mean()) and abs(float(w.mean()) - 1) < 1e-6
    assert torch.equal(class_weights(labels, 3, "none"), torch.ones(3))
    with pytest.raises(WearspecError, match="class 'c' has no labelled windows in the training split of fold2"):
        class_weights(labels, 4, label_names=["a", "b", "x", "c"], where="the training split of fold2")


def test_label_subset_is_stratified_and_seeded():
    labels = np.repeat(np.arange(3), [40, 20, 2])
    idx = np.arange(len(labels))
    sub = label_subset(labels, idx, 0.25, seed=0)
    assert np.bincount(labels[sub]).tolist() == [10, 5, 1]  # at least one window of every class
    assert np.array_equal(sub, label_subset(labels, idx, 0.25, seed=0)) and np.all(np.diff(sub) > 0)
    assert not np.array_equal(sub, label_subset(labels, idx, 0.25, seed=1))
    assert label_subset(labels, idx, 1.0, seed=0) is idx


# ---- the classifier checkpoint --------------------------------------------------------------------------
def test_classifier_roundtrip_with_teacher_stem(tmp_path):
    torch.manual_seed(0)
    frontend = SpectrogramFrontend(n_fft=32, hop_length=8, n_channels=6, log="log1p", power=1.0)
    x = torch.randn(4, 6, 250)
    frontend.fit(x)
    cnn = CNNConfig(width=8)
    teacher = build_teacher(cnn, 6, 5, (17, 32))
    scfg = from_dict(StudentConfig, {"arch": "septr", "teacher_stem": True,
                                     "septr": {"embed_dim": 16, "depth": 1, "num_heads": 2}})
    clf = Classifier(frontend, build_student(scfg, 6, (17, 32), 5, teacher=teacher)).eval()
    meta = classifier_meta("student", scfg, frontend.config(), 6, (17, 32), 5, list("abcde"), [f"c{i}" for i in range(6)],
                           50.0, 250, 125, teacher_cnn=cnn)
    save_classifier(tmp_path / "best.pt", clf, meta, {"epoch": 3})
    loaded, got = load_classifier(tmp_path)  # a folder holding best.pt works too
    assert got == meta and not loaded.training
    assert torch.equal(loaded(x), clf(x)) and loaded(x).shape == (4, 5)
    assert torch.equal(clf(x), clf.model.predict_logits(frontend(x)))
    # errors name the file
    bad = dict(load_checkpoint(tmp_path / "best.pt"))
    del bad["classifier"]
    torch.save(bad, tmp_path / "nometa.pt")
    with pytest.raises(WearspecError, match=r"nometa.pt: not a classifier checkpoint"):
        load_classifier(tmp_path / "nometa.pt")
    bad = dict(load_checkpoint(tmp_path / "best.pt"))
    bad["classifier"] = {**meta, "model": {**meta["model"], "septr": {**meta["model"]["septr"], "embed_dim": 32}}}
    torch.save(bad, tmp_path / "other.pt")
    with pytest.raises(WearspecError, match=r"other.pt: 'state_dict' does not fit .*shape"):
        load_classifier(tmp_path / "other.pt")
    bad = dict(load_checkpoint(tmp_path / "best.pt"))
    bad["classifier"] = {k: v for k, v in meta.items() if k != "input_size"}
    torch.save(bad, tmp_path / "short.pt")
    with pytest.raises(WearspecError, match=r"short.pt: 'classifier' block: missing key 'input_size'"):
        load_classifier(tmp_path / "short.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(WearspecError, match="junk.pt: not a wearspec checkpoint"):
        load_classifier(tmp_path / "junk.pt")


# ---- the recipe end to end -------------------------------------------------------------------------------
def test_teacher_then_student_outputs(store, deseptr_run):
    out, summary = deseptr_run
    assert summary["finished"] and summary["stopped"] is None
    fold = out / "holdout"
    for stage in ("teacher", "student"):
        for name in ("best.pt", "report.json", "confusion.png", "curves.png", "metrics.jsonl", "config.yaml",
                     "test_predictions.npz"):
            assert (fold / stage / name).is_file(), (stage, name)
        rep = json.loads((fold / stage / "report.json").read_text())
        summ = rep["test"]["subject_summary"]
        assert {"accuracy", "macro_f1", "kappa"} <= set(summ) and {"mean", "sd", "n"} <= set(summ["macro_f1"])
        assert rep["test"]["n_subjects"] == len(rep["split"]["subjects"]["test"]) >= 1
        assert 0 <= rep["training"]["best_epoch"] < 2
        recs = read_metrics(fold / stage / "metrics.jsonl")
        assert [r["epoch"] for r in recs if "val_macro_f1" in r] == [0, 1]
        assert len([r for r in recs if "loss" in r]) == rep["training"]["total_steps"]
    for name in ("report.json", "config.yaml", "confusion_teacher.png", "per_subject_student.png"):
        assert (out / name).is_file(), name
    top = json.loads((out / "report.json").read_text())
    assert set(top["stages"]) == {"teacher", "student"}
    assert set(top["stages"]["student"]["per_subject"]) == set(top["folds"][0]["subjects"]["test"])
    assert summary["stages"]["student"]["subject_summary"]["kappa"]["n"] >= 1
    # the student embeds with the teacher's frozen stem, distils its hard decisions
    student, meta = load_classifier(fold / "student" / "best.pt")
    teacher, _ = load_classifier(fold / "teacher" / "best.pt")
    assert meta["kind"] == "student" and meta["model"]["teacher_stem"] and meta["teacher_cnn"]["width"] == 8
    t_stem = {k: v for k, v in teacher.model.state_dict().items() if k.startswith(("net.conv1", "net.bn1", "net.layer1"))}
    s_stem = student.model.stem.state_dict()
    assert len(t_stem) == len(s_stem) and all(torch.equal(v, s_stem["layers." + k[4:]]) for k, v in t_stem.items())
    # best.pt reloads to the model that made the test predictions
    pred = np.load(fold / "student" / "test_predictions.npz")
    s = WindowStore(store)
    with torch.no_grad():
        logits = student(torch.from_numpy(s.read_batch(pred["index"])))
    assert torch.allclose(logits, torch.from_numpy(pred["logits"]), atol=1e-5)
    assert np.array_equal(logits.argmax(1).numpy(), pred["pred"])


def test_resume_is_bitwise_exact_and_finished_stages_are_skipped(store, deseptr_run, tmp_path):
    a, _ = deseptr_run
    b = tmp_path / "b"
    first = run_finetune(_cfg(store, b, "runtime.max_steps=7"))  # 5 steps/epoch: stops inside teacher epoch 1
    assert not first["finished"] and first["stopped"]["stage"] == "teacher" and first["stopped"]["step"] == 7
    assert not (b / "holdout" / "student").exists()
    assert [p.name for p in list_checkpoints(b / "holdout" / "teacher" / "checkpoints")] == ["ckpt-00000005.pt",
                                                                                            "ckpt-00000007.pt"]
    again = run_finetune(_cfg(store, b))
    assert again["finished"] and again["folds"][0]["teacher"]["resumed_from"] == "ckpt-00000007.pt"
    for stage in ("teacher", "student"):
        sa = load_checkpoint(a / "holdout" / stage / "best.pt")
        sb = load_checkpoint(b / "holdout" / stage / "best.pt")
        assert sa["epoch"] == sb["epoch"]
        for k, v in sa["state_dict"].items():
            assert torch.equal(v, sb["state_dict"][k]), (stage, k)
        ca, cb = (load_checkpoint(list_checkpoints(r / "holdout" / stage / "checkpoints")[-1]) for r in (a, b))
        for i, st in ca["optimizer"]["state"].items():
            assert torch.equal(st["exp_avg_sq"], cb["optimizer"]["state"][i]["exp_avg_sq"]), (stage, i)
    steps = [r["step"] for r in read_metrics(b / "holdout" / "teacher" / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 11))  # the resumed run reads as one
    # a finished stage is skipped on re-run; other settings for it are refused
    before = (a / "holdout" / "student" / "metrics.jsonl").read_text()
    rerun = run_finetune(_cfg(store, a))
    assert rerun["finished"] and all(rerun["folds"][0][s]["skipped"] for s in ("teacher", "student"))
    assert (a / "holdout" / "student" / "metrics.jsonl").read_text() == before
    with pytest.raises(WearspecError, match="teacher/config.yaml: this stage was run with different 'teacher'"):
        run_finetune(_cfg(store, a, "teacher.lr=0.01"))


@pytest.mark.filterwarnings("ignore:Data has no positive values")  # the LR-0 curve on a log axis
def test_early_stopping_and_label_fraction(store, tmp_path):
    # LR 0 (no warm-up, no decay): the weights never change, so validation never improves after epoch 0
    out = tmp_path / "es"
    summary = run_finetune(_cfg(store, out, "stages=[student]", "student.model.teacher_stem=false",
                                "student.distill.kind=none", "student.lr=0", "student.min_lr=0", "student.epochs=6",
                                "student.patience=2", "label_fraction=0.5", "augment.cutmix_p=0"))
    r = summary["folds"][0]["student"]
    assert r["finished"] and r["stopped_early"] and r["best_epoch"] == 0 and r["epochs_run"] == 3 < 6
    recs = [x for x in read_metrics(out / "holdout" / "student" / "metrics.jsonl") if "val_macro_f1" in x]
    assert [x["epoch"] for x in recs] == [0, 1, 2] and recs[-1]["early_stop"]
    assert len({x["val_macro_f1"] for x in recs}) == 1
    assert load_checkpoint(out / "holdout" / "student" / "best.pt")["epoch"] == 0
    # label_fraction: half of each class's training windows (stratified)
    s = WindowStore(store)
    full = json.loads((out / "report.json").read_text())["folds"][0]
    train_subjects = [s.subject_names.index(n) for n in full["subjects"]["train"]]
    all_train = np.flatnonzero((s.labels >= 0) & np.isin(s.subjects, train_subjects))
    per_class = np.bincount(s.labels[all_train])
    assert summary["folds"][0]["windows"]["train"] == sum(max(1, round(0.5 * n)) for n in per_class)


def test_bf16_on_cpu_trains_through_the_explicit_attention(store, tmp_path, sdpa_calls):
    """As in pretraining: under bf16 autocast on a CPU the student's attention avoids SDPA."""
    summary = run_finetune(_cfg(store, tmp_path / "bf16", *VIT, "runtime.amp=bf16", "runtime.max_steps=2"))
    assert summary["stopped"]["step"] == 2 and sdpa_calls["n"] == 0
    rows = [r for r in read_metrics(tmp_path / "bf16" / "holdout" / "student" / "metrics.jsonl") if "loss" in r]
    assert rows and all(math.isfinite(r["loss"]) for r in rows)


def test_ssl_init_layer_decay_and_frozen_backbone(store, tmp_path):
    from wearspec.ssl.pretrain import PretrainConfig, run_pretrain

    pt = tmp_path / "pt"
    run_pretrain(load_config(PretrainConfig, None, [f"store={store}", f"output={pt}", *PRETRAIN_TINY,
                                                    "runtime.max_steps=2"]))
    out = tmp_path / "ssl"
    extra = [*VIT, f"student.init_checkpoint={pt}", "student.layer_decay=0.75", "student.freeze_backbone_epochs=1",
             "frontend.n_fft=16"]
    summary = run_finetune(_cfg(store, out, *extra, "runtime.max_steps=5"))  # 5 steps/epoch: stop after epoch 0
    assert not summary["finished"] and summary["stopped"]["step"] == 5
    ckpt = load_checkpoint(out / "holdout" / "student" / "checkpoints" / "ckpt-00000005.pt")
    pre = load_checkpoint(list_checkpoints(pt / "checkpoints")[-1])
    state = ckpt["state_dict"]
    # the front end (config and statistics) comes from the pretrain checkpoint, not from frontend.n_fft
    assert ckpt["classifier"]["frontend"] == pre["encoder"]["frontend"]
    for k, v in pre["teacher"].items():
        if k.startswith("frontend."):
            assert torch.equal(state[k], v), k
    # backbone weights equal the pretrained ones after an epoch with the backbone frozen
    loaded = [k for k in pre["teacher"] if k.startswith("backbone.") and k != "backbone.model.pos_embed"]
    assert len(loaded) > 20
    for k in loaded:
        assert torch.equal(state["model." + k], pre["teacher"][k]), k
    assert torch.equal(state["model.backbone.model.dist_token"], pre["teacher"]["backbone.model.cls_token"])
    # only the heads had gradients (AdamW state) in epoch 0
    groups, opt_state = ckpt["optimizer"]["param_groups"], ckpt["optimizer"]["state"]
    stepped = {n for g in groups for i, n in zip(g["params"], g["param_names"]) if i in opt_state}
    assert stepped == {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
    recs = [r for r in read_metrics(out / "holdout" / "student" / "metrics.jsonl") if "loss" in r]
    assert all(r["backbone_frozen"] for r in recs) and recs[0]["grad_norm"] > 0
    # layer-wise LR decay: scale 0.75^(L - layer), heads at 1
    top = max(g["layer_id"] for g in groups)
    assert top == 3 and all(abs(g["lr_scale"] - 0.75 ** (top - g["layer_id"])) < 1e-12 for g in groups)
    assert any("head.weight" in g["param_names"] and g["lr_scale"] == 1.0 for g in groups)
    # epoch 1 unfreezes the backbone: the resumed run trains it
    run_finetune(_cfg(store, out, *extra, "runtime.max_steps=6"))
    later = load_checkpoint(out / "holdout" / "student" / "checkpoints" / "ckpt-00000006.pt")["state_dict"]
    assert not torch.equal(later["model.backbone.model.blocks.0.attn.qkv.weight"],
                           pre["teacher"]["backbone.model.blocks.0.attn.qkv.weight"])
    # resumed across the unfreezing (a new optimiser phase, DDP/compile wrapper rebuilt): bitwise the same
    # weights and optimiser state as an uninterrupted run
    straight = tmp_path / "straight"
    run_finetune(_cfg(store, straight, *extra, "runtime.max_steps=6"))
    ref = load_checkpoint(straight / "holdout" / "student" / "checkpoints" / "ckpt-00000006.pt")
    resumed = load_checkpoint(out / "holdout" / "student" / "checkpoints" / "ckpt-00000006.pt")
    for k, v in ref["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    for i, st in ref["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], resumed["optimizer"]["state"][i]["exp_avg"]), i


def test_non_finite_loss_stops_with_a_clear_message(store, tmp_path, monkeypatch):
    real = DistillationLoss.forward
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        v = real(self, *a, **k)
        return v * float("nan") if calls["n"] >= 3 else v

    monkeypatch.setattr(DistillationLoss, "forward", flaky)
    with pytest.raises(WearspecError, match=r"teacher: non-finite loss at step 2 \(epoch 0\).*is intact"):
        run_finetune(_cfg(store, tmp_path / "nan", "stages=[teacher]"))


# ---- bad inputs ------------------------------------------------------------------------------------------
def _store_copy(store: Path, dest: Path, relabel) -> Path:
    shutil.copytree(store, dest)
    with np.load(dest / "index.npz") as z:
        index = dict(z)
    index["label"] = relabel(index["label"].copy(), index["subject"])
    np.savez(dest / "index.npz", **index)
    from wearspec.utils.integrity import sha256_file  # a store relabelled on purpose: record its new index

    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["index_sha256"] = sha256_file(dest / "index.npz")
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_resume_refuses_a_store_prepared_again(store, tmp_path):
    other = tmp_path / "store2"
    shutil.copytree(store, other)
    out = tmp_path / "ft"
    assert not run_finetune(_cfg(other, out, "runtime.max_steps=2"))["finished"]
    manifest = json.loads((other / "manifest.json").read_text())
    ckpt = load_checkpoint(out / "holdout" / "teacher" / "checkpoints" / "ckpt-00000002.pt")
    assert ckpt["data"]["store_fingerprint"] == manifest["fingerprint"]
    (other / "manifest.json").write_text(json.dumps(dict(manifest, fingerprint="0123456789abcdef")))
    with pytest.raises(WearspecError, match=r"teacher/checkpoints/ckpt-00000002.pt: this run was trained on another "
                                            r"store \(fingerprint [0-9a-f]+\); .*store2 has 0123456789abcdef"):
        run_finetune(_cfg(other, out))


def test_bad_inputs(store, deseptr_run, tmp_path):
    def fails(match, *extra, at=store):
        with pytest.raises(WearspecError, match=match) as info:
            run_finetune(_cfg(at, tmp_path / "x", *extra))
        assert "\n" not in str(info.value)

    # config checks (load_config validates)
    with pytest.raises(WearspecError, match="student.model.teacher_stem: needs a teacher"):
        _cfg(store, tmp_path / "x", "stages=[student]", "student.distill.kind=none")
    with pytest.raises(WearspecError, match="student.distill.kind=soft: needs a teacher"):
        _cfg(store, tmp_path / "x", "stages=[student]", "student.model.teacher_stem=false", "student.distill.kind=soft")
    with pytest.raises(WearspecError, match="teacher_checkpoint: given while stages includes 'teacher'"):
        _cfg(store, tmp_path / "x", "teacher_checkpoint=t.pt")
    with pytest.raises(WearspecError, match="student.init_checkpoint: only vit and swin"):
        _cfg(store, tmp_path / "x", "student.init_checkpoint=pt")
    with pytest.raises(WearspecError, match="stages: expected"):
        _cfg(store, tmp_path / "x", "stages=[teacher, teacher]")
    # stores: no labels; a class absent from the training subjects of a fold
    fails("has no labels", at=_store_copy(store, tmp_path / "nolabels", lambda y, s: np.full_like(y, -1)))
    s = WindowStore(store)
    gone = _store_copy(store, tmp_path / "nocycling", lambda y, subj: np.where(
        (y == s.label_names.index("cycling")) & (subj != 0), 0, y))
    fails(r"class 'cycling' has no labelled windows in the training subjects of split holdout",
          "split.test_subjects=[S01]", at=gone)
    # a given teacher: labels in another order; a student checkpoint where the stem needs the CNN teacher
    run_dir = deseptr_run[0] / "holdout"
    t = dict(load_checkpoint(run_dir / "teacher" / "best.pt"))
    t["classifier"] = {**t["classifier"], "label_names": list(reversed(t["classifier"]["label_names"]))}
    torch.save(t, tmp_path / "swapped.pt")
    fails(r"swapped.pt: the teacher was trained on the same labels in a different order", "stages=[student]",
          f"teacher_checkpoint={tmp_path / 'swapped.pt'}")
    fails(r"student/best.pt: a student checkpoint; student.model.teacher_stem needs the CNN teacher",
          "stages=[student]", f"teacher_checkpoint={run_dir / 'student' / 'best.pt'}")
    fails(r"manifest.json: not a wearspec checkpoint", "stages=[student]",
          f"teacher_checkpoint={tmp_path / 'nolabels' / 'manifest.json'}")
    # a given teacher records the subjects it saw, and is refused where one of them is a test subject
    rep = json.loads((run_dir / "teacher" / "report.json").read_text())
    assert t["subjects"] == {part: sorted(rep["split"]["subjects"][part]) for part in ("train", "val")}
    seen = t["subjects"]["train"][0]
    fails(rf"teacher/best.pt: the teacher was trained or validated on test subjects of split holdout \({seen}\)",
          "stages=[student]", f"teacher_checkpoint={run_dir / 'teacher' / 'best.pt'}", f"split.test_subjects=[{seen}]")
    from wearspec.data.splits import make_splits
    from wearspec.finetune.recipe import _check_teacher_subjects

    unrecorded = {k: v for k, v in t.items() if k != "subjects"}
    torch.save(unrecorded, tmp_path / "unrecorded.pt")
    splits = make_splits(s, np.flatnonzero(s.labels >= 0), _cfg(store, tmp_path / "x").split)
    with pytest.warns(UserWarning, match="unrecorded.pt: the checkpoint does not record the subjects"):
        _check_teacher_subjects(str(tmp_path / "unrecorded.pt"), splits, s)
    # a given teacher works: its front end is used, the student distils from it
    out = tmp_path / "given"
    given = run_finetune(_cfg(store, out, "stages=[student]", f"teacher_checkpoint={run_dir / 'teacher' / 'best.pt'}",
                              "runtime.max_steps=1"))
    assert given["stopped"]["step"] == 1 and not (out / "holdout" / "frontend.pt").exists()
    ckpt = load_checkpoint(out / "holdout" / "student" / "checkpoints" / "ckpt-00000001.pt")
    assert torch.equal(ckpt["state_dict"]["frontend.norm_mean"], t["state_dict"]["frontend.norm_mean"])
    # pretrain checkpoints: another architecture; another channel set
    from wearspec.ssl.pretrain import PretrainConfig, run_pretrain

    pt = tmp_path / "pt"
    run_pretrain(load_config(PretrainConfig, None, [f"store={store}", f"output={pt}", *PRETRAIN_TINY,
                                                    "runtime.max_steps=1"]))
    fails(r"ckpt-00000001.pt: not a classifier checkpoint \(stage 'pretrain'", "stages=[student]",
          f"teacher_checkpoint={pt / 'checkpoints' / 'ckpt-00000001.pt'}")
    fails("holds a vit backbone .* the student is a swin", *VIT, "student.model.arch=swin",
          "student.model.backbone.name=swin_tiny_cpu", f"student.init_checkpoint={pt}")
    p = dict(load_checkpoint(list_checkpoints(pt / "checkpoints")[-1]))
    p["encoder"] = {**p["encoder"], "channels": ["ax", "ay", "az"], "in_chans": 3}
    torch.save(p, tmp_path / "three.pt")
    fails(r"does not match the encoder of .*three.pt: channels differ", *VIT,
          f"student.init_checkpoint={tmp_path / 'three.pt'}")


def test_configs_load():
    for name in ("finetune_deseptr.yaml", "finetune_vit_ssl.yaml"):
        cfg = load_config(FinetuneConfig, ROOT / "configs" / name)
        assert cfg.stages == ["teacher", "student"]
    deseptr = load_config(FinetuneConfig, ROOT / "configs" / "finetune_deseptr.yaml")
    assert deseptr.student.model.arch == "septr" and deseptr.student.model.teacher_stem
    assert deseptr.student.distill.kind == "hard" and deseptr.augment.cutmix_p > 0
    vit = load_config(FinetuneConfig, ROOT / "configs" / "finetune_vit_ssl.yaml")
    assert vit.student.model.arch == "vit" and vit.student.layer_decay < 1


# ---- torchrun ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_torchrun_two_ranks(store, tmp_path):
    out = tmp_path / "ddp"
    script = tmp_path / "run.py"
    script.write_text("import json, sys\nfrom wearspec.config import load_config\n"
                      "from wearspec.finetune.recipe import FinetuneConfig, run_finetune\n"
                      "s = run_finetune(load_config(FinetuneConfig, None, sys.argv[1:]))\n"
                      "print(json.dumps({'finished': s['finished']}))\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           f"store={store}", f"output={out}", *TINY, "teacher.batch_size=8", "student.batch_size=8",
           "student.freeze_backbone_epochs=1", "runtime.ckpt_every=3"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert '"finished": true' in p.stdout and "2 rank(s)" in p.stderr
    for stage in ("teacher", "student"):
        recs = read_metrics(out / "holdout" / stage / "metrics.jsonl")
        syncs = [r for r in recs if r.get("event") == "checkpoint"]
        assert syncs and all(len(r["replica_digests"]) == 2 and r["replicas_in_sync"] for r in syncs)
        state = load_checkpoint(list_checkpoints(out / "holdout" / stage / "checkpoints")[-1])
        assert len(state["rng"]) == 2
    assert (out / "report.json").is_file()


def test_pooled_report_holds_the_classical_baseline_on_the_same_training_windows(store, tmp_path, monkeypatch):
    """The top-level report: the classical rows beside the stages, fitted on each split's training windows as
    the stages saw them (label_fraction); classical.enabled=false drops them. No training: the stage's test
    predictions are written by hand."""
    from wearspec.data.splits import make_splits
    from wearspec.evaluate.classical import classical_baseline
    from wearspec.finetune import recipe

    s = WindowStore(store)
    seen = []
    monkeypatch.setattr(recipe, "classical_baseline",
                        lambda st, splits, cfg, seed: seen.append(splits) or classical_baseline(st, splits, cfg, seed))
    for enabled in (True, False):
        cfg = _cfg(store, tmp_path / str(enabled), "stages=[teacher]", "label_fraction=0.5", "classical.n_trees=10",
                   "classical.n_jobs=1", f"classical.enabled={str(enabled).lower()}")
        splits = make_splits(s, np.flatnonzero(s.labels >= 0), cfg.split)
        for sp in splits:
            y = s.labels[sp.test]
            folder = Path(cfg.output) / sp.name / "teacher"
            folder.mkdir(parents=True)
            np.savez(folder / "test_predictions.npz", index=sp.test, label=y, pred=y, subject=s.subjects[sp.test])
        report = recipe._pool(Path(cfg.output), cfg, s, splits, [{"name": sp.name, "teacher": {}} for sp in splits])
        on_disk = json.loads((Path(cfg.output) / "report.json").read_text())
        if not enabled:
            assert "classical" not in report and "classical" not in on_disk
            continue
        train = label_subset(s.labels, splits[0].train, 0.5, cfg.split.seed)
        np.testing.assert_array_equal(seen[-1][0].train, train)
        np.testing.assert_array_equal(seen[-1][0].test, splits[0].test)
        assert on_disk["classical"]["models"] == ["logreg", "forest"]
        forest = on_disk["classical"]["forest"]
        assert sorted(forest["per_subject"]) == sorted(on_disk["stages"]["teacher"]["per_subject"])
        assert forest["n"] == len(splits[0].test)


def test_a_bad_classical_setting_is_a_one_line_error(store, tmp_path):
    with pytest.raises(WearspecError, match=r"^classical\.n_trees: expected ≥ 1"):
        _cfg(store, tmp_path, "classical.n_trees=0")
