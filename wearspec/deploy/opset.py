"""Which ONNX operators a TensorRT 10.3 (JetPack 6) engine build can parse, and a check of an exported graph.

Source of the allow-list: ONNX-TensorRT's operator support matrix (``docs/operators.md`` of
github.com/onnx/onnx-tensorrt, the ``Supported = Y`` rows) as published for TensorRT 10.x, minus the
operators its changelog (``docs/Changelog.md``) adds after 10.3: ``HannWindow``/``HammingWindow``/
``BlackmanWindow`` (10.4), ``STFT`` (10.5, real input only), ``Attention`` (10.14), ``RotaryEmbedding``,
``RMSNormalization``, ``TensorScatter`` (10.15); ``DFT`` is not parsed by any 10.x. Operators whose
first 10.x release we could not pin down (``Gelu``, ``Mish``, ``CastLike``, ``Swish``) are left out: an
exported wearspec graph does not need them (GELU exports as ``Erf`` arithmetic at opset 17). TensorRT 10.0–
10.3 parse opsets 9 to 20 (the ONNX submodule moved to 1.17 / opset 22 only in 10.6).

On top of "does it parse", :data:`REFUSED_OPS` lists operators a wearspec graph must not contain even where
TensorRT has an importer: ``STFT``/``DFT`` (no importer on JetPack 6; the front end is a convolution),
control flow (``Loop``, ``If``: data-dependent, usually an export accident), ``ScatterND`` and ``NonZero``
(data-dependent shapes or scatter plugins, slow and fragile; a constant one is folded by onnxslim).

:func:`check_ops` returns a list of problems (empty = fine); :func:`op_report` adds the op counts, the
opset and whether every LayerNorm is one ``LayerNormalization`` op (opset ≥ 17, TensorRT's normalisation
layer) rather than the ReduceMean/Sub/Pow/… decomposition of older opsets (slower and FP16-fragile).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator

import numpy as np

TRT_VERSION = "10.3"
MIN_OPSET, MAX_OPSET = 9, 20

# ONNX-TensorRT operators.md (10.x) rows with "Supported: Y", restricted to what 10.3 parses (see above).
SUPPORTED_OPS: frozenset[str] = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or
Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

REFUSED_OPS: dict[str, str] = {
    "STFT": "TensorRT parses STFT only from 10.5 (JetPack 6 has 10.3); the front end must be the conv-DFT",
    "DFT": "no TensorRT 10.x importer (11.2+ via a plugin); the front end must be the conv-DFT",
    "MelWeightMatrix": "no TensorRT importer; the mel filterbank must be a constant MatMul",
    "Loop": "control flow in the graph (data-dependent; usually a Python loop over tensor values at export)",
    "If": "control flow in the graph (a Python branch on tensor values at export)",
    "ScatterND": "data-dependent scatter (in-place indexed assignment at export); slow and fragile on TensorRT",
    "NonZero": "data-dependent output shape (boolean indexing at export); not buildable with a fixed profile",
}


def _graphs(graph) -> Iterator[Any]:
    """The graph and every subgraph (Loop/If/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.g is not None and len(attr.g.node):
                yield from _graphs(attr.g)
            for g in attr.graphs:
                yield from _graphs(g)


def _nodes(model) -> Iterator[Any]:
    for g in _graphs(model.graph):
        yield from g.node


def opset_version(model) -> int:
    """The default-domain (``ai.onnx``) opset the model declares."""
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return int(max(versions)) if versions else 0


def op_counts(model) -> dict[str, int]:
    """{op type: count} over the graph and its subgraphs (custom domains as ``domain::Op``), sorted by name."""
    c = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in _nodes(model))
    return dict(sorted(c.items()))


def layernorm_report(model) -> dict[str, Any]:
    """``{"ops": n LayerNormalization nodes, "decomposed": m ReduceMean→Sub→(Pow|Mul)→ReduceMean chains,
    "single_op": n > 0 and m == 0}`` (``single_op`` is None when the graph has no LayerNorm at all)."""
    nodes = list(_nodes(model))
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def after(node, *types):
        return [c for o in node.output for c in consumers.get(o, []) if c.op_type in types]

    decomposed = 0
    for r1 in (n for n in nodes if n.op_type == "ReduceMean"):
        if any(after(sq, "ReduceMean") for s in after(r1, "Sub") for sq in after(s, "Pow", "Mul")):
            decomposed += 1
    n_ln = sum(n.op_type == "LayerNormalization" for n in nodes)
    single = None if n_ln == 0 and decomposed == 0 else (n_ln > 0 and decomposed == 0)
    return {"ops": n_ln, "decomposed": decomposed, "single_op": single}


def _constants(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for g in _graphs(model.graph) for t in g.initializer}
    for n in _nodes(model):
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t is not None:
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def check_ops(model, refuse: dict[str, str] | None = None) -> list[str]:
    """Problems that keep TensorRT 10.3 from building ``model`` (an ``onnx.ModelProto``) as wearspec intends;
    an empty list means none found.

    Flags: an opset outside 9…20; every operator outside :data:`SUPPORTED_OPS` or in ``refuse`` (default
    :data:`REFUSED_OPS`; STFT and DFT always) or in a non-standard domain; and the documented restrictions
    that matter for these graphs: Q/DQ zero points must be 0 and DequantizeLinear inputs 8-bit (an INT32
    bias DQ does not parse); ``Squeeze``/``Unsqueeze`` axes must be constants (dynamic axes need 10.7);
    ``Resize`` only ``nearest``/``linear`` without antialiasing; ``LayerNormalization`` only its first output.
    """
    refuse = dict(REFUSED_OPS if refuse is None else refuse)
    refuse.setdefault("STFT", REFUSED_OPS["STFT"])
    refuse.setdefault("DFT", REFUSED_OPS["DFT"])
    problems: list[str] = []
    opset = opset_version(model)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        problems.append(f"opset {opset}: TensorRT {TRT_VERSION} parses opsets {MIN_OPSET}…{MAX_OPSET}")
    for d in (o.domain for o in model.opset_import):
        if d not in ("", "ai.onnx"):
            problems.append(f"operator domain {d!r}: TensorRT {TRT_VERSION} parses only standard ONNX operators")
    consts = _constants(model)
    seen: set[str] = set()
    for n in _nodes(model):
        where = f"{n.op_type} node {n.name!r}" if n.name else f"{n.op_type} node"
        if n.domain not in ("", "ai.onnx"):
            continue  # reported per domain above
        if n.op_type in refuse:
            if n.op_type not in seen:
                problems.append(f"{where}: refused: {refuse[n.op_type]}")
                seen.add(n.op_type)
            continue
        if n.op_type not in SUPPORTED_OPS:
            if n.op_type not in seen:
                problems.append(f"{where}: {n.op_type} is not in TensorRT {TRT_VERSION}'s ONNX operator support matrix")
                seen.add(n.op_type)
            continue
        problems.extend(_restrictions(n, where, consts))
    return problems


def _restrictions(n, where: str, consts: dict[str, np.ndarray]) -> list[str]:
    out = []
    attrs = {a.name: a for a in n.attribute}
    if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
        if len(n.input) > 2 and n.input[2]:
            zp = consts.get(n.input[2])
            if zp is None or np.any(zp != 0):
                out.append(f"{where}: zero point must be a constant 0 (TensorRT takes symmetric Q/DQ only)")
        if n.op_type == "DequantizeLinear":
            x = consts.get(n.input[0])
            if x is not None and x.dtype not in (np.int8,):
                out.append(f"{where}: dequantizes {x.dtype} constants; TensorRT {TRT_VERSION} takes INT8 "
                           "(do not quantize biases to INT32)")
    elif n.op_type in ("Squeeze", "Unsqueeze") and len(n.input) > 1 and n.input[1]:
        if n.input[1] not in consts:
            out.append(f"{where}: axes must be a constant (dynamic axes need TensorRT 10.7)")
    elif n.op_type == "Resize":
        mode = attrs["mode"].s.decode() if "mode" in attrs else "nearest"
        if mode not in ("nearest", "linear"):
            out.append(f"{where}: mode {mode!r}; TensorRT supports nearest and linear (fix the model's size at "
                       "export so no position-embedding resampling is left in the graph)")
        if "antialias" in attrs and attrs["antialias"].i:
            out.append(f"{where}: antialiasing is not supported by TensorRT")
    elif n.op_type == "LayerNormalization" and sum(1 for o in n.output if o) > 1:
        out.append(f"{where}: only the first output (Y) is supported by TensorRT")
    return out


def op_report(model, refuse: dict[str, str] | None = None) -> dict[str, Any]:
    """``{"opset", "ops": {op: count}, "layernorm": layernorm_report, "problems": check_ops,
    "trt_version": "10.3"}``."""
    return {"opset": opset_version(model), "ops": op_counts(model), "layernorm": layernorm_report(model),
            "problems": check_ops(model, refuse), "trt_version": TRT_VERSION}
