"""The TensorRT-independent half of :mod:`wearspec.deploy.runtime.trt`: version and profile checks, parser-error
messages, engine descriptions (``<engine>.json``) and whether an engine fits this device. Standard library and
:mod:`wearspec.errors` only, so all of it is tested without TensorRT."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from wearspec.errors import WearspecError, where

ENGINE_FORMAT = "wearspec-engine"
FP32_NAME_MARKERS = ("layernorm", "layer_norm", "reducemean", "pow")
REBUILD_HINT = "rebuild it on this device with `wearspec engine build`"
_OP_HINTS = {
    "STFT": "ONNX STFT is parsed only from TensorRT 10.5: export the spectrogram as the Conv1d DFT front end",
    "DFT": "ONNX DFT is parsed only from TensorRT 11.2: export the spectrogram as the Conv1d DFT front end",
}


def trt_major(version: str) -> int:
    """Major version from ``tensorrt.__version__`` (``'10.3.0'`` → 10)."""
    if not str(version).split(".")[0].isdigit():
        raise WearspecError(f"cannot read the TensorRT version {version!r}")
    return int(str(version).split(".")[0])


def engine_meta_path(engine_path: str | os.PathLike) -> Path:
    """The metadata file beside an engine: ``model.fp16.engine`` → ``model.fp16.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def check_profile(min_batch: int, opt_batch: int, max_batch: int, dla: bool = False) -> None:
    """A valid batch profile; on DLA (``dla``) a static one, as DLA needs min = opt = max."""
    if not all(isinstance(b, int) and b >= 1 for b in (min_batch, opt_batch, max_batch)):
        raise WearspecError(f"batch profile: expected positive integers, got min={min_batch} opt={opt_batch} "
                            f"max={max_batch}")
    if not min_batch <= opt_batch <= max_batch:
        raise WearspecError(f"batch profile: expected min <= opt <= max, got min={min_batch} opt={opt_batch} "
                            f"max={max_batch}")
    if dla and not min_batch == opt_batch == max_batch:
        raise WearspecError(f"batch profile: DLA needs a static batch (min = opt = max), got min={min_batch} "
                            f"opt={opt_batch} max={max_batch}; with a dynamic one every layer falls back to the GPU")


def should_keep_fp32(layer_type: str, layer_name: str) -> bool:
    """Whether a layer is LayerNorm-like (overflows in FP16): a normalization layer or a name that says so."""
    if layer_type.upper() == "NORMALIZATION":
        return True
    name = layer_name.lower()
    return any(marker in name for marker in FP32_NAME_MARKERS)


def _enum_name(value: Any) -> str:
    """``UNSUPPORTED_NODE`` of ``ErrorCode.UNSUPPORTED_NODE``: ``.name`` is a string in TensorRT 11 and
    cuda-python, a method in TensorRT 10's bindings."""
    name = getattr(value, "name", None)
    if callable(name):
        try:
            name = name()
        except Exception:
            name = None
    return str(name) if name else str(value).split(".")[-1]


def _call(obj: Any, method: str, default: Any = None) -> Any:
    fn = getattr(obj, method, None)
    try:
        return fn() if callable(fn) else default
    except Exception:
        return default


def format_parser_errors(errors: Iterable[Any], onnx_path: str | os.PathLike, version: str = "") -> str:
    """One line describing every ONNX parser error by node: index, name, operator, description, code.

    ``errors`` are ``tensorrt.ParserError`` objects (``node()``, ``desc()``, ``code()``; ``node_name()`` and
    ``node_operator()`` from TensorRT 10), or anything with the same methods.
    """
    parts, hints = [], []
    for i, err in enumerate(errors, 1):
        node = _call(err, "node", -1)
        name, op = _call(err, "node_name", "") or "", _call(err, "node_operator", "") or ""
        desc = " ".join(str(_call(err, "desc", "") or "no description").split())
        code = _enum_name(_call(err, "code", "")) or "?"
        loc = "graph" if node is None or node < 0 else f"node {node}"
        if name:
            loc += f" {name!r}"
        if op:
            loc += f" ({op})"
            if op in _OP_HINTS and _OP_HINTS[op] not in hints:
                hints.append(_OP_HINTS[op])
        parts.append(f"[{i}] {loc}: {desc} [{code}]")
    trt = f"TensorRT {version}" if version else "TensorRT"
    msg = f"{where(onnx_path)}: {trt} could not parse the ONNX model ({len(parts)} error(s)): " + "; ".join(parts)
    return msg + ("; hint: " + "; ".join(hints) if hints else "")


def check_engine_compatible(meta: dict, current: dict, engine_path: str | os.PathLike = "engine") -> None:
    """Refuse an engine built for another TensorRT version or GPU.

    meta: the engine's ``.json``; current: ``{'tensorrt', 'gpu', 'compute_capability'}`` of this device
    (:func:`current_environment`). Raises one-line :class:`WearspecError` saying what it was built for and
    what is here.
    """
    keys = ("tensorrt", "gpu", "compute_capability")
    missing = [k for k in keys if not meta.get(k)]
    if missing:
        raise WearspecError(f"{where(engine_meta_path(engine_path))}: lacks {missing}; cannot tell what the "
                            f"engine was built for; {REBUILD_HINT}")
    differs = [k for k in keys if str(meta[k]) != str(current.get(k))]
    if differs:
        def desc(d: dict) -> str:
            return f"TensorRT {d.get('tensorrt')} on {d.get('gpu')} (compute capability {d.get('compute_capability')})"
        raise WearspecError(
            f"{where(engine_path)}: built for {desc(meta)}, but this device has {desc(current)}; engines run "
            f"only with the TensorRT version and GPU that built them; {REBUILD_HINT}")


def check_precision_source(precision: str, major: int, has_fp16_tensors: bool, has_qdq: bool,
                           onnx_path: str | os.PathLike = "model.onnx") -> None:
    """Precision requests that the ONNX cannot honour, explained (INT8 always needs Q/DQ; 11.x FP16 an FP16 ONNX)."""
    if precision == "int8" and not has_qdq:
        raise WearspecError(f"{where(onnx_path)}: precision int8 needs a model with Q/DQ nodes (explicit "
                            "quantization, e.g. the bundle's model.int8.onnx); this one has none")
    if precision == "fp16" and major >= 11 and not has_fp16_tensors:
        raise WearspecError(
            f"{where(onnx_path)}: TensorRT {major} builds strongly typed networks (precision comes from the ONNX "
            "types; the FP16 builder flag is gone) and this model has no FP16 tensors; convert it first "
            "(python -m modelopt.onnx.autocast --onnx_path model.onnx --output_path model_fp16.onnx, keeping "
            "LayerNorm in FP32) and build from that file, or build with precision fp32")


def read_engine_meta(engine_path: str | os.PathLike) -> dict:
    meta_path = engine_meta_path(engine_path)
    if not meta_path.is_file():
        raise WearspecError(f"{where(meta_path)}: missing; without it the engine's TensorRT version and GPU are "
                            f"unknown; {REBUILD_HINT}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WearspecError(f"{where(meta_path)}: not valid JSON ({exc}); {REBUILD_HINT}") from None
    if not isinstance(meta, dict) or meta.get("format") != ENGINE_FORMAT:
        raise WearspecError(f"{where(meta_path)}: not a wearspec engine description; {REBUILD_HINT}")
    return meta
