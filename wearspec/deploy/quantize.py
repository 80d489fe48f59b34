"""Reduced precision for the deploy graph: explicit INT8 (Q/DQ nodes) and the FP16 numerics check.

**INT8** (:func:`quantize_int8`) is post-training static quantization with ONNX Runtime's
``quantize_static(quant_format=QDQ, per_channel=True, activation_type=QInt8, weight_type=QInt8)``:
symmetric INT8 (zero points 0, as TensorRT requires), weights per output channel, activations per tensor
from a calibration pass over windows of the *training* subjects (:class:`WindowReader`; percentile
calibration by default); biases stay float (an INT32 bias DequantizeLinear does not parse in TensorRT).
Q/DQ pairs sit on the *inputs* of the quantized layers (activation and weight), not on their outputs, the
placement TensorRT's explicit-quantization guide recommends for Conv/GEMM. Only ``Conv``, ``MatMul`` and ``Gemm`` of the
model are quantized, and ``MatMul`` only with a constant weight operand (the attention products Q·Kᵀ and
A·V stay in higher precision unless ``quantize_attention``); the front end (conv-DFT, |X|, mel, log,
normalisation) is excluded node by node, and LayerNorm, Softmax, GELU and residual additions are never
quantized. TensorRT builds such a graph as an explicitly quantized (strongly typed) network.

NVIDIA ModelOpt (``modelopt.onnx.quantization``), which places Q/DQ by TensorRT's own fusion rules, is the
better tool but does not install here: ``nvidia-modelopt[onnx]`` pins ``onnx~=1.21``, ``onnxruntime-gpu``
1.22/1.24 and ``cupy-cuda12x``, which conflict with the project's constraints (onnx 1.23.2, onnxruntime
1.31.1). **ORT's Q/DQ placement is not guaranteed to match TensorRT's fusion rules**: TensorRT may leave a
Q/DQ pair unfused (running that layer in FP32/FP16 with extra reformatting) or fuse differently than ORT
simulates, so accuracy and speed must be measured on the target (``wearspec engine bench``).

**FP16** (:func:`fp16_check`): TensorRT's FP16 mode has no ONNX Runtime equivalent here, so two estimates
are made on real (or random) windows: (1) the largest |activation| of every float tensor of the FP32 graph
(all intermediate tensors exposed as outputs and run with ONNX Runtime), against the FP16 maximum 65504,
split into front end and model; (2) the graph converted to float16 by :func:`to_float16` (every node of
the model part in float16, the front end kept in float32, casts at the border) and run with ONNX Runtime's
CPU kernels, compared with the FP32 graph (max probability difference, argmax agreement, accuracy).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP16_MAX = 65504.0
QUANT_OP_TYPES = ("Conv", "MatMul", "Gemm")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
INT8_METHOD = ("onnxruntime.quantization.quantize_static: QDQ, symmetric INT8 activations (per tensor) and "
               "weights (per channel), float biases, Q/DQ on layer inputs; Conv/MatMul(const weight)/Gemm of the "
               "model only, front end "
               "excluded (ModelOpt not installable; ORT's Q/DQ placement may differ from TensorRT's fusion rules)")
FP16_METHOD = ("ONNX graph converted to float16 (front end kept float32) and run with ONNX Runtime "
               "CPUExecutionProvider vs the FP32 graph; activation ranges from every intermediate tensor of the "
               "FP32 graph run with ONNX Runtime")


def is_frontend_node(node) -> bool:
    """Whether an ONNX node comes from the spectrogram front end (exported node names carry the module
    scope: ``/frontend/Conv``, ``/classifier/frontend/Log`` …)."""
    return "/frontend/" in "/" + node.name


def session(model: onnx.ModelProto | bytes, optimize: bool = True):
    """An ONNX Runtime CPU session (quiet logging; graph optimisations off with ``optimize=False``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


# ---- INT8 ------------------------------------------------------------------------------------------------
def _reader_base():
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader


class WindowReader(_reader_base()):
    """ONNX Runtime calibration reader over raw windows (N, C, T) float32, ``batch`` windows at a time."""

    def __init__(self, windows: np.ndarray, input_name: str = "windows", batch: int = 32):
        self.input_name, self.batch, self._pos = input_name, max(1, int(batch)), 0
        n = len(windows)
        if n > self.batch:  # equal batches: ORT's percentile calibrator fails on a short last batch
            n -= n % self.batch
        else:
            self.batch = max(1, n)
        self.windows = np.ascontiguousarray(windows[:n], dtype=np.float32)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self.windows):
            return None
        x = self.windows[self._pos:self._pos + self.batch]
        self._pos += self.batch
        return {self.input_name: x}

    def rewind(self) -> None:
        self._pos = 0


def quantize_int8(model: onnx.ModelProto, calibration: np.ndarray, *, input_name: str = "windows",
                  method: str = "percentile", quantize_attention: bool = False,
                  exclude: Callable[[Any], bool] = is_frontend_node, batch: int = 32
                  ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Q/DQ INT8 version of ``model`` calibrated on ``calibration`` windows (N, C, T) → (model, info).

    ``method``: ``percentile`` (ORT's histogram percentile 99.999 %: robust to rare activation outliers;
    the default), ``minmax`` or ``entropy``.
    ``exclude(node)``: nodes never quantized (default: the front end). ``info``: method, calibration
    windows, counts of Q/DQ nodes and of quantized nodes per op type (:func:`qdq_summary`).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from wearspec.errors import WearspecError

    if method not in CALIBRATION_METHODS:
        raise WearspecError(f"int8 calibration method: expected one of {', '.join(CALIBRATION_METHODS)}, "
                            f"got {method!r}")
    if len(calibration) == 0:
        raise WearspecError("int8: no calibration windows")
    cal = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}[method]
    if any(not n.name for n in model.graph.node):
        raise WearspecError("int8: every ONNX node needs a name to exclude the front end")
    excluded = [n.name for n in model.graph.node if exclude(n)]
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "MatMulConstBOnly": not quantize_attention,
             "OpTypesToExcludeOutputQuantization": list(QUANT_OP_TYPES)}
    quiet = logging.getLogger(), logging.getLogger("onnxruntime")  # ORT's quantizer logs on the root logger
    levels = [q.level for q in quiet]
    with tempfile.TemporaryDirectory(prefix="wearspec-int8-") as tmp:
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        onnx.save(model, str(src))
        try:
            for q in quiet:
                q.setLevel(logging.ERROR)
            with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
                quantize_static(str(src), str(dst), WindowReader(calibration, input_name, batch),
                                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OP_TYPES),
                                per_channel=True, reduce_range=False, activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8, nodes_to_exclude=excluded, calibrate_method=cal,
                                extra_options=extra)
        finally:
            for q, lv in zip(quiet, levels):
                q.setLevel(lv)
        qmodel = onnx.load(str(dst))
    info = {"method": INT8_METHOD, "calibration": {"windows": int(len(calibration)), "method": method},
            "quantize_attention": bool(quantize_attention), "excluded_frontend_nodes": len(excluded),
            **qdq_summary(qmodel, exclude)}
    return qmodel, info


def qdq_summary(model: onnx.ModelProto, frontend: Callable[[Any], bool] = is_frontend_node) -> dict[str, Any]:
    """``{"quantize_linear": n, "dequantize_linear": m, "quantized": {op type: nodes with INT8 weights (a
    DequantizeLinear of a constant as input)}, "frontend_quantized": [front-end nodes fed by any
    DequantizeLinear]}``."""
    consts = {t.name for t in model.graph.initializer}
    dq_out, weight_out = set(), set()
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear":
            dq_out.update(n.output)
            if n.input[0] in consts:
                weight_out.update(n.output)
    quantized: dict[str, int] = {}
    fe_quantized = []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(i in weight_out for i in n.input):
            quantized[n.op_type] = quantized.get(n.op_type, 0) + 1
        if frontend(n) and any(i in dq_out for i in n.input):
            fe_quantized.append(n.name)
    ops = [n.op_type for n in model.graph.node]
    return {"quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
            "quantized": dict(sorted(quantized.items())), "frontend_quantized": fe_quantized}


# ---- FP16 ------------------------------------------------------------------------------------------------
def _float_tensors(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of every typed tensor (inputs, outputs, value_info after shape inference, initializers)."""
    m = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    types.update({t.name: t.data_type for t in m.graph.initializer})
    return types


def to_float16(model: onnx.ModelProto, keep_fp32: Callable[[Any], bool] = is_frontend_node,
               keep_op_types: tuple[str, ...] | set[str] = ()) -> onnx.ModelProto:
    """A copy of ``model`` computing in float16 except the nodes ``keep_fp32`` selects (default: the front
    end) and the op types in ``keep_op_types``; graph inputs and outputs stay float32 (a Cast at each border
    between float32 and float16 nodes). Float initializers, ``Constant``/``ConstantOfShape`` values and
    ``Cast(to=float)`` of float16 nodes become float16. Single graph only (no Loop/If bodies)."""
    types = _float_tensors(model)
    m = copy.deepcopy(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    prec: dict[str, str] = {i.name: "f" for i in g.input if types.get(i.name) == TensorProto.FLOAT}
    nodes, casts, half_inits = [], {}, {}
    for i, n in enumerate(g.node):
        half = not keep_fp32(n) and n.op_type not in keep_op_types
        want = "h" if half else "f"
        if half:
            for a in n.attribute:
                if n.op_type in ("Constant", "ConstantOfShape") and a.name == "value" \
                        and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
                if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
        for k, name in enumerate(n.input):
            if not name:
                continue
            if name in inits:
                if half and inits[name].data_type == TensorProto.FLOAT:
                    if name not in half_inits:
                        arr = numpy_helper.to_array(inits[name]).astype(np.float16)
                        half_inits[name] = numpy_helper.from_array(arr, f"{name}__fp16")
                    n.input[k] = f"{name}__fp16"
                continue
            have = prec.get(name)
            if have is not None and have != want:
                key = (name, want)
                if key not in casts:
                    out = f"{name}__as_{'fp16' if half else 'fp32'}"
                    casts[key] = out
                    nodes.append(helper.make_node("Cast", [name], [out], name=f"wearspec_cast_{len(casts)}",
                                                  to=TensorProto.FLOAT16 if half else TensorProto.FLOAT))
                n.input[k] = casts[key]
        nodes.append(n)
        for o in n.output:
            cast_to_half = half and n.op_type == "Cast" and types.get(o) == TensorProto.FLOAT16
            if types.get(o) == TensorProto.FLOAT or cast_to_half:
                prec[o] = want
    for o in g.output:
        if prec.get(o.name) == "h":
            inner = f"{o.name}__fp16"
            for n in nodes:
                n.output[:] = [inner if x == o.name else x for x in n.output]
                n.input[:] = [inner if x == o.name else x for x in n.input]
            nodes.append(helper.make_node("Cast", [inner], [o.name], name="wearspec_cast_output", to=TensorProto.FLOAT))
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    keep = [t for t in g.initializer if t.name in used] + [t for t in half_inits.values() if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]
    return m


def fp16_session(model: onnx.ModelProto, keep_fp32: Callable[[Any], bool] = is_frontend_node, tries: int = 12):
    """(session, float16 model, op types kept in float32) for :func:`to_float16` of ``model``; an op type
    without a float16 CPU kernel in ONNX Runtime is moved to float32 and the conversion retried."""
    kept: set[str] = set()
    for _ in range(tries):
        half = to_float16(model, keep_fp32, kept)
        try:
            return session(half), half, sorted(kept)
        except Exception as e:  # onnxruntime NOT_IMPLEMENTED: "Could not find an implementation for Op(ver)"
            found = re.search(r"implementation for (\w+)\(", str(e))
            if not found or found.group(1) in kept:
                raise
            kept.add(found.group(1))
    raise RuntimeError("fp16: too many op types without a float16 kernel")


def activation_ranges(model: onnx.ModelProto, windows: np.ndarray, input_name: str = "windows",
                      batch: int = 8) -> dict[str, dict[str, Any]]:
    """{tensor: {"max_abs", "op", "node", "frontend"}} for every float32 tensor a node produces, the largest
    |value| over ``windows`` (N, C, T), from the FP32 graph run with every such tensor as an output."""
    types = _float_tensors(model)
    m = copy.deepcopy(model)
    producers = {}
    for n in m.graph.node:
        for o in n.output:
            if o and types.get(o) == TensorProto.FLOAT:
                producers[o] = n
    outputs = {o.name for o in m.graph.output}
    for name in producers:
        if name not in outputs:
            m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = session(m, optimize=False)
    names = [o.name for o in sess.get_outputs()]
    peak = dict.fromkeys(names, 0.0)
    for i in range(0, len(windows), batch):
        for name, value in zip(names, sess.run(names, {input_name: windows[i:i + batch].astype(np.float32)})):
            if value.size and np.issubdtype(value.dtype, np.floating):
                peak[name] = max(peak[name], float(np.nanmax(np.abs(value))))
    return {k: {"max_abs": v, "op": producers[k].op_type, "node": producers[k].name,
                "frontend": is_frontend_node(producers[k])} for k, v in peak.items() if k in producers}


def fp16_check(model: onnx.ModelProto, windows: np.ndarray, labels: np.ndarray | None = None, *,
               input_name: str = "windows", source: str = "random") -> dict[str, Any]:
    """The FP16 estimate of the module docstring on ``windows`` (N, C, T); ``labels`` (N,) ≥ 0 add accuracy.

    Returns ``{"method", "windows", "source", "fp16_max", "max_abs_activation": {"frontend": {...},
    "model": {...}}, "model_overflow": [tensors of the model part beyond 65504], "frontend_overflow": bool,
    "layernorm_input_max": max |x| entering a LayerNormalization, "kept_fp32": [...], "max_abs_prob_diff",
    "argmax_agreement", "accuracy": {"fp32", "fp16"} | None, "warnings": [...]}``.
    """
    ranges = activation_ranges(model, windows, input_name)

    def worst(frontend: bool) -> dict[str, Any] | None:
        part = [(v["max_abs"], k, v) for k, v in ranges.items() if v["frontend"] == frontend]
        if not part:
            return None
        value, name, v = max(part, key=lambda t: t[0])
        return {"value": value, "tensor": name, "op": v["op"]}

    fe, md = worst(True), worst(False)
    over = sorted(((v["max_abs"], k) for k, v in ranges.items() if not v["frontend"] and v["max_abs"] > FP16_MAX),
                  reverse=True)
    ln_in = [ranges[n.input[0]]["max_abs"] for n in model.graph.node
             if n.op_type == "LayerNormalization" and n.input[0] in ranges]
    sess32 = session(model)
    sess16, _, kept = fp16_session(model)
    p32 = np.concatenate([sess32.run(None, {input_name: windows[i:i + 64]})[0] for i in range(0, len(windows), 64)])
    p16 = np.concatenate([sess16.run(None, {input_name: windows[i:i + 64]})[0] for i in range(0, len(windows), 64)])
    finite = bool(np.isfinite(p16).all())
    diff = float(np.nanmax(np.abs(p16.astype(np.float64) - p32))) if finite else float("inf")
    agree = float(np.mean(p16.argmax(1) == p32.argmax(1)))
    acc = None
    if labels is not None and (labels >= 0).any():
        ok = labels >= 0
        acc = {"fp32": float(np.mean(p32.argmax(1)[ok] == labels[ok])),
               "fp16": float(np.mean(p16.argmax(1)[ok] == labels[ok])), "windows": int(ok.sum())}
    warnings = []
    if fe is not None and fe["value"] > FP16_MAX:
        warnings.append(f"front end reaches |x| = {fe['value']:.3g} ({fe['op']} {fe['tensor']}) beyond the FP16 "
                        "maximum 65504: keep the front-end layers in FP32 on TensorRT")
    elif fe is not None and fe["value"] > FP16_MAX / 8:
        warnings.append(f"front end reaches |x| = {fe['value']:.3g} ({fe['op']} {fe['tensor']}), within a factor 8 "
                        "of the FP16 maximum 65504 (louder signals or a longer n_fft overflow): keep the front-end "
                        "layers in FP32 on TensorRT")
    if over:
        warnings.append(f"{len(over)} model tensors exceed the FP16 range (worst {over[0][1]}: {over[0][0]:.3g})")
    if ln_in and max(ln_in) > 256.0:
        warnings.append(f"LayerNormalization inputs reach |x| = {max(ln_in):.3g} > 256 (x² overflows FP16): keep "
                        "LayerNorm in FP32 on TensorRT")
    if not finite:
        warnings.append("the float16 graph produced non-finite probabilities")
    return {"method": FP16_METHOD, "windows": int(len(windows)), "source": source, "fp16_max": FP16_MAX,
            "max_abs_activation": {"frontend": fe, "model": md},
            "model_overflow": [{"tensor": k, "value": v} for v, k in over[:10]],
            "frontend_overflow": bool(fe is not None and fe["value"] > FP16_MAX),
            "layernorm_input_max": max(ln_in) if ln_in else None,
            "kept_fp32": ["front end"] + kept, "max_abs_prob_diff": diff, "argmax_agreement": agree,
            "accuracy": acc, "warnings": warnings}
