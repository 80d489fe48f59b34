"""Deploy export: ONNX of every model family with PyTorch parity, the TensorRT 10.3 op-set gate, refusals that
leave no bundle, INT8 Q/DQ on a trained model, bundle.json contents and validation, a torch-free bundle reader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from wearspec.data.prepare import PrepareConfig
from wearspec.data.readers.config import SyntheticConfig
from wearspec.data.frontend import SpectrogramFrontend
from wearspec.data.prepare import prepare
from wearspec.data.splits import SplitConfig, make_splits
from wearspec.deploy import export as export_mod
from wearspec.deploy.bundle import read_bundle, sha256_file
from wearspec.deploy.export import ExportConfig, InferenceModule, export_classifier, run_export
from wearspec.deploy.opset import REFUSED_OPS, check_ops, layernorm_report, op_counts, op_report
from wearspec.deploy.quantize import is_frontend_node, qdq_summary, session
from wearspec.errors import WearspecError
from wearspec.models.backbones import BackboneConfig
from wearspec.models.classifier import Classifier, classifier_meta, save_classifier
from wearspec.models.cnn import CNNConfig, build_teacher
from wearspec.models.septr import SepTrConfig
from wearspec.models.students import StudentConfig, build_student

C, T, K, HOP, RATE = 3, 200, 4, 100, 50.0
CHANNELS = ["ax", "ay", "az"]
LABELS = ["sit", "stand", "walk", "run"]
TEACHER = CNNConfig(width=8)
STUDENTS = {
    "vit": StudentConfig(arch="vit", backbone=BackboneConfig(name="vit_tiny_cpu", embed_dim=32, depth=2, num_heads=2)),
    "swin": StudentConfig(arch="swin", backbone=BackboneConfig(name="swin_tiny_cpu", embed_dim=16, depth=1,
                                                                num_heads=2)),
    "septr": StudentConfig(arch="septr", septr=SepTrConfig(embed_dim=16, depth=1, num_heads=2), teacher_stem=True),
}
FAST = dict(int8=False, parity_windows=8, fp16_check=False)


def fast(out: Path, **settings) -> ExportConfig:
    """Export settings for the tests: no INT8, no FP16 check, 8 parity windows (``settings`` override)."""
    return ExportConfig(output=str(out), **{**FAST, **settings})


def _frontend(channels=CHANNELS, fit: np.ndarray | None = None) -> SpectrogramFrontend:
    fe = SpectrogramFrontend(n_fft=32, hop_length=8, power=1.0, log="log1p", channel_names=channels)
    g = torch.Generator().manual_seed(1)
    return fe.fit(torch.randn(8, len(channels), T, generator=g) * 3 if fit is None else torch.from_numpy(fit))


def make_classifier(arch: str, frontend: SpectrogramFrontend | None = None, num_classes: int = K,
                    labels=LABELS, window: int = T, hop: int = HOP, rate: float = RATE):
    """A (Classifier, classifier_meta) pair with small random weights (seeded)."""
    torch.manual_seed(0)
    fe = frontend or _frontend()
    c, size = fe.n_channels, (fe.n_freqs, fe.n_frames(window))
    teacher = build_teacher(TEACHER, c, num_classes, size)
    if arch == "cnn":
        clf, kind, cfg = Classifier(fe, teacher), "teacher", TEACHER
    else:
        cfg, kind = STUDENTS[arch], "student"
        clf = Classifier(fe, build_student(cfg, c, size, num_classes, teacher=teacher))
    meta = classifier_meta(kind, cfg, fe.config(), c, size, num_classes, list(labels), list(fe.channel_names),
                           rate, window, hop, teacher_cnn=TEACHER if kind == "student" else None)
    return clf.eval(), meta


def _probs(clf, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(clf(torch.from_numpy(x)), -1).numpy()


def _no_leftovers(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))


@pytest.fixture(scope="module")
def vit_bundle(tmp_path_factory):
    """A ViT-student bundle (with the FP16 check), exported once for the bundle tests."""
    clf, meta = make_classifier("vit")
    out = tmp_path_factory.mktemp("bundles") / "vit"
    # int8 asked, skipped: no store
    summary = export_classifier(clf, meta, ExportConfig(output=str(out), parity_windows=8))
    return clf, meta, out, summary


# ---- export + parity per family ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["vit", "swin", "septr", "cnn"])
def test_family_exports_with_parity(arch, tmp_path):
    clf, meta = make_classifier(arch)
    out = tmp_path / arch
    summary = export_classifier(clf, meta, fast(out))
    assert summary["exporter"] == "torchscript" and summary["opset"] == 17
    assert summary["parity"]["random"]["passed"] and summary["parity"]["random"]["batch_sizes"] == [1, 8]
    model = onnx.load(str(out / "model.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    (inp,), (outp,) = model.graph.input, model.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert inp.name == "windows" and isinstance(dims(inp)[0], str) and dims(inp)[1:] == [C, T]
    assert outp.name == "probabilities" and isinstance(dims(outp)[0], str) and dims(outp)[1:] == [K]
    assert check_ops(model) == []
    ops = op_counts(model)
    assert not set(ops) & {"STFT", "DFT", "Loop", "If", "ScatterND", "NonZero"}
    assert ops["Conv"] >= 1 and "Log" in ops  # the conv-DFT front end is inside the graph
    ln = layernorm_report(model)
    if arch == "cnn":
        assert ln["single_op"] is None
    else:
        assert ln["single_op"] is True and ln["ops"] >= 3 and ops["LayerNormalization"] == ln["ops"]
    sess = session(model)
    rng = np.random.default_rng(3)
    for b in (1, 5):  # only the batch axis is dynamic
        x = (rng.standard_normal((b, C, T)) * 2).astype(np.float32)
        got = sess.run(None, {"windows": x})[0]
        assert got.shape == (b, K)
        np.testing.assert_allclose(got, _probs(clf, x), atol=1e-5, rtol=0)
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    with pytest.raises(Exception):  # the channel and time axes are fixed
        sess.run(None, {"windows": np.zeros((2, C, T + 8), np.float32)})


def test_inference_module_is_softmax_of_classifier():
    clf, _ = make_classifier("vit")
    x = torch.randn(3, C, T)
    with torch.no_grad():
        assert torch.allclose(InferenceModule(clf)(x), torch.softmax(clf(x), -1), atol=1e-6)
    with pytest.raises(WearspecError, match="frontend"):
        InferenceModule(nn.Linear(2, 2))


# ---- op-set check -----------------------------------------------------------------------------------------
def _graph(nodes, inputs=("x",), opset=17, inits=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, [2, 4]) for i in inputs],
                          [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
                          initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_check_ops_refuses_and_flags():
    ok = _graph([helper.make_node("Relu", ["x"], ["y"], name="r")])
    assert check_ops(ok) == [] and op_report(ok)["ops"] == {"Relu": 1}
    for op in ("STFT", "DFT", "ScatterND", "NonZero", "Loop", "If"):
        model = _graph([helper.make_node(op, ["x"], ["y"], name="n")])
        problems = check_ops(model)
        assert len(problems) == 1 and op in problems[0] and "refused" in problems[0], problems
        assert op in REFUSED_OPS
    unknown = check_ops(_graph([helper.make_node("Gelu", ["x"], ["y"], name="g")]))
    assert unknown and "support matrix" in unknown[0]
    assert any("opset 21" in p for p in check_ops(_graph([helper.make_node("Relu", ["x"], ["y"])], opset=21)))
    custom = _graph([helper.make_node("FusedGemm", ["x"], ["y"], domain="com.microsoft")])
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert any("com.microsoft" in p for p in check_ops(custom))
    # Q/DQ restrictions: zero point 0, no INT32 (bias) dequantization
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [3]),
             helper.make_tensor("b", TensorProto.INT32, [4], [1, 2, 3, 4])]
    q = _graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
                helper.make_node("DequantizeLinear", ["b", "s"], ["y"], name="dq")], inits=inits)
    problems = check_ops(q)
    assert any("zero point" in p for p in problems) and any("int32" in p for p in problems)


def test_layernorm_decomposition_detected():
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]), helper.make_node("Sub", ["x", "m"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["d2"]), helper.make_node("ReduceMean", ["d2"], ["v"], axes=[-1])]
    g = _graph(nodes, inputs=("x", "two"), opset=13)
    assert layernorm_report(g) == {"ops": 0, "decomposed": 1, "single_op": False}


def test_simplify_without_onnxslim_keeps_the_graph(monkeypatch, tmp_path):
    g = _graph([helper.make_node("Relu", ["x"], ["y"])], inputs=("x",), opset=17)
    monkeypatch.setitem(sys.modules, "onnxslim", None)  # import onnxslim → ImportError
    model, note = export_mod.simplify(g)
    assert model is g and note == "onnxslim is not installed; graph left as exported"
    # the Swin (its window mask a constant, not indexed assignments) still exports to a TensorRT-clean graph
    summary = export_classifier(*make_classifier("swin"), fast(tmp_path / "swin"))
    assert summary["parity"]["random"]["passed"] and note in summary["notes"]
    model = onnx.load(str(tmp_path / "swin" / "model.onnx"))
    assert check_ops(model) == [] and "ScatterND" not in op_counts(model)


# ---- refusals leave nothing behind -------------------------------------------------------------------------
class _NonZeroModel(nn.Module):
    """Logits plus a term computed by boolean indexing: exports to NonZero."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(C, K)

    def forward(self, spec):
        pooled = spec.mean((2, 3))
        return self.fc(pooled) + spec[spec > 0].mean()


class _BrokenClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.frontend, self.model = _frontend(), _NonZeroModel()

    def forward(self, x):
        return self.model(self.frontend(x))


def test_op_outside_allow_list_is_refused(tmp_path):
    meta = {"kind": "student", "model": {"arch": "broken"}, "channels": CHANNELS, "rate": RATE, "window": T,
            "hop": HOP, "label_names": LABELS}
    out = tmp_path / "broken"
    with pytest.raises(WearspecError, match="NonZero") as info:
        export_classifier(_BrokenClassifier().eval(), meta, fast(out))
    assert "\n" not in str(info.value) and "TensorRT 10.3" in str(info.value)
    _no_leftovers(out)


def test_parity_gate_refuses_a_diverging_graph(tmp_path, monkeypatch):
    clf, meta = make_classifier("cnn")
    real_run = export_mod.run_onnx
    monkeypatch.setattr(export_mod, "run_onnx", lambda sess, x, batch=64: real_run(sess, x, batch) + 2e-3)
    out = tmp_path / "diverged"
    with pytest.raises(WearspecError, match=r"parity gate failed on random windows: max abs error 0\.002"):
        export_classifier(clf, meta, fast(out))
    _no_leftovers(out)
    # a looser gate lets the same graph through
    summary = export_classifier(clf, meta, fast(out, parity_atol=1e-2, parity_rtol=10.0))
    assert summary["parity"]["random"]["max_abs"] == pytest.approx(2e-3, rel=1e-2)


def test_output_folder_rules(tmp_path, vit_bundle):
    clf, meta, bundle, _ = vit_bundle
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(WearspecError, match="holds no deploy bundle"):
        export_classifier(clf, meta, fast(other, overwrite=True))
    assert (other / "keep.txt").read_text() == "mine"
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    with pytest.raises(WearspecError, match="overwrite"):
        export_classifier(clf, meta, fast(copy))
    before = json.loads((copy / "bundle.json").read_text())["created"]
    export_classifier(clf, meta, fast(copy, overwrite=True))
    assert read_bundle(copy)["fp16"] is None and before  # replaced by the new (no-FP16-check) bundle
    assert not list(tmp_path.glob(".copy.*"))


# ---- bundle contents, validation, torch-free reader --------------------------------------------------------
def test_bundle_fields_and_checksums(vit_bundle):
    clf, meta, out, summary = vit_bundle
    b = read_bundle(out)
    assert b["dir"] == str(out.resolve()) and summary["bundle"] == str(out)
    assert b["format"] == "wearspec-bundle" and b["version"] == 1 and b["wearspec_version"]
    assert b["input"] == {"name": "windows", "shape": [-1, C, T], "dtype": "float32", "channels": CHANNELS,
                          "rate": RATE, "window": T, "hop": HOP}
    assert b["output"] == {"name": "probabilities", "shape": [-1, K], "labels": LABELS}
    np.testing.assert_allclose(b["normalization"]["mean"], clf.frontend.norm_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(b["normalization"]["std"], clf.frontend.norm_std.numpy(), rtol=1e-6)
    assert "inside the graph" in b["normalization"]["where"]
    assert b["frontend"] == clf.frontend.config()
    assert b["model"]["kind"] == "student" and b["model"]["arch"] == "vit" and b["model"]["sha256"] is None
    onnx_sec = b["onnx"]
    assert onnx_sec["file"] == "model.onnx" and onnx_sec["opset"] == 17 and onnx_sec["exporter"] == "torchscript"
    assert onnx_sec["sha256"] == sha256_file(out / "model.onnx")
    assert onnx_sec["bytes"] == (out / "model.onnx").stat().st_size
    assert onnx_sec["layernorm"]["single_op"] is True and "STFT" not in onnx_sec["ops"]
    assert onnx_sec["frontend_nodes"] and all("/frontend/" in n for n in onnx_sec["frontend_nodes"])
    assert b["int8"] is None and any("INT8 skipped" in n for n in b["notes"])
    p = b["parity"]
    assert p["real"] is None and p["random"]["passed"] and p["random"]["max_abs"] <= 1e-5
    assert p["thresholds"]["atol"] == 1e-4 and "rel_floor" in p["thresholds"]
    f = b["fp16"]
    assert "float16" in f["method"] and f["fp16_max"] == 65504.0 and f["argmax_agreement"] >= 0.75
    assert f["max_abs_activation"]["frontend"]["value"] > 0 and f["max_abs_activation"]["model"]["value"] > 0
    assert f["kept_fp32"][0] == "front end" and 0 <= f["max_abs_prob_diff"] < 0.05
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json", "model.onnx"]


def _broken_copy(src: Path, dst: Path, edit=None, raw: str | None = None) -> Path:
    shutil.copytree(src, dst)
    j = dst / "bundle.json"
    if raw is not None:
        j.write_text(raw)
    elif edit is not None:
        meta = json.loads(j.read_text())
        edit(meta)
        j.write_text(json.dumps(meta))
    return dst


def _set(path: str, value):
    def edit(meta):
        node = meta
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


@pytest.mark.parametrize("name, edit, message", [
    ("format", _set("format", "something"), "field format"),
    ("version", _set("version", 2), "field version"),
    ("shape", _set("input.shape", [1, C, T]), "field input.shape"),
    ("channels", _set("input.channels", ["ax", "ay"]), "field input.channels"),
    ("window", _set("input.window", T + 1), "field input.window"),
    ("hop", _set("input.hop", 0), "field input.hop"),
    ("rate", _set("input.rate", -50), "field input.rate"),
    ("labels", _set("output.labels", []), "field output.labels"),
    ("outshape", _set("output.shape", [-1, K + 1]), "field output.shape"),
    ("mean", _set("normalization.mean", [0.0]), "field normalization.mean"),
    ("sha", _set("onnx.sha256", "0" * 64), "SHA-256 differs"),
    ("file", _set("onnx.file", "../model.onnx"), "field onnx.file"),
    ("int8", _set("int8", {"file": "model.int8.onnx", "sha256": "0" * 64, "method": "x"}), "missing"),
    ("parity", _set("parity", {}), "field parity.random"),
])
def test_read_bundle_validation_errors(vit_bundle, tmp_path, name, edit, message):
    bad = _broken_copy(vit_bundle[2], tmp_path / name, edit)
    with pytest.raises(WearspecError, match=message) as info:
        read_bundle(bad)
    assert "\n" not in str(info.value) and "bundle" in str(info.value)


def test_read_bundle_file_errors(vit_bundle, tmp_path):
    src = vit_bundle[2]
    with pytest.raises(WearspecError, match="line 1 column"):
        read_bundle(_broken_copy(src, tmp_path / "json", raw='{"format": '))
    tampered = _broken_copy(src, tmp_path / "tampered")
    with open(tampered / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(WearspecError, match="changed after export"):
        read_bundle(tampered)
    assert read_bundle(tampered, verify=False)["onnx"]["file"] == "model.onnx"
    with pytest.raises(WearspecError, match="not a wearspec deploy bundle"):
        read_bundle(tmp_path)
    assert read_bundle(src / "bundle.json")["dir"] == str(src.resolve())


def test_read_bundle_imports_without_torch(vit_bundle):
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "from wearspec.deploy.bundle import read_bundle\n"
            f"b = read_bundle({str(vit_bundle[2])!r})\n"
            "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\n"
            "print(b['input']['shape'], len(b['output']['labels']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[-1,", f"{C},", f"{T}]", str(K)]


# ---- the CLI entry point: ExportConfig + run_export --------------------------------------------------------
def test_run_export_from_checkpoint(tmp_path):
    clf, meta = make_classifier("cnn")
    ckpt = save_classifier(tmp_path / "stage" / "best.pt", clf, meta)
    out = tmp_path / "bundle"
    summary = run_export(ExportConfig(checkpoint=str(ckpt.parent), output=str(out), int8=True, parity_windows=4,
                                      fp16_check=False))
    b = read_bundle(out)
    assert summary["bundle"] == str(out) and b["model"]["sha256"] == sha256_file(ckpt)
    assert b["model"]["source_checkpoint"] == str(ckpt) and b["model"]["kind"] == "teacher"
    assert b["model"]["arch"] == "cnn" and b["int8"] is None  # INT8 needs a store
    for bad, msg in ((dict(opset=16), "opset"), (dict(exporter="onnx"), "exporter"),
                     (dict(parity_windows=0), "parity")):
        with pytest.raises(WearspecError, match=msg):
            ExportConfig(checkpoint=str(ckpt), output=str(tmp_path / "x"), **bad).validate()
    with pytest.raises(WearspecError, match="required"):
        run_export(ExportConfig())


def test_store_must_match_the_model(tmp_path, synthetic_store):
    clf, meta = make_classifier("cnn")  # 3 channels, 200 samples: the store has 6 channels, 250 samples
    with pytest.raises(WearspecError, match="channels"):
        export_classifier(clf, meta, fast(tmp_path / "b"), store=synthetic_store)
    _no_leftovers(tmp_path / "b")


# ---- INT8 on a trained model --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    cfg = PrepareConfig()
    cfg.window.hop_s = 0.5  # 5 s windows every 0.5 s: ~400 test windows from 2 held-out subjects
    cfg.synthetic = SyntheticConfig(subjects=8, minutes_per_subject=2.0, seed=0)
    store, _ = prepare("synthetic", None, tmp_path_factory.mktemp("data") / "store", cfg, progress=False)
    return store


def _train_vit(store, epochs: int = 20):
    """A tiny ViT student (no distillation) trained on the training subjects of the default split."""
    sp = make_splits(store, np.arange(len(store)), SplitConfig())[0]
    tr = sp.train[store.labels[sp.train] >= 0]
    x, y = torch.from_numpy(store.read_batch(tr)), torch.from_numpy(store.labels[tr]).long()
    fe = SpectrogramFrontend(n_fft=32, hop_length=8, power=1.0, log="log1p", channel_names=store.channels).fit(x)
    size = (fe.n_freqs, fe.n_frames(store.window))
    cfg = StudentConfig(arch="vit", distillation=False,
                        backbone=BackboneConfig(name="vit_tiny_cpu", embed_dim=32, depth=2, num_heads=2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest and does not fight other jobs
    try:
        torch.manual_seed(0)
        clf = Classifier(fe, build_student(cfg, store.n_channels, size, len(store.label_names)))
        opt = torch.optim.AdamW(clf.parameters(), lr=3e-3, weight_decay=1e-4)
        with torch.no_grad():
            spec = fe(x)
        clf.train()
        for _ in range(epochs):
            for b in torch.randperm(len(spec)).split(32):
                loss = nn.functional.cross_entropy(clf.logits_from_spec(spec[b]), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    meta = classifier_meta("student", cfg, fe.config(), store.n_channels, size, len(store.label_names),
                           store.label_names, store.channels, store.rate, store.window, store.hop)
    return clf.eval(), meta


@pytest.mark.slow
def test_int8_qdq_on_trained_model(synthetic_store, tmp_path):
    store = synthetic_store
    clf, meta = _train_vit(store)
    out = tmp_path / "int8"
    summary = export_classifier(clf, meta, ExportConfig(output=str(out), calibration_windows=256, parity_windows=32),
                                store=store)
    b = read_bundle(out)
    q8 = b["int8"]
    assert q8["file"] == "model.int8.onnx" and q8["sha256"] == sha256_file(out / "model.int8.onnx")
    assert "QDQ" in q8["method"] and q8["calibration"] == {"windows": 256, "method": "percentile"}
    model8 = onnx.load(str(out / "model.int8.onnx"))
    ops = op_counts(model8)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert check_ops(model8) == []  # symmetric (zero point 0), no INT32 bias DQ
    summary8 = qdq_summary(model8)
    assert summary8["frontend_quantized"] == [] and summary8["quantized"].get("MatMul", 0) >= 8
    dq_inputs = {o for n in model8.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    fe_nodes = [n for n in model8.graph.node if is_frontend_node(n)]
    assert fe_nodes and not any(i in dq_inputs for n in fe_nodes for i in n.input)  # front end stays float
    assert [n.op_type for n in fe_nodes].count("Conv") == 1  # the conv-DFT, unquantized
    acc = q8["accuracy"]
    assert acc["split"] == "holdout" and acc["windows"] >= 300 and acc["subjects"] == 2
    assert acc["fp32"]["macro_f1"] > 0.4  # a model worth quantizing (7 classes: chance ≈ 0.14)
    assert abs(acc["fp32"]["macro_f1"] - acc["int8"]["macro_f1"]) <= 0.01, acc
    assert acc["argmax_agreement"] >= 0.95
    # the reported FP32 figures are those of the FP32 graph on the held-out subjects
    sp = make_splits(store, np.arange(len(store)), SplitConfig())[0]
    test = sp.test[store.labels[sp.test] >= 0]
    x = store.read_batch(test)
    p32 = session(onnx.load(str(out / "model.onnx"))).run(None, {"windows": x})[0]
    assert np.mean(p32.argmax(1) == store.labels[test]) == pytest.approx(acc["fp32"]["accuracy"])
    real = b["parity"]["real"]
    assert real["passed"] and real["windows"] == 32 and real["max_abs"] <= 1e-4
    assert b["fp16"]["source"] == "store" and b["fp16"]["argmax_agreement"] >= 0.9
    assert summary["int8"]["accuracy"] == acc


@pytest.mark.slow
def test_dynamo_exporter_and_written_opset(tmp_path):
    """The dynamo exporter keeps opset 18 for the CNN (its opset-17 conversion is invalid): asking for 17 is
    refused with the opset it wrote, asking for 18 gives a checked opset-18 bundle."""
    clf, meta = make_classifier("cnn")
    with pytest.raises(WearspecError, match="dynamo: wrote opset 18 instead of 17.*ask for opset 18"):
        export_classifier(clf, meta, fast(tmp_path / "b17", exporter="dynamo", opset=17))
    _no_leftovers(tmp_path / "b17")
    summary = export_classifier(clf, meta, fast(tmp_path / "b18", exporter="dynamo", opset=18))
    b = read_bundle(tmp_path / "b18")
    assert summary["exporter"] == b["onnx"]["exporter"] == "dynamo" and b["onnx"]["opset"] == 18
    model = onnx.load(str(tmp_path / "b18" / "model.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 18 and check_ops(model) == []
    x = np.random.default_rng(0).standard_normal((3, C, T)).astype(np.float32)
    np.testing.assert_allclose(session(model).run(None, {"windows": x})[0], _probs(clf, x), atol=1e-5)


def test_calibration_reader_uses_equal_batches():
    import numpy as np

    from wearspec.deploy.quantize import WindowReader

    for n, sizes in ((141, [32] * 4), (20, [20]), (64, [32, 32])):
        r = WindowReader(np.zeros((n, 2, 8), np.float32), batch=32)
        got = []
        while (b := r.get_next()) is not None:
            got.append(len(b["windows"]))
        assert got == sizes, (n, got)


def _subjects_store(path: Path, unlabelled: bool):
    from wearspec.data.store import StoreWriter, WindowStore

    rng = np.random.default_rng(0)
    with StoreWriter(path, channels=["a"], rate=10, window=8, hop=4, label_names=["x", "y"]) as w:
        for s in range(10):
            w.add(rng.standard_normal((4, 1, 8)), f"s{s}", f"s{s}-r", np.arange(4) * 0.4, np.arange(4) % 2)
        if unlabelled:  # a subject for pretraining only
            w.add(rng.standard_normal((4, 1, 8)), "u0", "u0-r", np.arange(4) * 0.4, np.full(4, -1))
    return WindowStore(path)


def test_int8_is_scored_on_subjects_the_model_never_saw(tmp_path):
    """With the checkpoint's record: calibrate on its training subjects, score on every other labelled subject;
    without: the split over the labelled windows, so an unlabelled subject cannot move the test subjects."""
    store = _subjects_store(tmp_path / "a", unlabelled=True)

    def names(idx):
        return sorted({store.subject_names[c] for c in store.subjects[idx]})

    cal, test, how = export_mod._held_out(store, SplitConfig(), {"train": ["s0", "s1"], "val": ["s2"]})
    assert names(cal) == ["s0", "s1"] and names(test) == [f"s{i}" for i in range(3, 10)]
    assert "not trained or validated on" in how
    _, test_a, _ = export_mod._held_out(store, SplitConfig(), None)
    plain = _subjects_store(tmp_path / "b", unlabelled=False)
    _, test_b, _ = export_mod._held_out(plain, SplitConfig(), None)
    assert names(test_a) == sorted({plain.subject_names[c] for c in plain.subjects[test_b]})
    assert "u0" not in names(test_a)
