"""The demo report's verdict: subject-level bootstrap intervals, the sentence of each case, numbers from the files.

:func:`write_fake_run` builds a demo folder from small, hand-made stage reports (no pipeline run): the report
tests in ``test_demo.py`` use it too.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from wearspec.demo.verdict import (
    SENTENCES,
    Difference,
    bootstrap,
    compare,
    latency_verdict,
    paired_difference,
    sentence,
    subject_scores,
    verdicts,
)
from wearspec.evaluate.metrics import classification_report, macro_f1

LABELS = ["walk", "sit", "run"]
SUBJECTS = ["s01", "s02", "s03", "s04", "s05"]


def fake_report(accuracy: dict[str, float], seed: int, windows: int = 60) -> dict:
    """A classification report whose subject s gets ``accuracy[s]`` of its windows right (others: next class)."""
    rng = np.random.default_rng(seed)
    y, p, subj = [], [], []
    for s, acc in accuracy.items():
        t = rng.integers(0, len(LABELS), windows)
        right = np.arange(windows) < round(acc * windows)
        y += t.tolist()
        p += np.where(right, t, (t + 1) % len(LABELS)).tolist()
        subj += [s] * windows
    return classification_report(np.array(y), np.array(p), np.array(subj), LABELS)


def _acc(base: float, step: float = 0.0) -> dict[str, float]:
    return {s: min(1.0, base + i * step) for i, s in enumerate(SUBJECTS)}


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_fake_run(out: Path, ssl: float = 0.8, random: float = 0.6, classical: float = 0.7,
                   classical_enabled: bool = True) -> Path:
    """A demo folder with every file the report reads, made from hand-chosen per-subject accuracies."""
    rep = {k: fake_report(_acc(v, 0.02), seed=i) for i, (k, v) in enumerate(
        {"ssl_lin": ssl, "ssl_knn": ssl - 0.05, "rnd_lin": random, "rnd_knn": random - 0.05, "lr": classical - 0.1,
         "rf": classical, "teacher": 0.75, "student": 0.74, "fp32": 0.74, "int8": 0.72}.items())}
    classical_sec = {"enabled": True, "models": ["logreg", "forest"],
                     "labels": {"logreg": "features+LR", "forest": "features+RF"},
                     "features": {"count": 123, "windows": 300}, "logreg": rep["lr"], "forest": rep["rf"]}
    for which, lin, knn in (("teacher", "ssl_lin", "ssl_knn"), ("random", "rnd_lin", "rnd_knn")):
        probe = {"linear": rep[lin], "knn": {**rep[knn], "k": 20},
                 "linear_few": {**fake_report(_acc(ssl - 0.1 if which == "teacher" else random - 0.2, 0.02), seed=11),
                                "fraction": 0.1}}
        if which == "teacher" and classical_enabled:
            probe["classical"] = classical_sec
        _write(out / "probe" / which / "report.json", probe)
    _write(out / "finetune" / "report.json", {"stages": {"teacher": rep["teacher"], "student": rep["student"]}})
    data = {"store": "store", "windows": 900, "labelled_windows": 600, "unlabelled_windows": 300,
            "pretrain_windows": 500, "channels": ["acc_x", "acc_y", "acc_z"], "rate_hz": 50.0, "window_samples": 250,
            "hop_samples": 125, "test_subjects": SUBJECTS, "val_subjects": ["v1"], "train_subjects": ["t1", "t2"],
            "unlabelled_subjects": ["u1"], "seconds": 1.0}
    steps = {"data": data, "pretrain": {"steps": 10, "nproc": 2, "last": {"step": 10, "loss": 4.321}, "seconds": 1},
             "probe": {"seconds": 1}, "finetune": {"seconds": 1},
             "export": {"held_out": {"fp32": rep["fp32"], "int8": rep["int8"]}, "seconds": 1},
             "stream": {"seconds": 1}, "engine": {"built": False, "skipped": "no GPU", "seconds": 0}}
    for name, rec in steps.items():
        _write(out / "steps" / f"{name}.json", rec)
    _write(out / "data" / "summary.json", {"subjects": 9, "per_label": {"walk": 200}})
    _write(out / "bundle" / "bundle.json", {"onnx": {"opset": 17, "trt_version_checked": "10.3"}, "parity": {}})
    lat = [2.0 + 0.01 * i for i in range(40)]
    _write(out / "stream" / "stream.json", {
        "recording": "s01#0", "samples": 5000, "smoothing": 1, "predictions": 40, "agreement_with_batch": 1.0,
        "accuracy_vs_labels": 0.8, "latencies_ms": lat, "hop_ms": 2500.0,
        "latency": {"p50_ms": 2.2, "p99_ms": 2.39, "mean_ms": 2.2, "max_ms": 2.39}})
    return out


# -- the bootstrap ---------------------------------------------------------------------------------------------


def test_bootstrap_interval_equals_a_direct_computation():
    d = np.array([0.10, -0.02, 0.05, 0.07])
    got = bootstrap(d, resamples=500, seed=3)
    rng = np.random.default_rng(3)
    means = [d[rng.integers(0, 4, size=4)].mean() for _ in range(500)]  # the same draws, one at a time
    assert got.estimate == pytest.approx(d.mean())
    assert (got.low, got.high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert got.n == 4 and got.resamples == 500


def test_bootstrap_of_two_subjects_covers_exactly_their_possible_means():
    """With two subjects a resample mean is one of d1, (d1 + d2) / 2, d2: the interval spans d1 … d2."""
    got = bootstrap(np.array([0.1, 0.3]), resamples=2000, seed=0)
    assert (got.low, got.estimate, got.high) == pytest.approx((0.1, 0.2, 0.3))
    one = bootstrap(np.array([-0.04]))
    assert one.low == one.high == one.estimate == pytest.approx(-0.04) and one.sign == -1


def test_paired_difference_uses_the_shared_subjects_only_and_is_seeded():
    a = {"s1": 0.9, "s2": 0.8, "s3": 0.7, "only_a": 0.0}
    b = {"s1": 0.7, "s2": 0.7, "s3": 0.6, "only_b": 1.0}
    d = paired_difference(a, b, seed=1)
    assert d.n == 3 and d.estimate == pytest.approx(np.mean([0.2, 0.1, 0.1]))
    assert d == paired_difference(a, b, seed=1) and d.sign == 1
    assert paired_difference({"x": 1.0}, {"y": 1.0}) is None


# -- the sentences -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, sign", list(itertools.product(SENTENCES, (1, -1, 0))))
def test_sentence_of_each_kind_and_sign(kind, sign):
    diff = {1: Difference(0.05, 0.01, 0.09, 5, 2000), -1: Difference(-0.05, -0.09, -0.01, 5, 2000),
            0: Difference(0.01, -0.03, 0.05, 5, 2000)}[sign]
    assert diff.sign == sign
    text = sentence(kind, diff, "A", "B", hop_ms=2500.0)
    assert text == SENTENCES[kind][{1: 0, -1: 1, 0: 2}[sign]].format(
        a="A", b="B", est=f"{diff.estimate:+.{1 if kind == 'latency' else 3}f}",
        size=f"{abs(diff.estimate):.{1 if kind == 'latency' else 3}f}", hop="2500")
    assert "{" not in text


def test_the_plain_sentences_say_what_the_issue_asks():
    up, down, none = Difference(0.05, 0.01, 0.09, 5, 2000), Difference(-0.05, -0.09, -0.01, 5, 2000), \
        Difference(0.0, -0.02, 0.02, 5, 2000)
    assert sentence("ssl", up, "A", "B").startswith("Pretraining helped on these subjects")
    assert sentence("ssl", down, "A", "B").startswith("Pretraining did not help on these subjects")
    assert "no clear difference" in sentence("ssl", none, "A", "B")
    assert sentence("classical", down, "A", "B").startswith("The classical baseline beat every deep model here")
    assert sentence("int8", down, "A", "B") == "INT8 cost 0.050 macro-F1 on these subjects."


def test_a_side_that_did_not_run_is_not_measured():
    v = compare("ssl", "SSL vs random init (k-NN)", ("SSL", fake_report(_acc(0.8), 0)), ("random init", None))
    assert v.diff is None and v.sentence == "SSL vs random init (k-NN): not measured (random init not run)."
    assert latency_verdict(None).diff is None
    assert "no per-prediction latencies" in latency_verdict({"latency": {}}).sentence


# -- from the files ------------------------------------------------------------------------------------------------


def test_verdicts_read_the_numbers_from_the_stage_reports(tmp_path):
    out = write_fake_run(tmp_path / "run", ssl=0.85, random=0.6, classical=0.95)
    v = {x.title: x for x in verdicts(out)}
    probe = {w: json.loads((out / "probe" / w / "report.json").read_text()) for w in ("teacher", "random")}
    lin = v["SSL vs random init (linear probe)"]
    a, b = subject_scores(probe["teacher"]["linear"]), subject_scores(probe["random"]["linear"])
    assert lin.diff.estimate == pytest.approx(np.mean([a[s] - b[s] for s in SUBJECTS]))
    assert lin.diff == paired_difference(a, b) and lin.diff.n == len(SUBJECTS)
    assert lin.sentence.startswith("Pretraining helped")
    # per-subject macro-F1 is the metric: recomputed from a subject's own windows it is the report's number
    assert a["s01"] == probe["teacher"]["linear"]["per_subject"]["s01"]["macro_f1"]

    best = v["Best deep model vs the classical baseline"]
    assert best.a == "SSL teacher, linear probe" and best.b == "features+RF"
    assert best.diff.sign == -1 and best.sentence.startswith("The classical baseline beat every deep model here")

    few = v["SSL vs random init (linear probe on 10% of the labels)"]
    fa, fb = subject_scores(probe["teacher"]["linear_few"]), subject_scores(probe["random"]["linear_few"])
    assert few.diff == paired_difference(fa, fb) and few.diff.estimate > 0
    assert few.a == "SSL teacher, linear probe on 10% of the labels" and few.sentence.startswith("Pretraining helped")
    assert len(v) == 7  # two SSL probes, the label-efficiency point, classical, student, INT8, latency

    student, int8 = v["Student vs teacher"], v["INT8 vs FP32"]
    assert student.a == "distilled student" and student.diff.estimate < 0
    held = json.loads((out / "steps" / "export.json").read_text())["held_out"]
    assert int8.diff == paired_difference(subject_scores(held["int8"]), subject_scores(held["fp32"]))

    lat = v["Streaming latency"]
    stream = json.loads((out / "stream" / "stream.json").read_text())
    assert lat.diff.estimate == pytest.approx(2500.0 - np.percentile(stream["latencies_ms"], 99))
    assert lat.diff.sign == 1 and lat.sentence.startswith("Streaming keeps up")
    assert lat.resampled == "predictions" and lat.diff.n == 40


def test_without_the_classical_baseline_its_verdict_is_not_measured(tmp_path):
    out = write_fake_run(tmp_path / "run", classical_enabled=False)
    v = {x.title: x for x in verdicts(out)}["Best deep model vs the classical baseline"]
    assert v.diff is None and "not measured (classical baseline not run)" in v.sentence


def test_macro_f1_of_a_fake_subject_is_what_was_asked():
    rep = fake_report({"s": 1.0}, seed=0)
    assert rep["per_subject"]["s"]["macro_f1"] == macro_f1([0, 1], [0, 1]) == 1.0
