"""The ONNX graph of an export: ``torch.onnx.export`` with a fallback exporter, onnxslim, and the checks of the
graph's I/O contract.

``windows`` [batch, C, T] float32 in, ``probabilities`` [batch, K] float32 out, only the batch axis dynamic.
The TorchScript exporter (``dynamo=False``) is tried first: it writes opset 17 for every model family (ViT,
Swin, SepTr, CNN) in torch 2.14. The dynamo exporter is the fallback; it may silently keep opset 18 (timm's
Swin), so the written opset is always checked and down-converted or refused.
"""

from __future__ import annotations

import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import onnx
import torch
from torch import Tensor, nn

from wearspec.deploy.opset import opset_version
from wearspec.errors import WearspecError

INPUT_NAME, OUTPUT_NAME = "windows", "probabilities"
EXPORTERS = ("auto", "torchscript", "dynamo")


@contextmanager
def export_mode(module: nn.Module, fused_attn: bool | None = None) -> Iterator[None]:
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
            with export_mode(module), torch.no_grad():
                torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                                  dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        else:  # dynamo: Swin needs the explicit attention path (see SpectrogramBackbone.set_fused_attn)
            with export_mode(module, fused_attn=False):
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
                errors.append(f"{kind}: {type(e).__name__}: {first_line(e)}")
                continue
        written = opset_version(model)
        if written != opset:  # the dynamo exporter keeps 18 where it has no opset-17 translation
            try:
                model = onnx.version_converter.convert_version(model, opset)
                onnx.checker.check_model(model)  # the converter can write nodes invalid at the target opset
            except Exception as e:
                errors.append(f"{kind}: wrote opset {written} instead of {opset} and could not be converted "
                              f"({first_line(e)}); ask for opset {written}")
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
        return model, f"onnxslim failed ({type(e).__name__}: {first_line(e)}); graph left as exported"
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
        raise WearspecError(f"export: the ONNX checker refuses the graph: {first_line(e)}") from None
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


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (300 characters at most), for one-line errors."""
    text = str(e).strip()
    return (text.splitlines() or [type(e).__name__])[0][:300]
