"""``wearspec demo``: the whole pipeline at a tiny budget, its report, resume, and its components."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wearspec.cli import main
from wearspec.data.prepare import PrepareConfig
from wearspec.data.readers.config import SyntheticConfig
from wearspec.data.frontend import SpectrogramFrontend
from wearspec.data.prepare import prepare
from wearspec.demo.figures import cls_attention, match_crops
from wearspec.demo.recipe import STEPS, replay_recording
from wearspec.models.backbones import BackboneConfig, build_backbone
from wearspec.models.encoder import SpectrogramEncoder

TINY = ["synthetic.subjects=8", "synthetic.minutes_per_subject=1.5", "synthetic.unlabelled_subjects=2",
        "pretrain.optim.epochs=1", "pretrain.optim.batch_size=16", "finetune.teacher.epochs=1",
        "finetune.student.epochs=1", "export.calibration_windows=32", "stream.windows=8"]


@pytest.mark.slow
def test_demo_end_to_end_report_and_resume(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", f"output={out}", *TINY]) == 0
    for step in STEPS:
        assert (out / "steps" / f"{step}.json").is_file(), step
    rep = out / "report"
    for name in ("report.html", "report.md", "figures.json", "attention.png", "region.png", "embedding.png"):
        assert (rep / name).is_file() and (rep / name).stat().st_size > 0, name
    md = (rep / "report.md").read_text()
    html = (rep / "report.html").read_text()

    # every image referenced by the markdown exists; the HTML inlines them all and links nothing outside
    for ref in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (rep / ref).resolve().is_file(), ref
    assert html.count("<img") == len(re.findall(r"!\[", md)) >= 8
    assert not re.search(r'src="(?!data:image/png;base64,)', html) and "http" not in html

    # the numbers in the report are the ones in the files the steps wrote
    steps = {s: json.loads((out / "steps" / f"{s}.json").read_text()) for s in STEPS}
    for which in ("teacher", "random"):
        probe = json.loads((out / "probe" / which / "report.json").read_text())
        assert f"{probe['linear']['pooled']['macro_f1']:.3f}" in md
        assert f"{probe['knn']['pooled']['macro_f1']:.3f}" in md
    ft = json.loads((out / "finetune" / "report.json").read_text())
    for stage in ("teacher", "student"):
        assert f"{ft['stages'][stage]['pooled']['kappa']:.3f}" in md
        s = ft["stages"][stage]["subject_summary"]["macro_f1"]
        assert f"{s['mean']:.3f} ± {s['sd']:.3f}" in md
    bundle = json.loads((out / "bundle" / "bundle.json").read_text())
    assert bundle["parity"]["real"]["passed"] and (out / "bundle" / "model.int8.onnx").is_file()
    assert f"{bundle['int8']['accuracy']['int8']['macro_f1']:.3f}" in md
    stream = steps["stream"]
    assert stream["agreement_with_batch"] == 1.0 and stream["predictions"] == 8
    assert f"{stream['latency']['p50_ms']:.3f}" in md
    fig = json.loads((rep / "figures.json").read_text())
    assert 0.0 <= fig["region"]["chance"] < 1.0 and f"{fig['region']['consistent_teacher']:.3f}" in md
    assert steps["pretrain"]["nproc"] == 2 and steps["pretrain"]["backend"] == "gloo"
    assert steps["pretrain"]["steps"] > 0 and f"{steps['pretrain']['last']['loss']:.3f}" in md
    if not steps["engine"]["built"]:  # no tensorrt / GPU here: stated, not hidden
        assert "Skipped: " + steps["engine"]["skipped"] in md
    # the stream's predictions file has one line per prediction
    assert len((out / "stream" / "predictions.csv").read_text().strip().splitlines()) == 1 + 8

    # resume: a second run redoes nothing but the report
    ckpts = {p: p.stat().st_mtime_ns for p in (out / "pretrain" / "checkpoints").iterdir()}
    best = (out / "finetune" / "holdout" / "student" / "best.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["demo", f"output={out}", *TINY]) == 0
    err = capsys.readouterr().err
    assert all(f"{s}: done in an earlier run" in err for s in STEPS if s != "report")
    assert {p: p.stat().st_mtime_ns for p in (out / "pretrain" / "checkpoints").iterdir()} == ckpts
    assert (out / "finetune" / "holdout" / "student" / "best.pt").stat().st_mtime_ns == best

    # other settings in the same folder: refused, nothing changed
    assert main(["demo", f"output={out}", *TINY[:-1], "stream.windows=9"]) == 2
    assert "stream.windows: 8 before, 9 now" in capsys.readouterr().err


def test_demo_bad_settings_are_one_line_errors(tmp_path, capsys):
    assert main(["demo", f"output={tmp_path}/d", "split.mode=kfold"]) == 2
    assert "split.mode" in capsys.readouterr().err
    assert main(["demo", f"output={tmp_path}/d", "pretrain.backbone.name=nope"]) == 2
    assert "backbone" in capsys.readouterr().err
    # the probe's default 4 last blocks: a 2-stage Swin is refused before anything runs, not after pretraining
    assert main(["demo", f"output={tmp_path}/d", "pretrain.backbone.name=swin_tiny_cpu"]) == 2
    assert "probe.n_last: swin_tiny_cpu has 2 stages; expected 1…2, got 4" in capsys.readouterr().err
    assert main(["demo", f"output={tmp_path}/d", "pretrain.backbone.depth=3"]) == 2
    assert "has 3 blocks" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_demo_refuses_a_store_without_labels(tmp_path, capsys):
    raw, store = tmp_path / "npy", tmp_path / "unlabelled"
    raw.mkdir()
    np.save(raw / "X.npy", np.random.default_rng(0).standard_normal((8, 3, 250)).astype(np.float32))
    assert main(["prepare", "generic", str(raw), "-o", str(store), "generic.rate=50", "window.length_s=5",
                 "window.hop_s=2.5"]) == 0
    assert main(["demo", f"output={tmp_path}/d", f"store={store}"]) == 2
    assert "no labelled windows" in capsys.readouterr().err


def test_replay_recording_rebuilds_the_windows(tmp_path):
    store, _ = prepare("synthetic", None, tmp_path / "s", PrepareConfig(synthetic=SyntheticConfig(
        subjects=3, minutes_per_subject=1.0)))
    samples, labels, rec = replay_recording(store, [store.subject_names[1]], max_windows=6)
    assert samples.shape == (5 * store.hop + store.window, store.n_channels) and len(labels) == 6
    idx = np.flatnonzero(np.asarray(store.recording_names)[store.recordings] == rec)
    idx = idx[np.argsort(store.starts[idx])][:6]
    for i, w in enumerate(store.read_batch(idx)):  # window i of the replay is window i of the store
        np.testing.assert_array_equal(samples[i * store.hop: i * store.hop + store.window].T, w)


def _encoder(arch: str = "vit") -> SpectrogramEncoder:
    torch.manual_seed(0)
    name = "vit_tiny_cpu" if arch == "vit" else "swin_tiny_cpu"
    front = SpectrogramFrontend(n_fft=32, hop_length=8)
    return SpectrogramEncoder(front, build_backbone(BackboneConfig(name=name), 3, (17, 29))).eval()


def test_cls_attention_equals_timms_own_attention_weights():
    enc = _encoder()
    spec = torch.randn(2, 3, 17, 29)
    attn = enc.backbone.model.blocks[-1].attn
    attn.fused_attn = False  # timm's explicit path: softmax → attn_drop (identity in eval) → @ v
    seen = {}
    hook = attn.attn_drop.register_forward_hook(lambda m, a, o: seen.setdefault("w", o))
    try:
        maps = cls_attention(enc.backbone, spec)
    finally:
        hook.remove()
    h, w = enc.backbone.token_grid((17, 29))
    assert maps.shape == (2, h, w)  # non-square grid, padded up to whole patches
    want = seen["w"][:, :, 0, 1:].mean(1).reshape(2, h, w)
    torch.testing.assert_close(maps, want)
    with pytest.raises(ValueError):
        cls_attention(_encoder("swin").backbone, spec)


@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_region_matching_rates_are_fractions(arch):
    enc = _encoder(arch)
    x = np.random.default_rng(0).standard_normal((3, 3, 8 * 28 + 32)).astype(np.float32)
    with torch.no_grad():
        res = match_crops(enc, x)
    assert res["match"].shape[0] == 3 and res["tokens"] >= 1
    assert 0.0 <= res["rate"] <= 1.0 and 0.0 < res["chance"] < 1.0
    # every matched index points at a token of crop A
    assert res["match"].max() < len(res["centres_a"])


class _PositionBackbone(torch.nn.Module):
    """Tokens that encode their absolute (frequency, frame) position: channel 0 of the input holds the frame
    number, channel 1 the frequency bin; a patch's token is a Fourier code of its mean position."""

    arch, patch_size = "vit", (4, 4)

    def __init__(self, relative: bool = False):
        super().__init__()
        self.relative = relative  # code the position inside the crop instead: the crops no longer line up

    def token_grid(self, size):
        return tuple(-(-n // p) for n, p in zip(size, self.patch_size))

    def forward(self, spec):
        if self.relative:
            spec = torch.stack(torch.meshgrid(torch.arange(spec.shape[-2]), torch.arange(spec.shape[-1]),
                                              indexing="ij")[::-1]).float()[None].expand(len(spec), -1, -1, -1)
        pooled = torch.nn.functional.avg_pool2d(spec[:, :2], 4, ceil_mode=True)  # (B, 2, h, w)
        k = torch.arange(1, 7, dtype=torch.float32)
        t, f = (pooled[:, i].flatten(1)[..., None] for i in (0, 1))
        feats = torch.cat([torch.cos(t * k / 30), torch.sin(t * k / 30), torch.cos(f * k / 30),
                           torch.sin(f * k / 30)], -1)
        return SimpleNamespace(tokens=feats, grid=tuple(pooled.shape[-2:]))


def test_region_matching_is_consistent_for_position_coding_tokens():
    """Tokens that know where they are match the same place in the other crop: every match is consistent."""
    n_f, n = 16, 40
    spec = np.zeros((2, 2, n_f, n), np.float32)
    spec[:, 0] = np.arange(n, dtype=np.float32)[None, None, :]
    spec[:, 1] = np.arange(n_f, dtype=np.float32)[None, :, None]
    enc = SimpleNamespace(frontend=lambda x: x, backbone=_PositionBackbone())
    res = match_crops(enc, spec)
    assert res["shift"] % 4 == 0 and res["tokens"] == (n_f // 4) * ((n - 2 * res["shift"]) // 4)
    assert res["rate"] == 1.0 and res["chance"] < 0.5
    relative = SimpleNamespace(frontend=lambda x: x, backbone=_PositionBackbone(relative=True))
    assert match_crops(relative, spec)["rate"] == 0.0  # token j of B ↔ token j of A: off by the shift


def test_demo_config_for_own_store_loads(capsys):
    assert main(["demo", "--config", "configs/demo_own_store.yaml", "store=data/mine", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "store: data/mine" in text and "epochs: 30" in text


def test_demo_refuses_more_pretraining_processes_than_gpus(tmp_path, monkeypatch):
    """One process per GPU: on a 1-GPU machine nproc=2 would put a rank on a GPU that is not there."""
    from wearspec.config import load_config
    from wearspec.demo.recipe import DemoConfig, step_pretrain
    from wearspec.errors import WearspecError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    done = {"data": {"test_subjects": [], "val_subjects": []}}
    with pytest.raises(WearspecError, match=r"nproc=2 with 1 GPU\(s\).*pretrain.runtime.device=cpu"):
        step_pretrain(load_config(DemoConfig, None, ["nproc=2"]), tmp_path, done)
    assert not any(tmp_path.iterdir())  # nothing written, nothing launched


def test_report_shows_the_classical_rows_and_opens_with_the_verdict(tmp_path):
    """The report built from hand-made step files: the classical baseline beside the probes, the verdict first."""
    from test_verdict import write_fake_run

    from wearspec.demo.figures import subjects_figure
    from wearspec.demo.report import write_report
    from wearspec.demo.verdict import classical_models, deep_models, subject_scores

    out = write_fake_run(tmp_path / "run", ssl=0.85, random=0.6, classical=0.95)
    models = {n: subject_scores(r) for n, r in {**deep_models(out), **classical_models(out)}.items()}
    fig = subjects_figure(models, out / "report" / "subjects.png")
    # 4 probes and the 2 on 10 % of the labels, 2 fine-tuned, 2 classical
    assert fig["subjects"] == 5 and len(fig["models"]) == 10
    (out / "report" / "figures.json").write_text(json.dumps({"subjects": fig}))
    paths = write_report(out)
    md, html = paths["markdown"].read_text(), paths["html"].read_text()
    probe = json.loads((out / "probe" / "teacher" / "report.json").read_text())
    for m, label in (("logreg", "features+LR"), ("forest", "features+RF")):
        row = next(line for line in md.splitlines() if line.startswith(f"| classical baseline, {label} |"))
        assert f"{probe['classical'][m]['pooled']['macro_f1']:.3f}" in row
        assert f"classical baseline, {label}" in html
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Verdict" and html.index("<h2>Verdict</h2>") < html.index("<h2>Data</h2>")
    verdict = json.loads((out / "report" / "verdict.json").read_text())
    assert len(verdict) == 7  # SSL linear, k-NN and on 10 % of the labels, classical, student, INT8, latency
    assert "SSL vs random init (linear probe on 10% of the labels)" in [v["title"] for v in verdict]
    for v in verdict:
        assert v["sentence"] in md
        if v["diff"]:
            assert f"{v['diff']['estimate']:+.3f}" in md and f"{v['diff']['low']:+.3f}" in md
    assert "The classical baseline beat every deep model here" in md and "Pretraining helped" in md
    assert "![Macro-F1 of each of the 5 test subjects" in md and html.count("<img") == 1


def test_report_says_when_the_classical_baseline_was_off(tmp_path):
    from test_verdict import write_fake_run

    from wearspec.demo.report import write_report

    md = write_report(write_fake_run(tmp_path / "run", classical_enabled=False))["markdown"].read_text()
    assert "Classical baseline: not run (probe.classical.enabled=false)." in md
    assert "| classical baseline, features" not in md


def test_held_out_reports_score_both_graphs_per_test_subject(tmp_path):
    """The INT8 verdict's per-subject scores: each graph's predictions on the test subjects' labelled windows."""
    from test_runtime import make_bundle, reference

    from wearspec.demo.recipe import held_out_reports

    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 3, 20)).astype(np.float32)
    store = SimpleNamespace(subject_names=["a", "b", "c"], subjects=np.repeat([0, 1, 2], 10),
                            labels=np.where(np.arange(30) % 7 == 0, -1, reference(x).argmax(1) * (np.arange(30) < 25)),
                            label_names=["sit", "stand", "walk", "run"], read_batch=lambda idx: x[idx])
    reps = held_out_reports(store, str(make_bundle(tmp_path / "b", int8=True)), ["b", "c"], 0, seed=0)
    labelled = (store.labels >= 0) & (store.subjects > 0)
    for precision in ("fp32", "int8"):
        r = reps[precision]
        assert sorted(r["per_subject"]) == ["b", "c"] and r["n"] == labelled.sum()
        assert r["per_subject"]["b"]["accuracy"] == 1.0 and r["per_subject"]["c"]["accuracy"] < 1.0
    capped = held_out_reports(store, str(make_bundle(tmp_path / "b2", int8=True)), ["b", "c"], 5, seed=0)
    assert capped["int8"]["n"] == 5
