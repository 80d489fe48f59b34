"""``wearspec export``: a fine-tuned classifier → a deploy bundle that takes raw windows.

:class:`InferenceModule` is what goes into the graph: windows (B, C, T) float32 → front end (conv-DFT STFT,
|X|, mel, log, per-channel normalisation) → model → heads fused → softmax → probabilities (B, K). Steps of
:func:`export_classifier` (every gate fails with a :class:`WearspecError` carrying the failing figure, and
then no bundle is written):

1. **ONNX export** (:mod:`wearspec.deploy.graph`) at ``opset`` (17: LayerNorm as one ``LayerNormalization``
   op) with only the batch axis dynamic: TorchScript exporter first, dynamo as the fallback.
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
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from wearspec import __version__
from wearspec.data.splits import SplitConfig, make_splits
from wearspec.data.store import WindowStore
from wearspec.deploy import bundle as bundle_io
from wearspec.deploy.graph import (EXPORTERS, INPUT_NAME, OUTPUT_NAME, first_line, check_graph, export_onnx,
                                   simplify)
from wearspec.deploy.graph import export_mode as _export_mode
from wearspec.deploy.opset import op_report
from wearspec.deploy.quantize import fp16_check, is_frontend_node, quantize_int8, session
from wearspec.errors import WearspecError
from wearspec.evaluate.metrics import accuracy, cohen_kappa, macro_f1
from wearspec.utils.io import jsonable

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
        if not 0 <= self.seed < 2**32:
            raise WearspecError(f"seed: expected an integer in [0, 4294967295], got {self.seed}")
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
def export_classifier(classifier: nn.Module, meta: dict[str, Any], cfg: ExportConfig,
                      store: WindowStore | None = None, *, source_checkpoint: str | Path | None = None,
                      trained_on: dict[str, list[str]] | None = None, log=None) -> dict[str, Any]:
    """Export ``classifier`` (a :class:`~wearspec.models.classifier.Classifier` or any module with
    ``frontend`` and ``model``) described by ``meta`` (its ``classifier_meta`` block) to the bundle folder
    ``cfg.output``; see the module docstring for the steps and gates. ``store``: an opened window store
    (default: ``cfg.store`` when set). Returns a summary (bundle path, opset, exporter, op counts, parity,
    FP16 and INT8 figures, warnings, seconds). ``trained_on``: the subjects the classifier was trained and
    validated on (:func:`~wearspec.models.classifier.trained_subjects`), so that INT8 is scored on the others.
    ``log``: a callable taking one line of progress (default: silent)."""
    t0, say = time.time(), (log or (lambda line: None))
    cfg.validate()
    bundle_io.check_output(cfg.output, cfg.overwrite)  # fail before minutes of work, not after
    rng = np.random.default_rng(cfg.seed)
    channels, t, hop = _input_spec(classifier, meta)
    if store is None and cfg.store:
        store = WindowStore(cfg.store)
    if store is not None:
        store.verify()  # the parity windows come from it
        _check_store(store, channels, t, float(meta["rate"]))
    example = torch.randn(2, len(channels), t, generator=torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad(), _export_mode(classifier):
        k = int(classifier(example).shape[-1])
    labels, notes = [str(x) for x in meta.get("label_names") or []], []
    if len(labels) != k:
        notes.append(f"the meta holds {len(labels)} label names for {k} outputs: labels are the class numbers")
        labels = [str(i) for i in range(k)]

    say(f"exporting to ONNX (opset {cfg.opset})")
    model, how, report, slim_note = _checked_graph(InferenceModule(classifier), example, cfg, k)
    data = model.SerializeToString()
    sess = session(data)
    say("parity: PyTorch vs ONNX Runtime")
    parity, x_check, y_real = _parity(classifier, sess, store, cfg, rng, (len(channels), t))
    fp16 = None
    if cfg.fp16_check:  # an estimate for the report, not a gate: its own failure does not stop the export
        say("FP16 check")
        fp16 = _fp16(model, x_check, y_real, notes)
    files: dict[str, bytes] = {"model.onnx": data}
    notes += [n for n in (slim_note,) if n] + (fp16["warnings"] if fp16 else [])
    int8_sec = None
    if cfg.int8 and store is None:
        notes.append("INT8 skipped: it needs a store (calibration windows and test subjects)")
    elif cfg.int8:
        int8_sec, files["model.int8.onnx"] = _int8(model, sess, store, cfg, rng, say, trained_on)

    bundle_meta = {
        "format": bundle_io.FORMAT, "version": bundle_io.VERSION, "wearspec_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {"name": INPUT_NAME, "shape": [-1, len(channels), t], "dtype": "float32", "channels": channels,
                  "rate": float(meta["rate"]), "window": t, "hop": hop},
        "output": {"name": OUTPUT_NAME, "shape": [-1, k], "labels": labels},
        **_model_sections(classifier, meta, k, source_checkpoint),
        "onnx": {"file": "model.onnx", "opset": report["opset"], "exporter": how["exporter"],
                 "written_opset": how["written_opset"], "ops": report["ops"], "layernorm": report["layernorm"],
                 "trt_version_checked": report["trt_version"], "frontend_nodes": _frontend_nodes(model)},
        "int8": int8_sec, "parity": parity, "fp16": fp16, "notes": notes,
    }
    say(f"writing {cfg.output}")
    path = bundle_io.write_bundle(cfg.output, jsonable(bundle_meta), files, overwrite=cfg.overwrite)
    return {"bundle": str(path), "opset": report["opset"], "exporter": how["exporter"], "ops": report["ops"],
            "layernorm": report["layernorm"], "parity": parity, "fp16": fp16, "int8": int8_sec,
            "notes": notes, "seconds": round(time.time() - t0, 1)}


def _input_spec(classifier: nn.Module, meta: dict[str, Any]) -> tuple[list[str], int, int]:
    """(channel names, window T, hop) of the bundle's input, from the classifier meta."""
    channels = [str(c) for c in (meta.get("channels") or classifier.frontend.channel_names or [])]
    hop = int(meta.get("hop") or 0)
    if not channels or hop < 1:
        raise WearspecError(f"export: the classifier meta needs channels and a hop (got {channels}, hop {hop})")
    return channels, int(meta["window"]), hop


def _checked_graph(module: nn.Module, example: Tensor, cfg: ExportConfig, k: int
                   ) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, Any], str | None]:
    """Steps 1–3: export, simplify, check the graph and its I/O, gate the op set → (model, how it was
    exported, op report, why the graph was not simplified or None)."""
    model, how = export_onnx(module, example, cfg.opset, cfg.exporter)
    model, slim_note = simplify(model)
    check_graph(model, example.shape[1], example.shape[2], k)
    report = op_report(model)
    if report["problems"]:
        raise WearspecError(f"export: the graph is not buildable with TensorRT {report['trt_version']}: "
                            + "; ".join(report["problems"][:5]) + (f" ({slim_note})" if slim_note else ""))
    if report["layernorm"]["single_op"] is False:
        raise WearspecError(f"export: {report['layernorm']['decomposed']} LayerNorm(s) are decomposed into "
                            f"ReduceMean/Pow ops; export with opset ≥ 17")
    return model, how, report, slim_note


def _parity(classifier: nn.Module, sess, store: WindowStore | None, cfg: ExportConfig, rng: np.random.Generator,
            shape: tuple[int, int]) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """Step 4, the parity gate: PyTorch vs ONNX Runtime on random windows (batch 1 and batch N) and on real
    windows of ``store`` → (the bundle's ``parity`` section, the windows for the FP16 check (n, C, T): the real
    ones when there is a store, else the random ones, and the real windows' labels or None)."""
    x_rand = rng.standard_normal((max(cfg.parity_windows, 2), *shape)).astype(np.float32)
    ref = run_torch(classifier, x_rand)
    random_fig = compare(ref, run_onnx(sess, x_rand, batch=len(x_rand)), cfg.parity_atol, cfg.parity_rtol)
    single = compare(ref[:2], run_onnx(sess, x_rand[:2], batch=1), cfg.parity_atol, cfg.parity_rtol)
    random_fig.update(batch_sizes=[1, len(x_rand)], passed=random_fig["passed"] and single["passed"],
                      max_abs=max(random_fig["max_abs"], single["max_abs"]),
                      max_rel=max(random_fig["max_rel"], single["max_rel"]))
    real_fig, x_real, y_real = None, None, None
    if store is not None:
        idx = np.sort(rng.choice(len(store), size=min(cfg.parity_windows, len(store)), replace=False))
        x_real, y_real = store.read_batch(idx), store.labels[idx]
        real_fig = compare(run_torch(classifier, x_real), run_onnx(sess, x_real), cfg.parity_atol, cfg.parity_rtol)
    for name, fig in (("random", random_fig), ("real", real_fig)):
        if fig is not None and not fig["passed"]:
            raise WearspecError(f"export: parity gate failed on {name} windows: max abs error {fig['max_abs']:.3g} "
                                f"(atol {cfg.parity_atol:g}), max rel error {fig['max_rel']:.3g} (rtol "
                                f"{cfg.parity_rtol:g}), argmax agreement {fig['argmax_agreement']:.3f}; "
                                "no bundle written")
    thresholds = {"atol": cfg.parity_atol, "rtol": cfg.parity_rtol, "rel_floor": REL_FLOOR,
                  "definition": "abs = |p_onnx - p_torch|, rel = abs / max(p_torch, rel_floor) per probability; "
                                "pass: max abs <= atol and max rel <= rtol"}
    parity = {"random": random_fig, "real": real_fig, "thresholds": thresholds}
    return parity, (x_real if x_real is not None else x_rand), y_real


def _fp16(model: onnx.ModelProto, windows: np.ndarray, labels: np.ndarray | None, notes: list[str]
          ) -> dict[str, Any] | None:
    """Step 5, the FP16 estimate on ``windows`` (real ones when there are labels); a failure becomes a note."""
    try:
        return fp16_check(model, windows, labels, input_name=INPUT_NAME,
                          source="store" if labels is not None else "random")
    except Exception as e:
        notes.append(f"FP16 check failed ({type(e).__name__}: {first_line(e)})")
        return None


def _model_sections(classifier: nn.Module, meta: dict[str, Any], k: int, source_checkpoint: str | Path | None
                    ) -> dict[str, Any]:
    """The bundle's ``normalization``, ``frontend`` and ``model`` sections: what was exported, from where."""
    fe = classifier.frontend
    fitted = bool(getattr(fe, "fitted", False)) and bool(getattr(fe, "normalize", False))
    ckpt = Path(source_checkpoint) if source_checkpoint else None
    model_meta = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    kind = str(meta.get("kind") or getattr(classifier, "kind", "") or "classifier")
    return {
        "normalization": {"mean": fe.norm_mean.tolist() if fitted else None,
                          "std": fe.norm_std.tolist() if fitted else None,
                          "where": "inside the graph, after the log spectrogram" if fitted
                          else "none (the front end is not normalised)"},
        "frontend": fe.config() if hasattr(fe, "config") else meta.get("frontend", {}),
        "model": {"kind": kind, "arch": str(model_meta.get("arch") or ("cnn" if kind == "teacher" else kind)),
                  "source_checkpoint": str(ckpt) if ckpt else None,
                  "sha256": bundle_io.sha256_file(ckpt) if ckpt and ckpt.is_file() else None,
                  "num_classes": k, "input_size": meta.get("input_size"), "config": model_meta},
    }


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


def _int8(model, sess, store: WindowStore, cfg: ExportConfig, rng, say,
          trained_on: dict[str, list[str]] | None = None) -> tuple[dict[str, Any], bytes]:
    """Step 6: calibrate on ``cfg.calibration_windows`` training-subject windows, quantize, op-check, and score
    FP32 vs INT8 on up to ``cfg.accuracy_windows`` windows of held-out subjects (:func:`_held_out`)
    → (the bundle's ``int8`` section, the Q/DQ model's bytes)."""
    train, test, split_name = _held_out(store, cfg.split, trained_on)
    cal_idx = np.sort(rng.choice(train, size=min(cfg.calibration_windows, len(train)), replace=False))
    say(f"INT8: calibrating on {len(cal_idx)} windows of the training subjects")
    qmodel, info = quantize_int8(model, store.read_batch(cal_idx), input_name=INPUT_NAME,
                                 method=cfg.calibration_method, quantize_attention=cfg.quantize_attention)
    problems = op_report(qmodel)["problems"]
    if problems:
        raise WearspecError("export: the INT8 graph is not buildable with TensorRT 10.3: " + "; ".join(problems[:5]))
    try:
        onnx.checker.check_model(qmodel, full_check=True)
    except Exception as e:
        raise WearspecError(f"export: the ONNX checker refuses the INT8 graph: {first_line(e)}") from None
    qdata = qmodel.SerializeToString()
    qsess = session(qdata)
    labelled = test[store.labels[test] >= 0] if store.has_labels else test
    ev = labelled if len(labelled) else test
    if cfg.accuracy_windows and len(ev) > cfg.accuracy_windows:
        ev = np.sort(rng.choice(ev, size=cfg.accuracy_windows, replace=False))
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
    return export_classifier(classifier, meta, cfg, source_checkpoint=ckpt, trained_on=trained_subjects(ckpt),
                             log=log)
