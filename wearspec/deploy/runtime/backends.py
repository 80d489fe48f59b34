"""Opening a deploy bundle with an inference backend: ONNX Runtime here, TensorRT in :mod:`.trt`.

:func:`load_backend` picks the backend by name; both share the :class:`~.base.Backend` interface
(``infer((B, C, T) float32) -> (B, K) float32``). :class:`OnnxRuntimeBackend` runs anywhere (CPU). The bundle
is read with :func:`~wearspec.deploy.runtime.schema.read_bundle_spec` (the one ``bundle.json`` parser).
Only the standard library and numpy are imported at module level; TensorRT only when asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from wearspec.deploy.runtime.base import BACKENDS, ORT_PRECISIONS, TRT_PRECISIONS, Backend, default_engine_path
from wearspec.deploy.runtime.schema import BUNDLE_FILE, read_bundle_spec, verify_model_file
from wearspec.errors import WearspecError, where


class OnnxRuntimeBackend(Backend):
    """Runs a bundle's ONNX model with ONNX Runtime on the CPU.

    precision: ``fp32`` (model.onnx) or ``int8`` (model.int8.onnx, Q/DQ). threads: intra-op threads
    (None: ONNX Runtime's default). providers: ONNX Runtime execution providers (default CPU only).
    """

    name = "onnxruntime"

    def __init__(self, bundle_dir: str | os.PathLike, precision: str = "fp32", threads: int | None = None,
                 providers: Sequence[str] | None = None, verify: bool = True):
        if precision not in ORT_PRECISIONS:
            hint = " (fp16 is a TensorRT precision: use the tensorrt backend)" if precision == "fp16" else ""
            raise WearspecError(f"onnxruntime backend: precision must be one of {list(ORT_PRECISIONS)}, "
                                f"got {precision!r}{hint}")
        spec = read_bundle_spec(bundle_dir)
        super().__init__(spec.input_shape, spec.labels, spec)
        self.precision = precision
        model, digest = spec.model_file(precision)
        if verify:
            verify_model_file(model, digest)
        try:
            import onnxruntime as ort
        except ImportError:
            raise WearspecError("the onnxruntime backend needs the onnxruntime package "
                                "(pip install onnxruntime)") from None
        opts = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise WearspecError(f"onnxruntime backend: threads must be >= 1, got {threads}")
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(str(model), sess_options=opts,
                                                 providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise WearspecError(f"{where(model)}: ONNX Runtime could not load the model: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self.model_file = model
        inputs = self._session.get_inputs()
        names = [i.name for i in inputs]
        if len(inputs) != 1 or names[0] != spec.input_name:
            raise WearspecError(f"{where(model)}: expected one input named {spec.input_name!r} "
                                f"(from {BUNDLE_FILE}), the model has {names}")
        outputs = [o.name for o in self._session.get_outputs()]
        if spec.output_name not in outputs:
            raise WearspecError(f"{where(model)}: no output named {spec.output_name!r} "
                                f"(from {BUNDLE_FILE}); the model has {outputs}")
        self._input_name, self._output_name = spec.input_name, spec.output_name
        self.threads, self._ort_version = threads, ort.__version__

    def _infer_batch(self, x: np.ndarray) -> np.ndarray:
        return self._session.run([self._output_name], {self._input_name: x})[0]

    def describe(self) -> dict:
        return dict(super().describe(), threads=self.threads, model=self.model_file.name,
                    onnxruntime=self._ort_version)

    def close(self) -> None:
        self._session = None


def load_backend(bundle_dir: str | os.PathLike, backend: str = "onnxruntime", engine: str | os.PathLike | None = None,
                 precision: str | None = None, threads: int | None = None) -> Backend:
    """Open a bundle with the chosen backend.

    backend ``onnxruntime``: precision fp32 (default) or int8. backend ``tensorrt``: runs ``engine`` (default
    ``BUNDLE/model.<precision>.engine``, precision default fp16), refusing engines built for another
    TensorRT version or GPU, or from another model than this bundle's.
    """
    if backend == "onnxruntime":
        if engine is not None:
            raise WearspecError("an engine file needs backend 'tensorrt' (onnxruntime runs the bundle's ONNX)")
        return OnnxRuntimeBackend(bundle_dir, precision=precision or "fp32", threads=threads)
    if backend == "tensorrt":
        from wearspec.deploy.runtime.trt import TensorRTBackend

        spec = read_bundle_spec(bundle_dir)
        precision = precision or "fp16"
        if precision not in TRT_PRECISIONS:
            raise WearspecError(f"tensorrt backend: precision must be one of {list(TRT_PRECISIONS)}, "
                                f"got {precision!r}")
        path = Path(engine) if engine is not None else default_engine_path(spec.path, precision)
        if not path.is_file():
            raise WearspecError(f"{where(path)}: no such engine; build it on this device with "
                                f"`wearspec engine build {spec.path} --precision {precision}`")
        return TensorRTBackend(path, spec=spec)
    raise WearspecError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
