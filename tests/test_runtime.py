"""On-device runtime: bundles, ONNX Runtime backend, streaming, benchmarks, TensorRT build/run.

TensorRT needs an NVIDIA GPU: the real-TensorRT tests skip with the reason when ``tensorrt``, cuda-python or a
CUDA GPU is missing. Everything around TensorRT is tested here anyway: the engine.json compatibility check and
parser-error formatting with fake inputs, and build/run end to end against a small in-process stand-in for the
``tensorrt`` and ``cuda.bindings.runtime`` modules (it mimics the documented Python API, so it catches wiring
mistakes, not TensorRT behaviour).
"""

from __future__ import annotations

import ast
import ctypes
import io
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from wearspec.deploy.runtime import backends, bench, schema, trt
from wearspec.deploy.runtime.backends import OnnxRuntimeBackend, load_backend
from wearspec.deploy.runtime.schema import read_bundle_spec
from wearspec.deploy.runtime.sources import read_stdin, replay_csv
from wearspec.deploy.runtime.stream import StreamClassifier, StreamConfig, run_stream
from wearspec.errors import WearspecError
from wearspec.utils.io import atomic_write

RUNTIME_DIR = Path(backends.__file__).parent
C, T, HOP, K, RATE = 3, 20, 10, 4, 10.0
LABELS = ["sit", "stand", "walk", "run"]
CHANNELS = ["ax", "ay", "az"]


# ---------------------------------------------------------------------------- a hand-made bundle
def _weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.5, 1.5, T, dtype=np.float32).reshape(1, 1, T)   # makes the model order-sensitive
    w = (rng.standard_normal((C, K)) * 0.8).astype(np.float32)
    return ramp, w


def reference(x: np.ndarray) -> np.ndarray:
    """What the tiny model computes: softmax(mean_T(x * ramp) @ W)."""
    ramp, w = _weights()
    logits = (x.astype(np.float64) * ramp).mean(-1) @ w
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def make_bundle(folder: Path, int8: bool = False) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    ramp, w = _weights()
    nodes = [helper.make_node("Mul", ["windows", "ramp"], ["weighted"], name="ramp_mul"),
             helper.make_node("ReduceMean", ["weighted"], ["pooled"], axes=[2], keepdims=0, name="pool"),
             helper.make_node("MatMul", ["pooled", "W"], ["logits"], name="head"),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1, name="softmax")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["B", C, T])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["B", K])],
        initializer=[numpy_helper.from_array(ramp, "ramp"), numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    meta = {"format": "wearspec-bundle", "version": 1, "wearspec_version": "0.1.0", "created": "2026-01-01T00:00:00Z",
            "input": {"name": "windows", "shape": [-1, C, T], "dtype": "float32", "channels": CHANNELS,
                      "rate": RATE, "window": T, "hop": HOP},
            "output": {"name": "probabilities", "shape": [-1, K], "labels": LABELS},
            "normalization": {"mean": None, "std": None, "where": "none"}, "frontend": {},
            "model": {"kind": "test", "arch": "tiny", "sha256": None},
            "onnx": {"opset": 17, "file": "model.onnx", "sha256": schema.sha256_file(folder / "model.onnx"),
                     "ops": {"Mul": 1, "ReduceMean": 1, "MatMul": 1, "Softmax": 1}},
            "int8": None, "parity": {"random": {}, "real": None, "thresholds": {}}, "fp16": None}
    if int8:   # ONNX Runtime does not care whether the graph holds Q/DQ nodes: a copy stands in
        (folder / "model.int8.onnx").write_bytes((folder / "model.onnx").read_bytes())
        meta["int8"] = {"file": "model.int8.onnx", "sha256": schema.sha256_file(folder / "model.int8.onnx"),
                        "method": "copy"}
    (folder / "bundle.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def bundle(tmp_path) -> Path:
    return make_bundle(tmp_path / "bundle")


@pytest.fixture
def ort(bundle):
    with OnnxRuntimeBackend(bundle, threads=1) as be:
        yield be


def recording(n: int = 10 * T + 3, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    return (np.sin(t / 7.0 + np.arange(C)) * 2 + np.cumsum(rng.standard_normal((n, C)) * 0.3, 0)).astype(np.float32)


def batch_windows(x: np.ndarray, hop: int = HOP) -> tuple[np.ndarray, np.ndarray]:
    starts = np.arange(0, x.shape[0] - T + 1, hop)
    return np.stack([x[s:s + T].T for s in starts]), (starts + T) / RATE


def push_all(clf: StreamClassifier, x: np.ndarray, chunk: int) -> list:
    preds = []
    for s in range(0, x.shape[0], chunk):
        preds += clf.push(x[s:s + chunk])
    return preds


# ---------------------------------------------------------------------------- import hygiene
RUNTIME_MODULES = ["wearspec.deploy.runtime", "wearspec.deploy.runtime.schema", "wearspec.deploy.runtime.base",
                   "wearspec.deploy.runtime.backends", "wearspec.deploy.runtime.trt", "wearspec.deploy.runtime.bench",
                   "wearspec.deploy.runtime.stream", "wearspec.deploy.runtime.sources",
                   "wearspec.deploy.bundle", "wearspec.utils.io"]


def test_runtime_imports_and_runs_without_torch(bundle):
    code = f"""
import sys
sys.modules['torch'] = None
sys.modules['timm'] = None
import importlib
for name in {RUNTIME_MODULES!r}:
    importlib.import_module(name)
from wearspec.deploy.runtime.stream import run_stream
import io
x = __import__('numpy').random.default_rng(0).standard_normal(({5 * T}, {C})).astype('float32')
out = io.StringIO()
run_stream({str(bundle)!r}, [x], out=out, err=io.StringIO())
assert len(out.getvalue().splitlines()) > 1
print('ok')
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_runtime_imports_are_lazy():
    code = f"""
import sys, importlib
for name in {RUNTIME_MODULES!r}:
    importlib.import_module(name)
heavy = [m for m in ('torch', 'timm', 'onnx', 'onnxruntime', 'tensorrt', 'cuda') if m in sys.modules]
print(heavy)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_runtime_sources_are_python310_and_import_only_allowed_modules():
    allowed = {"numpy", "onnxruntime", "tensorrt", "cuda", "wearspec"} | set(sys.stdlib_module_names)
    for path in sorted(RUNTIME_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
                if name.startswith("wearspec."):   # only modules that import no torch
                    assert name in ("wearspec.errors", "wearspec.utils.io", "wearspec.utils.integrity") or \
                        name.startswith("wearspec.deploy.runtime"), name
        assert "tomllib" not in path.read_text() and "typing import Self" not in path.read_text()
        assert len(path.read_text().splitlines()) <= 500, f"{path.name} is longer than 500 lines"


# ---------------------------------------------------------------------------- bundle + ONNX Runtime backend
def test_bundle_spec(bundle):
    spec = read_bundle_spec(bundle)
    assert spec.channels == tuple(CHANNELS) and spec.input_shape == (C, T)
    assert (spec.window, spec.hop, spec.rate, spec.labels) == (T, HOP, RATE, tuple(LABELS))
    assert spec.int8_file is None and read_bundle_spec(bundle / "bundle.json").path == bundle


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m["input"].update(shape=[5, C, T]), "input.shape"),
    (lambda m: m["input"].update(hop=0), "input.hop"),
    (lambda m: m["output"].update(labels=[]), "output.labels"),
    (lambda m: m.update(format="other"), "format"),
    (lambda m: m["onnx"].update(file="missing.onnx"), "missing.onnx"),
])
def test_bundle_spec_errors_name_the_field(bundle, edit, fragment):
    meta = json.loads((bundle / "bundle.json").read_text())
    edit(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(WearspecError) as info:
        read_bundle_spec(bundle)
    msg = str(info.value)
    assert fragment in msg and ("bundle.json" in msg or "onnx.file" in msg) and "\n" not in msg


def test_ort_backend_matches_reference(ort):
    x = recording()[:2 * T].reshape(2, T, C).transpose(0, 2, 1)
    probs = ort.infer(x)
    assert probs.shape == (2, K) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, reference(x), atol=1e-5)
    np.testing.assert_allclose(ort.infer(x[0]), probs[:1], atol=1e-6)   # one (C, T) window
    assert ort.labels == tuple(LABELS) and ort.input_shape == (C, T)
    assert ort.describe()["backend"] == "onnxruntime"
    with pytest.raises(WearspecError, match=r"\(B, 3, 20\)"):
        ort.infer(np.zeros((2, C, T + 1), np.float32))


def test_ort_backend_precisions_and_checksums(tmp_path, bundle):
    with pytest.raises(WearspecError, match="TensorRT precision"):
        OnnxRuntimeBackend(bundle, precision="fp16")
    with pytest.raises(WearspecError, match="no INT8 model"):
        OnnxRuntimeBackend(bundle, precision="int8")
    b8 = make_bundle(tmp_path / "b8", int8=True)
    assert OnnxRuntimeBackend(b8, precision="int8").model_file.name == "model.int8.onnx"
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(WearspecError, match="does not match"):
        OnnxRuntimeBackend(bundle)


def test_load_backend(bundle):
    assert isinstance(load_backend(bundle), OnnxRuntimeBackend)
    with pytest.raises(WearspecError, match="unknown backend"):
        load_backend(bundle, "openvino")
    with pytest.raises(WearspecError, match="wearspec engine build"):
        load_backend(bundle, "tensorrt", precision="fp16")


# ---------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("chunk", [1, 7, HOP, 3 * T])
def test_stream_equals_batch_inference(ort, chunk):
    x = recording()
    windows, ends = batch_windows(x)
    expected = ort.infer(windows)
    clf = StreamClassifier(ort)
    preds = push_all(clf, x, chunk)
    assert len(preds) == len(windows)
    np.testing.assert_allclose(np.stack([p.probabilities for p in preds]), expected, atol=1e-5)
    np.testing.assert_allclose([p.time_s for p in preds], ends)
    assert [p.label for p in preds] == [LABELS[i] for i in expected.argmax(1)]
    assert all(p.probability == pytest.approx(p.probabilities.max()) for p in preds)
    assert len({p.label for p in preds}) > 1   # the recording is not trivially one class


def test_stream_needs_a_full_window_and_single_samples(ort):
    clf = StreamClassifier(ort, hop=5)
    x = recording(T + 5)
    assert [len(clf.push(x[i])) for i in range(T - 1)] == [0] * (T - 1)   # (C,) samples
    assert len(clf.push(x[T - 1])) == 1
    assert len(clf.push(x[T:T + 5])) == 1


def test_stream_smoothing_is_a_moving_average(ort):
    x = recording()
    raw = np.stack([p.probabilities for p in push_all(StreamClassifier(ort), x, 7)])
    smooth = push_all(StreamClassifier(ort, smoothing=3), x, 7)
    for i, p in enumerate(smooth):
        np.testing.assert_allclose(p.probabilities, raw[max(0, i - 2):i + 1].mean(0), atol=1e-6)
        assert p.label == LABELS[int(raw[max(0, i - 2):i + 1].mean(0).argmax())]


def _with_nans(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[3, 0] = np.nan            # before any valid value? no: row 0 is valid; a single missing sample
    x[25:29, 1] = np.nan        # a short run
    x[58:61, :] = np.inf        # all channels
    x[0, 2] = np.nan            # the very first sample of a channel
    return x


def _ffill(x: np.ndarray) -> np.ndarray:
    out, last = x.copy(), np.zeros(x.shape[1], np.float32)
    for i in range(len(out)):
        bad = ~np.isfinite(out[i])
        out[i, bad] = last[bad]
        last = out[i].copy()
    return out


def _interp_window(w: np.ndarray) -> np.ndarray:   # w: (C, T)
    w = w.copy()
    t = np.arange(w.shape[1])
    for c in range(w.shape[0]):
        ok = np.isfinite(w[c])
        w[c] = np.interp(t, t[ok], w[c, ok]) if ok.any() else 0.0
    return w


@pytest.mark.parametrize("policy", ["hold", "zero", "interpolate"])
def test_stream_nan_policies(ort, policy):
    x = _with_nans(recording())
    if policy == "hold":
        windows, _ = batch_windows(_ffill(x))
    elif policy == "zero":
        windows, _ = batch_windows(np.where(np.isfinite(x), x, 0).astype(np.float32))
    else:
        windows = np.stack([_interp_window(w) for w in batch_windows(x)[0]])
    preds = push_all(StreamClassifier(ort, nan_policy=policy), x, 7)
    assert len(preds) == len(windows)
    np.testing.assert_allclose(np.stack([p.probabilities for p in preds]), ort.infer(windows), atol=1e-5)
    raw, _ = batch_windows(x)
    np.testing.assert_allclose([p.nan_fraction for p in preds], (~np.isfinite(raw)).any(1).mean(1))


def test_stream_skip_policy_drops_windows_with_too_many_nans(ort):
    x = recording()
    x[40:50, 0] = np.nan      # 10 of 20 samples: 50 % of windows starting at 30, 40; 0 < frac elsewhere
    x[75, 1] = np.nan         # 5 %: kept, interpolated
    clf = StreamClassifier(ort, nan_policy="skip", max_nan_fraction=0.25)
    preds = push_all(clf, x, HOP)
    windows, ends = batch_windows(x)
    frac = (~np.isfinite(windows)).any(1).mean(1)
    keep = frac <= 0.25
    assert clf.skipped == int((~keep).sum()) > 0 and len(preds) == int(keep.sum())
    np.testing.assert_allclose([p.time_s for p in preds], ends[keep])
    expected = ort.infer(np.stack([_interp_window(w) for w in windows[keep]]))
    np.testing.assert_allclose(np.stack([p.probabilities for p in preds]), expected, atol=1e-5)


def test_stream_timestamp_gaps_reset_the_buffer(ort):
    x = recording(6 * T)
    clf = StreamClassifier(ort, max_gap_s=1.0)
    first = clf.push(x[:2 * T], t0=100.0)            # 20 s .. 24 s at 10 Hz → windows end at 102, 103, 104
    assert [p.time_s for p in first] == pytest.approx([102.0, 103.0, 104.0])
    jitter = clf.push(x[2 * T:2 * T + HOP], t0=104.3)   # 0.3 s late: below max_gap_s, no reset
    assert clf.resets == 0 and len(jitter) == 1
    after = clf.push(x[3 * T:3 * T + T - 1], t0=200.0)  # a gap: start again, one sample short of a window
    assert clf.resets == 1 and after == []
    nxt = clf.push(x[4 * T - 1:4 * T], t0=201.9)
    assert len(nxt) == 1 and nxt[0].time_s == pytest.approx(202.0)
    np.testing.assert_allclose(nxt[0].probabilities, ort.infer(x[3 * T:4 * T].T)[0], atol=1e-5)
    back = clf.push(x[:5], t0=150.0)                   # a jump backwards also resets
    assert clf.resets == 2 and back == []
    no_reset = StreamClassifier(ort)                    # without max_gap_s timestamps only label the output
    no_reset.push(x[:T], t0=0.0)
    assert len(no_reset.push(x[T:T + HOP], t0=500.0)) == 1 and no_reset.resets == 0


def test_stream_latency_stats_and_validation(ort):
    clf = StreamClassifier(ort)
    push_all(clf, recording(), 3 * T)
    stats = clf.latency_stats()
    for key in ("p50_ms", "p99_ms", "mean_ms", "max_ms", "calls", "predictions", "skipped", "resets"):
        assert key in stats
    assert stats["calls"] >= 1 and stats["predictions"] == len(batch_windows(recording())[0])
    assert 0 <= stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert np.isnan(StreamClassifier(ort).latency_stats()["p50_ms"])
    with pytest.raises(WearspecError, match="nan_policy"):
        StreamClassifier(ort, nan_policy="drop")
    with pytest.raises(WearspecError, match="20 samples"):
        StreamClassifier(ort, window=30)
    with pytest.raises(WearspecError, match=r"\(n, 3\)"):
        clf.push(np.zeros((4, 2)))


# ---------------------------------------------------------------------------- sources and run_stream
def _write_csv(path: Path, x: np.ndarray, times: np.ndarray | None = None) -> Path:
    lines = ["time_s,az,extra,ax,ay"]
    for i, row in enumerate(x):
        t = times[i] if times is not None else i / RATE
        cells = ["" if not np.isfinite(v) else repr(float(v)) for v in row]
        lines.append(f"{t},{cells[2]},0,{cells[0]},{cells[1]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_stream_prints_one_csv_line_per_prediction(tmp_path, bundle, ort):
    x = recording()
    src = _write_csv(tmp_path / "rec.csv", x)
    out, err = io.StringIO(), io.StringIO()
    stats = run_stream(bundle, src, out=out, err=err)
    lines = out.getvalue().splitlines()
    assert lines[0] == "time_s,label,probability"
    expected = push_all(StreamClassifier(ort), x, HOP)
    assert len(lines) == 1 + len(expected) == 1 + stats["predictions"]
    for line, p in zip(lines[1:], expected):
        t, label, prob = line.split(",")
        assert float(t) == pytest.approx(p.time_s) and label == p.label
        assert float(prob) == pytest.approx(p.probability, abs=1e-4)
    assert "latency ms p50" in err.getvalue() and "predictions" in err.getvalue()


def test_run_stream_sources(tmp_path, bundle, ort):
    x = recording()
    n_expected = len(batch_windows(x)[0])
    np.save(tmp_path / "rec.npy", x)
    out = io.StringIO()
    run_stream(bundle, tmp_path / "rec.npy", StreamConfig(chunk=7, header=False), out=out, err=io.StringIO())
    assert len(out.getvalue().splitlines()) == n_expected
    out = io.StringIO()   # a Python iterator of chunks, and an opened backend
    run_stream(bundle, (x[s:s + 13] for s in range(0, len(x), 13)), backend=ort, out=out, err=io.StringIO())
    assert len(out.getvalue().splitlines()) == 1 + n_expected
    text = "\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n"   # stdin: headerless lines
    chunks = list(read_stdin(n_channels=C, chunk=1, stream=io.StringIO(text)))
    assert len(chunks) == len(x) and chunks[0][0].shape == (1, C)
    preds = list(StreamClassifier(ort).run(chunks))
    assert len(preds) == n_expected


def test_replay_csv_gaps_missing_values_and_errors(tmp_path, bundle):
    x = recording(6 * T)
    x[5, 1] = np.nan
    times = np.arange(len(x)) / RATE
    times[3 * T:] += 30.0                                   # a 30 s hole in the recording
    src = _write_csv(tmp_path / "gap.csv", x, times)
    chunks = list(replay_csv(src, channels=CHANNELS, rate=RATE, chunk=HOP, time_column="auto"))
    assert chunks[0][0].shape == (HOP, C) and np.isnan(chunks[0][0][5, 1])
    np.testing.assert_allclose(chunks[0][0][0], x[0], rtol=1e-6)       # columns re-ordered to the bundle's
    assert any(t0 == pytest.approx(3 * T / RATE + 30.0) for _, t0 in chunks)
    out = io.StringIO()
    stats = run_stream(bundle, src, StreamConfig(max_gap_s=2.0), out=out, err=io.StringIO())
    assert stats["resets"] == 1
    assert stats["predictions"] == 2 * len(batch_windows(x[:3 * T])[0])
    bad = tmp_path / "bad.csv"
    bad.write_text("ax,ay,az\n1,2,3\n1,oops,3\n")
    with pytest.raises(WearspecError, match=r"bad.csv, line 3: ay: expected a number, got 'oops'"):
        list(replay_csv(bad, channels=CHANNELS))
    with pytest.raises(WearspecError, match=r"channels \['az'\] not found"):
        bad.write_text("ax,ay,gz\n1,2,3\n")
        list(replay_csv(bad, channels=CHANNELS))


# ---------------------------------------------------------------------------- benchmark
class _FakeBackend:
    input_shape, labels, max_batch = (C, T), tuple(LABELS), 8

    def infer(self, x):
        return np.full((len(x), K), 1.0 / K, np.float32)

    def describe(self):
        return {"backend": "fake", "precision": "fp32"}


def test_benchmark_rows_and_table(ort):
    rows = bench.benchmark(ort, batch_sizes=(1, 4), warmup=2, iterations=5)
    assert [r["batch"] for r in rows] == [1, 4]
    for r in rows:
        assert r["iterations"] >= 5 and r["backend"] == "onnxruntime" and r["throughput"] > 0
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        for key in ("mean_ms", "min_ms", "total_s", "precision", "warmup"):
            assert key in r
    table = bench.format_table(rows).splitlines()
    assert table[0].startswith("onnxruntime fp32")
    assert "p99 ms" in table[1] and "windows/s" in table[1] and len(table) == 3 + len(rows)
    timed = bench.benchmark(_FakeBackend(), batch_sizes=(2,), warmup=0, iterations=1, duration_s=0.05)
    assert timed[0]["total_s"] >= 0.05 and timed[0]["iterations"] > 1
    with pytest.raises(WearspecError, match="profile maximum 8"):
        bench.benchmark(_FakeBackend(), batch_sizes=(16,))


# ---------------------------------------------------------------------------- TensorRT-independent logic
ENV = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}


def test_engine_compatibility_check():
    trt.check_engine_compatible(dict(ENV, format=trt.ENGINE_FORMAT), ENV, "m.engine")
    for key, value in (("tensorrt", "10.7.0"), ("gpu", "NVIDIA H100 80GB HBM3"), ("compute_capability", "9.0")):
        with pytest.raises(WearspecError) as info:
            trt.check_engine_compatible(ENV, dict(ENV, **{key: value}), "b/model.fp16.engine")
        msg = str(info.value)
        assert "built for TensorRT 10.3.0 on Orin (compute capability 8.7)" in msg and value in msg
        assert "rebuild it on this device with `wearspec engine build`" in msg and "\n" not in msg
    with pytest.raises(WearspecError, match="lacks"):
        trt.check_engine_compatible({"tensorrt": "10.3.0"}, ENV, "m.engine")


class _Code10:
    """An ErrorCode as TensorRT 10's bindings give it: ``name`` is a method."""

    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


class _ParserError:
    def __init__(self, node, desc, code, name=None, op=None):
        code = types.SimpleNamespace(name=code) if isinstance(code, str) else code
        self._v = dict(node=node, desc=desc, code=code)
        if name is not None:            # TensorRT >= 10 has node_name()/node_operator()
            self.node_name = lambda: name
            self.node_operator = lambda: op

    def node(self):
        return self._v["node"]

    def desc(self):
        return self._v["desc"]

    def code(self):
        return self._v["code"]


def test_parser_errors_are_reported_by_node():
    errors = [_ParserError(12, "No importer registered for op: STFT", "UNSUPPORTED_NODE", "/front/stft", "STFT"),
              _ParserError(40, "Assertion failed:\n  shape", "INVALID_NODE", "/blocks.0/attn/Reshape", "Reshape"),
              _ParserError(-1, "graph has no outputs", "INVALID_GRAPH"),
              _ParserError(7, "old parser", "UNSUPPORTED_NODE"),
              _ParserError(9, "bad attribute", _Code10("INVALID_VALUE"), "/conv", "Conv")]
    msg = trt.format_parser_errors(errors, "b/model.onnx", "10.3.0")
    assert "\n" not in msg and msg.startswith("b/model.onnx: TensorRT 10.3.0 could not parse the ONNX model (5 error(s))")
    assert "[5] node 9 '/conv' (Conv): bad attribute [INVALID_VALUE]" in msg and "bound method" not in msg
    assert "[1] node 12 '/front/stft' (STFT): No importer registered for op: STFT [UNSUPPORTED_NODE]" in msg
    assert "[2] node 40 '/blocks.0/attn/Reshape' (Reshape): Assertion failed: shape [INVALID_NODE]" in msg
    assert "[3] graph: graph has no outputs [INVALID_GRAPH]" in msg and "[4] node 7: old parser" in msg
    assert "Conv1d DFT front end" in msg


def test_build_helpers():
    assert trt.trt_major("10.3.0") == 10 and trt.trt_major("11.4.1.post1") == 11
    assert trt.engine_meta_path("b/model.fp16.engine") == Path("b/model.fp16.engine.json")
    for layer_type, name, keep in (("NORMALIZATION", "x", True), ("ELEMENTWISE", "/blocks.0/norm1/LayerNorm_Pow", True),
                                   ("REDUCE", "/norm/ReduceMean", True), ("MATRIX_MULTIPLY", "/head/MatMul", False)):
        assert trt.should_keep_fp32(layer_type, name) is keep
    trt.check_profile(1, 8, 32)
    for bad in ((0, 1, 2), (4, 2, 8), (1, 8, 4)):
        with pytest.raises(WearspecError, match="batch profile"):
            trt.check_profile(*bad)
    trt.check_profile(4, 4, 4, dla=True)
    with pytest.raises(WearspecError, match="DLA needs a static batch"):
        trt.check_profile(1, 8, 32, dla=True)
    trt.check_precision_source("fp16", 10, False, False)
    trt.check_precision_source("fp16", 11, True, False)
    with pytest.raises(WearspecError, match="modelopt.onnx.autocast"):
        trt.check_precision_source("fp16", 11, False, False)
    with pytest.raises(WearspecError, match="Q/DQ"):
        trt.check_precision_source("int8", 10, False, False)


def test_atomic_write_and_engine_meta(tmp_path):
    target = tmp_path / "m.engine"
    atomic_write(target, bytearray(b"abc"))
    assert target.read_bytes() == b"abc" and [p.name for p in tmp_path.iterdir()] == ["m.engine"]
    with pytest.raises(WearspecError, match="m.engine.json: missing"):
        trt.read_engine_meta(target)
    trt.engine_meta_path(target).write_text("{}")
    with pytest.raises(WearspecError, match="not a wearspec engine"):
        trt.read_engine_meta(target)


# ---------------------------------------------------------------------------- TensorRT wiring, against a stand-in
class _Flag:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __int__(self):
        return self.value


def fake_tensorrt(version: str = "10.3.0", layers=(("NORMALIZATION", "/norm/LayerNormalization"),
                                                   ("REDUCE", "/pool/ReduceMean"), ("MATRIX_MULTIPLY", "head")),
                  parse_ok: bool = True):
    """A stand-in for the parts of the tensorrt Python API that trt.py uses (10.x or 11.x)."""
    m = types.ModuleType("tensorrt")
    m.__version__ = version
    m.float32, m.float16 = "float32", "float16"
    m.nptype = lambda d: {"float32": np.float32, "float16": np.float16}[d]
    eleven = int(version.split(".")[0]) >= 11
    flags = ["TF32", "GPU_FALLBACK"] + ([] if eleven else ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"])
    m.BuilderFlag = types.SimpleNamespace(**{f: _Flag(f, i) for i, f in enumerate(flags)})
    m.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=_Flag("STRONGLY_TYPED", 1 if not eleven else 0))
    m.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    m.DeviceType = types.SimpleNamespace(DLA="DLA", GPU="GPU")
    m.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    m.log = {}

    class Logger:
        WARNING, VERBOSE = "W", "V"

        def __init__(self, level):
            self.level = level

    class Tensor:
        def __init__(self, name, shape=(), dtype="float32"):
            self.name, self.shape, self.dtype = name, shape, dtype

    class Layer:
        def __init__(self, kind, name):
            self.type, self.name, self.num_outputs = types.SimpleNamespace(name=kind), name, 1
            self.precision, self.outputs = None, [Tensor(name + ":0")]

        def get_output(self, j):
            return self.outputs[j]

        def set_output_type(self, j, dtype):
            self.outputs[j].dtype = dtype

    class Network:
        def __init__(self, flags):
            m.log["network_flags"] = flags
            self.num_inputs, self.layers = 1, [Layer(*spec) for spec in layers]
            self.num_layers = len(self.layers)
            m.log["layers"] = self.layers

        def get_input(self, i):
            return Tensor("windows", (-1, C, T))

        def get_layer(self, i):
            return self.layers[i]

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = 0 if parse_ok else 1

        def parse(self, data, path=None):
            assert isinstance(data, bytes) and path
            return parse_ok

        def get_error(self, i):
            return _ParserError(3, "No importer registered for op: DFT", "UNSUPPORTED_NODE", "/spec/dft", "DFT")

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return bytearray(self.data + b"+timing")

    class Config:
        def __init__(self):
            self.flags, self.profiles = {"TF32"}, []  # TF32 is on by default
            m.log["config"] = self

        def set_memory_pool_limit(self, pool, size):
            self.workspace = (pool, size)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def set_flag(self, flag):
            self.flags.add(flag.name)

        def clear_flag(self, flag):
            self.flags.discard(flag.name)

        def create_timing_cache(self, data):
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = {name: (tuple(lo), tuple(opt), tuple(hi))}

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            lo, opt, hi = config.profiles[0].shapes["windows"]
            return bytearray(json.dumps({"min": lo, "max": hi}).encode())

    class Context:
        def __init__(self, engine):
            self.engine, self.addr, self.shape = engine, {}, None

        def set_input_shape(self, name, shape):
            ok = name == "windows" and self.engine.spec["min"][0] <= shape[0] <= self.engine.spec["max"][0]
            self.shape = tuple(shape) if ok else self.shape
            return ok

        def get_tensor_shape(self, name):
            return self.shape if name == "windows" else (self.shape[0], K)

        def set_tensor_address(self, name, ptr):
            assert isinstance(ptr, int)
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            assert isinstance(stream_handle, int)
            n = int(np.prod(self.shape))
            x = np.frombuffer((ctypes.c_char * (4 * n)).from_address(self.addr["windows"]), np.float32)
            y = np.ascontiguousarray(reference(x.reshape(self.shape)))
            ctypes.memmove(self.addr["probabilities"], y.ctypes.data, y.nbytes)
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self, spec):
            self.spec = spec

        def get_tensor_name(self, i):
            return ["windows", "probabilities"][i]

        def get_tensor_mode(self, name):
            return "INPUT" if name == "windows" else "OUTPUT"

        def get_tensor_shape(self, name):
            return (-1, C, T) if name == "windows" else (-1, K)

        def get_tensor_profile_shape(self, name, profile):
            return tuple(self.spec["min"]), tuple(self.spec["min"]), tuple(self.spec["max"])

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(json.loads(bytes(data)))

    for cls in (Logger, Builder, Runtime):
        setattr(m, cls.__name__, cls)
    m.OnnxParser = Parser
    return m


def fake_cudart():
    m = types.ModuleType("cuda.bindings.runtime")
    ok = types.SimpleNamespace(name="cudaSuccess")
    m.cudaError_t = types.SimpleNamespace(cudaSuccess=ok)
    m.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    m.memory = {}

    class Stream:
        def __int__(self):
            return 1234

    def malloc(n):
        buf = ctypes.create_string_buffer(n)
        m.memory[ctypes.addressof(buf)] = buf
        return ok, ctypes.addressof(buf)

    m.cudaMalloc = malloc
    m.cudaFree = lambda p: (m.memory.pop(p), ok)[1:]
    m.cudaMemcpyAsync = lambda dst, src, n, kind, s: (ctypes.memmove(int(dst), int(src), n), (ok,))[1]
    m.cudaStreamCreate = lambda: (ok, Stream())
    m.cudaStreamDestroy = m.cudaStreamSynchronize = lambda s: (ok,)
    m.cudaSetDevice = lambda d: (ok,)
    m.cudaGetDeviceCount = lambda: (ok, 1)
    m.cudaGetErrorString = lambda e: (ok, b"fake")
    m.cudaGetDeviceProperties = lambda d: (ok, types.SimpleNamespace(name=b"Fake GPU\x00\x00", major=8, minor=7))
    return m


@pytest.fixture
def fake_trt(monkeypatch):
    def install(version="10.3.0", **kwargs):
        mod = fake_tensorrt(version, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", mod)
        return mod
    cudart = fake_cudart()
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    for name, mod in (("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", cudart)):
        monkeypatch.setitem(sys.modules, name, mod)
    return install


def test_build_and_run_engine_wiring_trt10(fake_trt, bundle, ort):
    fake = fake_trt("10.3.0")
    assert trt.tensorrt_unavailable_reason() is None
    meta = trt.build_engine_from_bundle(bundle, precision="fp16", max_batch=16)
    engine = bundle / "model.fp16.engine"
    assert engine.is_file() and (bundle / "timing.cache").read_bytes() == b"+timing"
    assert json.loads(trt.engine_meta_path(engine).read_text()) == meta
    assert (meta["tensorrt"], meta["gpu"], meta["compute_capability"], meta["precision"]) == \
        ("10.3.0", "Fake GPU", "8.7", "fp16")
    assert meta["profile"] == {"input": "windows", "min": [1, C, T], "opt": [8, C, T], "max": [16, C, T]}
    assert meta["fp32_layers"] == ["/norm/LayerNormalization", "/pool/ReduceMean"]
    assert meta["bundle_sha256"] == read_bundle_spec(bundle).onnx_sha256 and meta["input"]["channels"] == CHANNELS
    config = fake.log["config"]
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= config.flags and "INT8" not in config.flags
    assert fake.log["network_flags"] == 0 and config.workspace == ("WORKSPACE", 1024 << 20)
    assert [layer.precision for layer in fake.log["layers"]] == ["float32", "float32", None]
    assert not [p for p in bundle.iterdir() if ".tmp-" in p.name]

    be = load_backend(bundle, "tensorrt", precision="fp16")
    assert (be.min_batch, be.max_batch, be.labels) == (1, 16, tuple(LABELS))
    x = np.stack(batch_windows(recording(40 * T))[0][:37])         # 37 windows: split into 16 + 16 + 5
    np.testing.assert_allclose(be.infer(x), ort.infer(x), atol=1e-5)
    preds = push_all(StreamClassifier(be), recording(), 7)
    assert len(preds) == len(batch_windows(recording())[0])
    assert bench.benchmark(be, batch_sizes=(1, 16), warmup=1, iterations=2)[1]["batch"] == 16
    be.close()
    be.close()

    fake.__version__ = "10.7.0"                                      # a TensorRT upgrade on the device
    with pytest.raises(WearspecError, match=r"built for TensorRT 10.3.0 on Fake GPU .* this device has TensorRT "
                                            r"10.7.0 .* rebuild it on this device"):
        load_backend(bundle, "tensorrt", precision="fp16")


def test_build_engine_wiring_trt11_and_errors(fake_trt, bundle):
    fake = fake_trt("11.4.1")
    with pytest.raises(WearspecError, match="no FP16 tensors"):
        trt.build_engine_from_bundle(bundle, precision="fp16")
    meta = trt.build_engine_from_bundle(bundle, precision="fp32")
    assert meta["strongly_typed"] and meta["fp32_layers"] == [] and fake.log["network_flags"] == 1 << 0
    assert fake.log["config"].flags == set()  # no precision flags, and TF32 (on by default) cleared for fp32
    with pytest.raises(WearspecError, match="no INT8 model"):
        trt.build_engine_from_bundle(bundle, precision="int8")
    fake_trt("10.3.0", parse_ok=False)
    with pytest.raises(WearspecError) as info:
        trt.build_engine_from_bundle(bundle, precision="fp16")
    assert "node 3 '/spec/dft' (DFT)" in str(info.value) and not (bundle / "model.fp16.engine").exists()
    fake_trt("10.3.0")
    b8 = make_bundle(bundle.parent / "b8", int8=True)
    with pytest.raises(WearspecError, match="Q/DQ"):
        trt.build_engine_from_bundle(b8, precision="int8")
    fake_trt("10.3.0", layers=(("QUANTIZE", "q"), ("DEQUANTIZE", "dq"), ("NORMALIZATION", "ln")))
    trt.build_engine_from_bundle(b8, precision="int8", min_batch=2, opt_batch=2, max_batch=4)
    assert {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} <= sys.modules["tensorrt"].log["config"].flags


def test_engine_wiring_details(fake_trt, bundle, monkeypatch, capsys):
    """The CLI's default precision, one logger per process, DLA, one output, and a driver too old for cuda-python."""
    from wearspec.cli import main

    fake = fake_trt("10.3.0")
    assert main(["engine", "build", str(bundle), "--max-batch", "8"]) == 0  # no --precision: fp16
    assert json.loads(capsys.readouterr().out)["precision"] == "fp16" and (bundle / "model.fp16.engine").is_file()
    loggers = []
    monkeypatch.setattr(fake.Builder, "__init__", lambda self, logger: loggers.append(logger))
    monkeypatch.setattr(fake.Runtime, "__init__", lambda self, logger: loggers.append(logger))
    trt.build_engine_from_bundle(bundle, precision="fp32", max_batch=8, verbose=True)
    assert loggers[-1].min_severity == fake.Logger.VERBOSE
    load_backend(bundle, "tensorrt", precision="fp32").close()
    assert len({id(lg) for lg in loggers}) == 1 and loggers[-1].min_severity == fake.Logger.WARNING
    assert "TF32" not in fake.log["config"].flags                    # fp32 means IEEE FP32 on 10.x too
    meta = trt.build_engine_from_bundle(bundle, precision="fp16", min_batch=4, opt_batch=4, max_batch=4, dla_core=1)
    config = fake.log["config"]
    assert (config.default_device_type, config.DLA_core, meta["dla_core"]) == ("DLA", 1, 1)
    assert "GPU_FALLBACK" in config.flags

    deserialize = fake.Runtime.deserialize_cuda_engine

    def two_outputs(self, data):
        engine = deserialize(self, data)
        engine.num_io_tensors = 3
        engine.get_tensor_name = lambda i: ["windows", "probabilities", "logits"][i]
        return engine

    monkeypatch.setattr(fake.Runtime, "deserialize_cuda_engine", two_outputs)
    with pytest.raises(WearspecError, match=r"expected one input and one output .* \['probabilities', 'logits'\]"):
        load_backend(bundle, "tensorrt", precision="fp16")
    cudart = sys.modules["cuda.bindings.runtime"]
    monkeypatch.setattr(cudart, "cudaGetDeviceCount",
                        lambda: (types.SimpleNamespace(name="cudaErrorInsufficientDriver"), 0))
    assert "cudaErrorInsufficientDriver" in trt.tensorrt_unavailable_reason()


# ---------------------------------------------------------------------------- real TensorRT (GPU only)
def _require_tensorrt():
    reason = trt.tensorrt_unavailable_reason()
    if reason:
        pytest.skip(f"TensorRT engine tests need TensorRT, cuda-python and a CUDA GPU: {reason}")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_build_and_run(bundle, ort, precision):
    _require_tensorrt()
    import tensorrt

    if precision == "fp16" and trt.trt_major(tensorrt.__version__) >= 11:
        pytest.skip("TensorRT 11 needs an FP16 ONNX for fp16 (strongly typed)")
    meta = trt.build_engine_from_bundle(bundle, precision=precision, max_batch=8)
    assert meta["tensorrt"] == tensorrt.__version__
    with load_backend(bundle, "tensorrt", precision=precision) as be:
        x = batch_windows(recording())[0]
        np.testing.assert_allclose(be.infer(x), ort.infer(x), atol=1e-4 if precision == "fp32" else 5e-3)


@pytest.mark.gpu
def test_tensorrt_refuses_engine_from_another_version(bundle):
    _require_tensorrt()
    trt.build_engine_from_bundle(bundle, precision="fp32", max_batch=4)
    meta_path = trt.engine_meta_path(bundle / "model.fp32.engine")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(dict(meta, tensorrt="9.9.9")))
    with pytest.raises(WearspecError, match="built for TensorRT 9.9.9"):
        load_backend(bundle, "tensorrt", precision="fp32")


def test_front_end_and_layernorm_layers_are_pinned_to_fp32():
    from types import SimpleNamespace

    from wearspec.deploy.runtime.trt import _pin_fp32

    class Out:
        def __init__(self, dtype):
            self.dtype = dtype

    class Layer:
        def __init__(self, name, type_, dtype="f32"):
            self.name, self.type, self.num_outputs, self._out = name, SimpleNamespace(name=type_), 1, Out(dtype)
            self.precision, self.out_types = None, {}

        def get_output(self, j):
            return self._out

        def set_output_type(self, j, t):
            self.out_types[j] = t

    trt = SimpleNamespace(float32="f32", float16="f16")
    layers = [Layer("/frontend/Conv", "CONVOLUTION"), Layer("/model/blocks.0/attn/MatMul", "MATRIX_MULTIPLY"),
              Layer("/model/norm/LayerNormalization", "NORMALIZATION"), Layer("/frontend/Shape", "SHAPE", "i64"),
              Layer("/frontend/Log_output_0_DequantizeLinear", "DEQUANTIZE"), Layer("/frontend/Cast", "CAST")]
    net = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    pinned = _pin_fp32(trt, net, ["/frontend/"])
    # Q/DQ nodes take the name of the tensor they quantize, so a prefix can match them: they and casts stay
    assert pinned == ["/frontend/Conv", "/model/norm/LayerNormalization"]
    assert layers[0].precision == "f32" and layers[1].precision is None and layers[3].precision is None
    assert layers[4].precision is None and layers[5].precision is None
