"""``wearspec export``: a fine-tuned classifier → a deploy bundle that takes raw windows.

:class:`InferenceModule` is what goes into the graph: windows (B, C, T) float32 → front end (conv-DFT STFT,
|X|, mel, log, per-channel normalisation) → model → heads fused → softmax → probabilities (B, K). Steps of
:func:`export_classifier` (every gate fails with a :class:`WearspecError` carrying the failing figure, and
then no bundle is written):

1. **ONNX export** at ``opset`` (17: LayerNorm as one ``LayerNormalization`` op) with only the batch axis
   dynamic. The TorchScript exporter (``dynamo=False``) is tried first: it writes opset 17 for every model
   family (ViT, Swin, SepTr, CNN) in torch 2.14. The dynamo exporter is the fallback; it may silently keep
   opset 18 (timm's Swin), so the written opset is always checked and down-converted or refused.
2. **onnxslim** (constant folding; removes the constant ScatterND/mask ops of Swin's export), then
   ``onnx.checker.check_model(full_check=True)``, strict shape inference, and the I/O check: input
   ``windows`` [batch, C, T], output ``probabilities`` [batch, K], nothing else dynamic.
3. **Op-set gate** (:mod:`wearspec.deploy.opset`): every op in TensorRT 10.3's parser, no STFT/DFT/Loop/If/
   ScatterND/NonZero, LayerNorm kept as one op.
4. **Parity gate**: PyTorch (the classifier's own forward, softmax) vs ONNX Runtime (CPU) on fresh random
   windows (batch 1 and batch N) and on real windows of the store. Per element ``abs = |p_onnx − p_torch|``
   and ``rel = abs / max(p_torch, rel_floor)``; the gate passes when ``max abs ≤ atol`` and
   ``max rel ≤ rtol`` (defaults 1e-4, 1e-3, floor 1e-3: probabilities under 0.1 % are judged relative to
   0.1 %).
5. **FP16 check** (:func:`wearspec.deploy.quantize.fp16_check`; reported, not a gate).
6. **INT8** (:func:`wearspec.deploy.quantize.quantize_int8`, with a store): Q/DQ model calibrated on
   windows of the training subjects, op-set checked, FP32 vs INT8 accuracy / macro-F1 / κ on the held-out
   test subjects (ONNX Runtime), argmax agreement.
7. :func:`wearspec.deploy.bundle.write_bundle` (atomic).
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from wearspec import __version__
from wearspec.data.splits import SplitConfig, make_splits
from wearspec.data.store import WindowStore
from wearspec.deploy import bundle as bundle_io
from wearspec.deploy.opset import op_report, opset_version
from wearspec.deploy.quantize import fp16_check, is_frontend_node, quantize_int8, session
from wearspec.errors import WearspecError
from wearspec.utils.io import jsonable
from wearspec.evaluate.metrics import accuracy, cohen_kappa, macro_f1

INPUT_NAME, OUTPUT_NAME = "windows", "probabilities"
EXPORTERS = ("auto", "torchscript", "dynamo")
REL_FLOOR = 1e-3


@dataclass
class ExportConfig:
    """``wearspec export``: classifier checkpoint → deploy bundle.

    ``checkpoint``: a ``wearspec finetune`` classifier (``best.pt`` or its stage folder). ``output``: the
    bundle folder. ``store``: a window store of the same channels/rate/window (optional; gives the real-window
    parity check, the INT8 calibration windows and the INT8 accuracy on held-out subjects: with a checkpoint of
    ``wearspec finetune``, which records its training and validation subjects, every other labelled subject;
    else the test subjects of ``split`` over the labelled windows). ``parity_atol``/``parity_rtol``: the
    parity gate on probabilities (see the module docstring). ``exporter``: ``auto`` (TorchScript, then
    dynamo), ``torchscript`` or ``dynamo``.
    """

    checkpoint: str = ""
    output: str = ""
    store: str = ""
    opset: int = 17
    int8: bool = True
    calibration_windows: int = 256
    calibration_method: str = "percentile"
    quantize_attention: bool = False
    parity_atol: float = 1e-4
    parity_rtol: float = 1e-3
    parity_windows: int = 64
    accuracy_windows: int = 4096  # test windows for the INT8 accuracy (0 = all)
    fp16_check: bool = True
    exporter: str = "auto"
    split: SplitConfig = field(default_factory=SplitConfig)
    seed: int = 0
    overwrite: bool = False

    def validate(self) -> None:
        if not 17 <= self.opset <= 20:
            raise WearspecError(f"export.opset: expected 17…20 (TensorRT 10.3 parses ≤ 20; LayerNorm needs "
                                f"≥ 17), got {self.opset}")
        if self.exporter not in EXPORTERS:
            raise WearspecError(f"export.exporter: expected one of {', '.join(EXPORTERS)}, got {self.exporter!r}")
        for key in ("calibration_windows", "parity_windows"):
            if getattr(self, key) < 1:
                raise WearspecError(f"export.{key}: expected an integer ≥ 1, got {getattr(self, key)}")
        if self.accuracy_windows < 0:
            raise WearspecError(f"export.accuracy_windows: expected ≥ 0 (0 = all), got {self.accuracy_windows}")
        if not (self.parity_atol > 0 and self.parity_rtol > 0):
            raise WearspecError(f"export.parity_atol/rtol: expected > 0, got {self.parity_atol}, {self.parity_rtol}")
        self.split.validate()


class InferenceModule(nn.Module):
    """windows (B, C, T) float32 → probabilities (B, K) float32, for any Classifier-like module (a
    ``frontend`` and a ``model``: a :class:`~wearspec.models.students.Student`, whose heads are fused by
    ``predict_logits``, or any module mapping spectrograms to logits, such as the CNN teacher)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        frontend, model = getattr(classifier, "frontend", None), getattr(classifier, "model", None)
        if not (isinstance(frontend, nn.Module) and isinstance(model, nn.Module)):
            raise WearspecError(f"export: expected a classifier with 'frontend' and 'model' modules, got "
                                f"{type(classifier).__name__}")
        self.frontend, self.model = frontend, model

    def forward(self, windows: Tensor) -> Tensor:
        spec = self.frontend(windows)  # (B, C, F, N), normalised
        fuse = getattr(self.model, "predict_logits", None)
        logits = fuse(spec) if callable(fuse) else self.model(spec)  # (B, K), heads fused
        return torch.softmax(logits.float(), dim=-1)


# ---- ONNX export ---------------------------------------------------------------------------------------
@contextmanager
def _export_mode(module: nn.Module, fused_attn: bool | None = None) -> Iterator[None]:
    """eval mode (and optionally every ``fused_attn`` flag) for the duration, restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    flags = [(m, m.fused_attn) for m in module.modules() if hasattr(m, "fused_attn")]
    try:
        module.eval()
        if fused_attn is not None:
            for m, _ in flags:
                m.fused_attn = fused_attn
        yield
    finally:
        for m, was in modes:
            m.training = was
        for m, v in flags:
            m.fused_attn = v


def _export_once(module: nn.Module, example: Tensor, opset: int, exporter: str, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation, tracer warnings
        if exporter == "torchscript":
            with _export_mode(module), torch.no_grad():
                torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        else:  # dynamo: Swin needs the explicit attention path (see SpectrogramBackbone.set_fused_attn)
            with _export_mode(module, fused_attn=False):
                torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                                  dynamic_shapes={"windows": {0: torch.export.Dim("batch", min=1)}},
                                  external_data=False, verbose=False)


def export_onnx(module: nn.Module, example: Tensor, opset: int = 17, exporter: str = "auto"
                ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Export ``module`` (windows → probabilities) → (ONNX model, {"exporter", "written_opset"}); the
    returned model declares ``opset`` (a dynamo export that wrote a newer one is down-converted, or refused)."""
    order = ("torchscript", "dynamo") if exporter == "auto" else (exporter,)
    errors = []
    for kind in order:
        with tempfile.TemporaryDirectory(prefix="wearspec-export-") as tmp:
            path = Path(tmp) / "model.onnx"
            try:
                _export_once(module, example, opset, kind, path)
                model = onnx.load(str(path))
            except Exception as e:  # exporter failures are many kinds of exceptions
                errors.append(f"{kind}: {type(e).__name__}: {_first_line(e)}")
                continue
        written = opset_version(model)
        if written != opset:  # the dynamo exporter keeps 18 where it has no opset-17 translation
            try:
                model = onnx.version_converter.convert_version(model, opset)
                onnx.checker.check_model(model)  # the converter can write nodes invalid at the target opset
            except Exception as e:
                errors.append(f"{kind}: wrote opset {written} instead of {opset} and could not be converted "
                              f"({_first_line(e)}); ask for opset {written}")
                continue
        return model, {"exporter": kind, "written_opset": written}
    raise WearspecError("export: ONNX export failed: " + "; ".join(errors))


def simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """onnxslim (constant folding, dead-node removal) → (model, None), or (the input, the reason) when
    onnxslim is not installed, fails or changes the opset."""
    try:
        import onnxslim
    except ImportError:
        return model, "onnxslim is not installed; graph left as exported"
    try:
        slim = onnxslim.slim(model)
    except Exception as e:
        return model, f"onnxslim failed ({type(e).__name__}: {_first_line(e)}); graph left as exported"
    if slim is None or opset_version(slim) != opset_version(model):
        return model, "onnxslim changed the opset; graph left as exported"
    return slim, None


def check_graph(model: onnx.ModelProto, channels: int, samples: int, classes: int) -> onnx.ModelProto:
    """``check_model(full_check=True)``, strict shape inference and the I/O contract (``windows``
    [batch, C, T] float32 → ``probabilities`` [batch, K] float32, only the batch axis symbolic) → the model
    with inferred shapes. Raises :class:`WearspecError` on any problem."""
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:
        raise WearspecError(f"export: the ONNX checker refuses the graph: {_first_line(e)}") from None
    inits = {t.name for t in model.graph.initializer}
    ins = [i for i in inferred.graph.input if i.name not in inits]
    for role, vals, name, dims in (("input", ins, INPUT_NAME, [channels, samples]),
                                   ("output", list(inferred.graph.output), OUTPUT_NAME, [classes])):
        if len(vals) != 1 or vals[0].name != name:
            raise WearspecError(f"export: expected one graph {role} {name!r}, got {[v.name for v in vals]}")
        tt = vals[0].type.tensor_type
        shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in tt.shape.dim]
        if tt.elem_type != onnx.TensorProto.FLOAT:
            raise WearspecError(f"export: {role} {name!r} is not float32")
        if len(shape) != 1 + len(dims) or not isinstance(shape[0], str) or shape[1:] != dims:
            raise WearspecError(f"export: {role} {name!r} has shape {shape}; expected ['batch', "
                                f"{', '.join(map(str, dims))}] (only the batch axis dynamic)")
    return inferred


# ---- running and comparing ------------------------------------------------------------------------------
def run_onnx(sess, windows: np.ndarray, batch: int = 64) -> np.ndarray:
    """Probabilities (N, K) of an ONNX Runtime session for windows (N, C, T), ``batch`` at a time."""
    out = [sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(windows[i:i + batch], np.float32)})[0]
           for i in range(0, len(windows), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def run_torch(classifier: nn.Module, windows: np.ndarray, batch: int = 64) -> np.ndarray:
    """softmax(classifier(windows)) (N, K) float32: the PyTorch reference."""
    with _export_mode(classifier):
        out = [torch.softmax(classifier(torch.from_numpy(windows[i:i + batch]).float()).float(), -1).numpy()
               for i in range(0, len(windows), batch)]
    return np.concatenate(out)


def compare(reference: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> dict[str, Any]:
    """Parity figures of ``got`` vs ``reference`` (N, K) probabilities (definitions: module docstring)."""
    if got.shape != reference.shape:
        return {"windows": int(len(reference)), "max_abs": float("inf"), "max_rel": float("inf"),
                "argmax_agreement": 0.0, "passed": False, "shape": [list(reference.shape), list(got.shape)]}
    ref = reference.astype(np.float64)
    err = np.abs(got.astype(np.float64) - ref)
    rel = err / np.maximum(np.abs(ref), REL_FLOOR)
    max_abs = float(err.max()) if err.size else 0.0
    max_rel = float(rel.max()) if rel.size else 0.0
    ok = bool(np.isfinite(got).all()) and max_abs <= atol and max_rel <= rtol
    return {"windows": int(len(ref)), "max_abs": max_abs, "max_rel": max_rel,
            "argmax_agreement": float(np.mean(got.argmax(1) == reference.argmax(1))) if len(ref) else 1.0,
            "passed": ok}


def _scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"accuracy": accuracy(y, p), "macro_f1": macro_f1(y, p), "kappa": cohen_kappa(y, p)}


# ---- the whole export -----------------------------------------------------------------------------------
def export_classifier(classifier: nn.Module, meta: dict[str, Any], output: str | Path,
                      store: WindowStore | str | Path | None = None, *, opset: int = 17, int8: bool = True,
                      calibration_windows: int = 256, calibration_method: str = "percentile",
                      quantize_attention: bool = False, parity_atol: float = 1e-4, parity_rtol: float = 1e-3,
                      parity_windows: int = 64, accuracy_windows: int = 4096, check_fp16: bool = True,
                      exporter: str = "auto", split: SplitConfig | None = None, seed: int = 0,
                      overwrite: bool = False, source_checkpoint: str | Path | None = None,
                      trained_on: dict[str, list[str]] | None = None, log=None) -> dict[str, Any]:
    """Export ``classifier`` (a :class:`~wearspec.models.classifier.Classifier` or any module with
    ``frontend`` and ``model``) described by ``meta`` (its ``classifier_meta`` block) to the bundle folder
    ``output``; see the module docstring for the steps and gates. Returns a summary (bundle path, opset,
    exporter, op counts, parity, FP16 and INT8 figures, warnings, seconds). ``trained_on``: the subjects the
    classifier was trained and validated on (:func:`~wearspec.models.classifier.trained_subjects`), so that
    INT8 is scored on the others. ``log``: a callable taking one line of progress (default: silent)."""
    t0, say = time.time(), (log or (lambda line: None))
    bundle_io.check_output(output, overwrite)  # fail before minutes of work, not after
    rng = np.random.default_rng(seed)
    channels = [str(c) for c in (meta.get("channels") or classifier.frontend.channel_names or [])]
    c, t, hop = len(channels), int(meta["window"]), int(meta.get("hop") or 0)
    labels = [str(x) for x in meta.get("label_names") or []]
    if c < 1 or hop < 1:
        raise WearspecError(f"export: the classifier meta needs channels and a hop (got {channels}, hop {hop})")
    if store is not None and not isinstance(store, WindowStore):
        store = WindowStore(store)
    if store is not None:
        _check_store(store, channels, t, float(meta["rate"]))
    module = InferenceModule(classifier)
    example = torch.randn(2, c, t, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad(), _export_mode(classifier):
        k = int(classifier(example).shape[-1])
    notes = []
    if len(labels) != k:
        notes.append(f"the meta holds {len(labels)} label names for {k} outputs: labels are the class numbers")
        labels = [str(i) for i in range(k)]

    say(f"exporting to ONNX (opset {opset})")
    model, how = export_onnx(module, example, opset, exporter)
    model, slim_note = simplify(model)
    check_graph(model, c, t, k)
    report = op_report(model)
    if report["problems"]:
        raise WearspecError(f"export: the graph is not buildable with TensorRT {report['trt_version']}: "
                            + "; ".join(report["problems"][:5]) + (f" ({slim_note})" if slim_note else ""))
    if report["layernorm"]["single_op"] is False:
        raise WearspecError(f"export: {report['layernorm']['decomposed']} LayerNorm(s) are decomposed into "
                            f"ReduceMean/Pow ops; export with opset ≥ 17")
    data = model.SerializeToString()
    sess = session(data)

    say("parity: PyTorch vs ONNX Runtime")
    x_rand = rng.standard_normal((max(parity_windows, 2), c, t)).astype(np.float32)
    ref = run_torch(classifier, x_rand)
    random_fig = compare(ref, run_onnx(sess, x_rand, batch=len(x_rand)), parity_atol, parity_rtol)
    single = compare(ref[:2], run_onnx(sess, x_rand[:2], batch=1), parity_atol, parity_rtol)
    random_fig.update(batch_sizes=[1, len(x_rand)], passed=random_fig["passed"] and single["passed"],
                      max_abs=max(random_fig["max_abs"], single["max_abs"]),
                      max_rel=max(random_fig["max_rel"], single["max_rel"]))
    real_fig, x_real, y_real = None, None, None
    if store is not None:
        idx = np.sort(rng.choice(len(store), size=min(parity_windows, len(store)), replace=False))
        x_real, y_real = store.read_batch(idx), store.labels[idx]
        real_fig = compare(run_torch(classifier, x_real), run_onnx(sess, x_real), parity_atol, parity_rtol)
    thresholds = {"atol": parity_atol, "rtol": parity_rtol, "rel_floor": REL_FLOOR,
                  "definition": "abs = |p_onnx - p_torch|, rel = abs / max(p_torch, rel_floor) per probability; "
                                "pass: max abs <= atol and max rel <= rtol"}
    for name, fig in (("random", random_fig), ("real", real_fig)):
        if fig is not None and not fig["passed"]:
            raise WearspecError(f"export: parity gate failed on {name} windows: max abs error {fig['max_abs']:.3g} "
                                f"(atol {parity_atol:g}), max rel error {fig['max_rel']:.3g} (rtol {parity_rtol:g}), "
                                f"argmax agreement {fig['argmax_agreement']:.3f}; no bundle written")
    fp16 = None
    if check_fp16:  # an estimate for the report, not a gate: its own failure does not stop the export
        say("FP16 check")
        xs = x_real if x_real is not None else x_rand
        try:
            fp16 = fp16_check(model, xs, y_real, input_name=INPUT_NAME,
                              source="store" if x_real is not None else "random")
        except Exception as e:
            notes.append(f"FP16 check failed ({type(e).__name__}: {_first_line(e)})")

    files: dict[str, bytes] = {"model.onnx": data}
    notes += [n for n in (slim_note,) if n] + (fp16["warnings"] if fp16 else [])
    int8_sec = None
    if int8 and store is None:
        notes.append("INT8 skipped: it needs a store (calibration windows and test subjects)")
    elif int8:
        int8_sec, qdata = _int8(model, sess, store, split or SplitConfig(), rng, calibration_windows,
                                calibration_method, quantize_attention, accuracy_windows, say, trained_on)
        files["model.int8.onnx"] = qdata

    fe = classifier.frontend
    fitted = bool(getattr(fe, "fitted", False)) and bool(getattr(fe, "normalize", False))
    ckpt = Path(source_checkpoint) if source_checkpoint else None
    model_meta = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    kind = str(meta.get("kind") or getattr(classifier, "kind", "") or "classifier")
    bundle_meta = {
        "format": bundle_io.FORMAT, "version": bundle_io.VERSION, "wearspec_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {"name": INPUT_NAME, "shape": [-1, c, t], "dtype": "float32", "channels": channels,
                  "rate": float(meta["rate"]), "window": t, "hop": hop},
        "output": {"name": OUTPUT_NAME, "shape": [-1, k], "labels": labels},
        "normalization": {"mean": fe.norm_mean.tolist() if fitted else None,
                          "std": fe.norm_std.tolist() if fitted else None,
                          "where": "inside the graph, after the log spectrogram" if fitted
                          else "none (the front end is not normalised)"},
        "frontend": fe.config() if hasattr(fe, "config") else meta.get("frontend", {}),
        "model": {"kind": kind, "arch": str(model_meta.get("arch") or ("cnn" if kind == "teacher" else kind)),
                  "source_checkpoint": str(ckpt) if ckpt else None,
                  "sha256": bundle_io.sha256_file(ckpt) if ckpt and ckpt.is_file() else None,
                  "num_classes": k, "input_size": meta.get("input_size"), "config": model_meta},
        "onnx": {"file": "model.onnx", "opset": report["opset"], "exporter": how["exporter"],
                 "written_opset": how["written_opset"], "ops": report["ops"], "layernorm": report["layernorm"],
                 "trt_version_checked": report["trt_version"], "frontend_nodes": _frontend_nodes(model)},
        "int8": int8_sec,
        "parity": {"random": random_fig, "real": real_fig, "thresholds": thresholds},
        "fp16": fp16,
        "notes": notes,
    }
    say(f"writing {output}")
    path = bundle_io.write_bundle(output, jsonable(bundle_meta), files, overwrite=overwrite)
    return {"bundle": str(path), "opset": report["opset"], "exporter": how["exporter"], "ops": report["ops"],
            "layernorm": report["layernorm"], "parity": bundle_meta["parity"], "fp16": fp16, "int8": int8_sec,
            "notes": notes, "seconds": round(time.time() - t0, 1)}


def _held_out(store: WindowStore, split: SplitConfig, trained_on: dict[str, list[str]] | None
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """(calibration windows, test windows, how the test was chosen). With the checkpoint's record of the
    subjects it was trained and validated on (``trained_on``): calibrate on its training subjects, score on the
    labelled windows of every other subject. Without: ``split`` over the labelled windows, as fine-tuning
    splits them (so the same split settings give the same test subjects)."""
    labelled = np.flatnonzero(store.labels >= 0)
    if trained_on is not None:
        subject = np.asarray(store.subject_names, dtype=object)[store.subjects]
        seen = np.isin(subject, list(trained_on["train"]) + list(trained_on["val"]))
        calibration = np.flatnonzero(np.isin(subject, list(trained_on["train"])))
        if calibration.size:
            return calibration, labelled[~seen[labelled]], "subjects the checkpoint was not trained or validated on"
    try:
        sp = make_splits(store, labelled, split)[0]
        return sp.train, sp.test, sp.name
    except WearspecError as e:  # e.g. a single-subject store: calibrate on everything, no held-out score
        return np.arange(len(store)), np.zeros(0, np.int64), f"none ({e})"


def _int8(model, sess, store: WindowStore, split: SplitConfig, rng, n_cal: int, method: str, attention: bool,
          n_acc: int, say, trained_on: dict[str, list[str]] | None = None) -> tuple[dict[str, Any], bytes]:
    """Calibrate on training-subject windows, quantize, op-check, and score FP32 vs INT8 on held-out subjects
    (:func:`_held_out`)."""
    train, test, split_name = _held_out(store, split, trained_on)
    cal_idx = np.sort(rng.choice(train, size=min(n_cal, len(train)), replace=False))
    say(f"INT8: calibrating on {len(cal_idx)} windows of the training subjects")
    qmodel, info = quantize_int8(model, store.read_batch(cal_idx), input_name=INPUT_NAME, method=method,
                                 quantize_attention=attention)
    problems = op_report(qmodel)["problems"]
    if problems:
        raise WearspecError("export: the INT8 graph is not buildable with TensorRT 10.3: " + "; ".join(problems[:5]))
    try:
        onnx.checker.check_model(qmodel, full_check=True)
    except Exception as e:
        raise WearspecError(f"export: the ONNX checker refuses the INT8 graph: {_first_line(e)}") from None
    qdata = qmodel.SerializeToString()
    qsess = session(qdata)
    labelled = test[store.labels[test] >= 0] if store.has_labels else test
    ev = labelled if len(labelled) else test
    if n_acc and len(ev) > n_acc:
        ev = np.sort(rng.choice(ev, size=n_acc, replace=False))
    acc: dict[str, Any] = {"split": split_name, "windows": int(len(ev)), "subjects": len(np.unique(store.subjects[ev]))}
    if len(ev):
        say(f"INT8: scoring FP32 vs INT8 on {len(ev)} test windows")
        p32, p8 = [], []
        for i in range(0, len(ev), 256):
            x = store.read_batch(ev[i:i + 256])
            p32.append(run_onnx(sess, x))
            p8.append(run_onnx(qsess, x))
        a, b = np.concatenate(p32), np.concatenate(p8)
        acc.update(argmax_agreement=float(np.mean(a.argmax(1) == b.argmax(1))),
                   max_abs_prob_diff=float(np.abs(a - b).max()))
        if len(labelled):
            y = store.labels[ev]
            acc.update(fp32=_scores(y, a.argmax(1)), int8=_scores(y, b.argmax(1)))
            acc["macro_f1_drop"] = acc["fp32"]["macro_f1"] - acc["int8"]["macro_f1"]
    return {"file": "model.int8.onnx", "method": info.pop("method"), **info, "accuracy": acc}, qdata


def _check_store(store: WindowStore, channels: list[str], window: int, rate: float) -> None:
    if list(store.channels) != channels:
        raise WearspecError(f"{store.path}: store channels {store.channels} differ from the model's {channels} "
                            "(same names in the same order expected)")
    if store.window != window or not math.isclose(store.rate, rate, rel_tol=1e-6):
        raise WearspecError(f"{store.path}: store windows are {store.window} samples at {store.rate} Hz; the model "
                            f"takes {window} samples at {rate} Hz")


def _frontend_nodes(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if is_frontend_node(n)]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines() or [type(e).__name__])[0][:300]


def run_export(cfg: ExportConfig, log=None) -> dict[str, Any]:
    """``wearspec export``: load ``cfg.checkpoint`` (:func:`~wearspec.models.classifier.load_classifier`) and
    :func:`export_classifier` it to ``cfg.output`` → the summary."""
    from wearspec.models.classifier import classifier_file, load_classifier, trained_subjects

    cfg.validate()
    if not cfg.checkpoint or not cfg.output:
        raise WearspecError("export: checkpoint and output are required (checkpoint=<best.pt> output=<folder>)")
    bundle_io.check_output(cfg.output, cfg.overwrite)
    ckpt = classifier_file(cfg.checkpoint)
    classifier, meta = load_classifier(ckpt)
    return export_classifier(
        classifier, meta, cfg.output, cfg.store or None, opset=cfg.opset, int8=cfg.int8,
        calibration_windows=cfg.calibration_windows, calibration_method=cfg.calibration_method,
        quantize_attention=cfg.quantize_attention, parity_atol=cfg.parity_atol, parity_rtol=cfg.parity_rtol,
        parity_windows=cfg.parity_windows, accuracy_windows=cfg.accuracy_windows, check_fp16=cfg.fp16_check,
        exporter=cfg.exporter, split=cfg.split, seed=cfg.seed, overwrite=cfg.overwrite, source_checkpoint=ckpt,
        trained_on=trained_subjects(ckpt), log=log)
