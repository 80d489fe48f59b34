"""TensorRT engines from deploy bundles: build on the device, run with named I/O tensors.

Works with TensorRT 10.x (JetPack 6: 10.3) and 11.x; imports ``tensorrt`` and cuda-python lazily.

Build (:func:`build_engine`, :func:`build_engine_from_bundle`): ONNX parser (every parser error reported by
node), one optimisation profile over the batch axis (min/opt/max), a workspace limit, a timing cache loaded
and saved across builds (written atomically), then ``BUNDLE/model.<precision>.engine`` plus
``model.<precision>.engine.json`` holding the TensorRT version, GPU name and compute capability, precision,
batch profile, model checksum and build time. Precision:

* TensorRT 10.x (weakly typed): ``fp16`` sets ``BuilderFlag.FP16``; ``int8`` needs the Q/DQ model
  (``model.int8.onnx``: explicit quantization) and sets ``INT8`` + ``FP16``; with ``keep_layernorm_fp32``
  LayerNorm-like layers and the front end's layers (bundle ``onnx.frontend_nodes``; |X|² nears the FP16
  range) are pinned to FP32 (``layer.precision`` + ``OBEY_PRECISION_CONSTRAINTS``);
* TensorRT 11.x (always strongly typed, precision flags removed): precision comes from the ONNX tensor types.
  ``fp16`` needs an FP16 ONNX (e.g. ``python -m modelopt.onnx.autocast``) and ``int8`` needs Q/DQ nodes.

Run (:class:`TensorRTBackend`): refuses an engine whose ``.json`` names another TensorRT version or GPU, then
``deserialize_cuda_engine``, ``set_input_shape``, ``set_tensor_address`` on cudaMalloc'd buffers,
``execute_async_v3`` on a CUDA stream; no legacy bindings API (binding indices, ``execute_v2``).

The checks that need no TensorRT (versions, profiles, parser errors, engine descriptions) are in
:mod:`wearspec.deploy.runtime.trt_checks`; the names used from here are imported here too.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from wearspec.deploy.runtime.base import TRT_PRECISIONS, Backend, default_engine_path
from wearspec.deploy.runtime.schema import BundleSpec, read_bundle_spec, sha256_file, verify_model_file
from wearspec.deploy.runtime.trt_checks import (ENGINE_FORMAT, REBUILD_HINT, _enum_name, check_engine_compatible,
                                                 check_precision_source, check_profile, engine_meta_path,
                                                 format_parser_errors, read_engine_meta, should_keep_fp32, trt_major)
from wearspec.errors import WearspecError, where
from wearspec.utils.io import atomic_write


# ----------------------------------------------------------------------------- TensorRT / CUDA access
def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise WearspecError("TensorRT is not installed: on a Jetson it comes with JetPack (python3 -c 'import "
                            "tensorrt'); elsewhere pip install 'wearspec[tensorrt]'") from None
    return trt


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise WearspecError("cuda-python is not installed: pip install cuda-python matching the device's "
                                "CUDA (12.x on JetPack 6)") from None
    return cudart


def _cuda(cudart, result: tuple, what: str):
    """Unpack a cuda-python ``(error, *values)`` tuple, raising on any error."""
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        text = cudart.cudaGetErrorString(err)
        text = text[1] if isinstance(text, tuple) else text
        text = text.decode() if isinstance(text, bytes) else str(text)
        raise WearspecError(f"CUDA {what} failed: {_enum_name(err)} ({text})")
    return values[0] if len(values) == 1 else (values or None)


def current_environment(device: int = 0) -> dict:
    """This device as an engine.json would describe it: TensorRT version, GPU name, compute capability."""
    trt, cudart = _import_trt(), _import_cudart()
    props = _cuda(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    name = (name.decode("utf-8", "replace") if isinstance(name, (bytes, bytearray)) else str(name)).strip("\x00 ")
    return {"tensorrt": trt.__version__, "gpu": name, "compute_capability": f"{props.major}.{props.minor}"}


_LOGGER: tuple = (None, None)  # (the tensorrt module, its logger)


def _logger(trt, verbose: bool = False):
    """The process's one ``trt.Logger`` (TensorRT keeps the first logger it is given and ignores, with a
    warning, any other while objects made with the first are alive); ``verbose`` sets its severity."""
    global _LOGGER
    if _LOGGER[0] is not trt:
        _LOGGER = (trt, trt.Logger(trt.Logger.WARNING))
    logger = _LOGGER[1]
    logger.min_severity = trt.Logger.VERBOSE if verbose else trt.Logger.WARNING
    return logger


# ----------------------------------------------------------------------------- build
def _network_facts(trt, network) -> tuple[bool, bool]:
    """(has FP16 tensors, has Q/DQ layers) of a parsed network."""
    qdq = {"QUANTIZE", "DEQUANTIZE"}
    fp16, has_qdq = False, False
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        has_qdq |= _enum_name(layer.type) in qdq
        for j in range(layer.num_outputs):
            fp16 |= layer.get_output(j).dtype == trt.float16
    return fp16, has_qdq


_NEVER_PINNED = {"QUANTIZE", "DEQUANTIZE", "CAST", "CONSTANT", "SHAPE"}


def _pin_fp32(trt, network, keep: Iterable[str] = ()) -> list[str]:
    """Pin LayerNorm-like layers and the front end's layers (ONNX node names ``keep``, from the bundle) to FP32."""
    pinned, keep = [], tuple(keep)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = _enum_name(layer.type)
        floats = all(layer.get_output(j).dtype in (trt.float32, trt.float16) for j in range(layer.num_outputs))
        front = bool(keep) and (layer.name or "").startswith(keep)
        if kind in _NEVER_PINNED or not floats or not (front or should_keep_fp32(kind, layer.name or "")):
            continue   # integer/shape layers keep their types; Q/DQ (named after the tensor they quantize) too
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *, precision: str = "fp16",
                 min_batch: int = 1, opt_batch: int = 8, max_batch: int = 32, workspace_mb: int = 1024,
                 timing_cache: str | os.PathLike | None = None, keep_layernorm_fp32: bool = True,
                 input_name: str | None = None, spec: BundleSpec | None = None, dla_core: int | None = None,
                 verbose: bool = False) -> dict:
    """Build a TensorRT engine from an ONNX model with a dynamic batch axis; returns the engine.json dict.

    The engine and ``<engine>.json`` are written atomically; nothing is left behind on failure.
    ``timing_cache``: file loaded before (if present) and saved after the build, so rebuilds take seconds.
    ``dla_core``: build for that DLA core with GPU fallback (10.x, fp16/int8 only, static batch: min = opt = max).
    """
    if precision not in TRT_PRECISIONS:
        raise WearspecError(f"precision must be one of {list(TRT_PRECISIONS)}, got {precision!r}")
    check_profile(min_batch, opt_batch, max_batch, dla=dla_core is not None)
    if dla_core is not None and precision == "fp32":
        raise WearspecError("DLA runs FP16 or INT8 only: build for DLA with precision fp16 or int8")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise WearspecError(f"{where(onnx_path)}: no such ONNX file")
    trt = _import_trt()
    major = trt_major(trt.__version__)
    env = current_environment()
    started = time.perf_counter()

    logger = _logger(trt, verbose)
    builder = trt.Builder(logger)
    network, parser = _parse_onnx(trt, builder, logger, onnx_path, major)  # the parser owns the weights: keep it
    wanted, (c, t) = _batch_input(network, onnx_path, input_name or (spec.input_name if spec else None))
    has_fp16, has_qdq = _network_facts(trt, network)
    check_precision_source(precision, major, has_fp16, has_qdq, onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(wanted, (min_batch, c, t), (opt_batch, c, t), (max_batch, c, t))
    config.add_optimization_profile(profile)
    pinned = _set_precision(trt, config, network, major, precision, keep_layernorm_fp32,
                            getattr(spec, "frontend_nodes", ()))
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    timing_cache = Path(timing_cache) if timing_cache is not None else None
    cache = _load_timing_cache(config, timing_cache) if timing_cache is not None else None

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise WearspecError(f"{where(onnx_path)}: TensorRT {trt.__version__} failed to build the engine "
                            f"(precision {precision}); the TensorRT log above says why")
    meta = {
        "format": ENGINE_FORMAT, "version": 1,
        "tensorrt": trt.__version__, "gpu": env["gpu"], "compute_capability": env["compute_capability"],
        "precision": precision, "strongly_typed": major >= 11, "fp32_layers": pinned,
        "profile": {"input": wanted, "min": [min_batch, c, t], "opt": [opt_batch, c, t], "max": [max_batch, c, t]},
        "workspace_mb": int(workspace_mb), "dla_core": dla_core,
        "onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path),
        "bundle_sha256": (spec.model_file(precision)[1] if spec else None),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_time_s": round(time.perf_counter() - started, 3),
        "timing_cache": str(timing_cache) if timing_cache is not None else None,
    }
    if spec is not None:
        meta["input"] = {"name": spec.input_name, "shape": [-1, c, t], "channels": list(spec.channels),
                         "rate": spec.rate, "window": spec.window, "hop": spec.hop}
        meta["output"] = {"name": spec.output_name, "labels": list(spec.labels)}
    _write_engine(engine_path, serialized, meta)
    if cache is not None:
        atomic_write(timing_cache, cache.serialize())
    return meta


def _parse_onnx(trt, builder, logger, onnx_path: Path, major: int) -> tuple[Any, Any]:
    """(network, parser) of an ONNX file: strongly typed on TensorRT 11 (always on there), weakly on 10.x;
    every parser error reported by node."""
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if major >= 11 and strongly is not None:  # always on in 11 (flag kept but ignored); 10.x stays weakly typed
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        raise WearspecError(format_parser_errors(
            [parser.get_error(i) for i in range(parser.num_errors)], onnx_path, trt.__version__))
    return network, parser


def _batch_input(network, onnx_path: Path, wanted: str | None) -> tuple[str, tuple[int, int]]:
    """(name, (C, T)) of the network's windows input: ``wanted``, or its only input; shape [-1, C, T]."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    names = [x.name for x in inputs]
    wanted = wanted or (names[0] if len(names) == 1 else None)
    if wanted not in names:
        raise WearspecError(f"{where(onnx_path)}: expected one input{' named ' + repr(wanted) if wanted else ''}, "
                            f"the model has {names}")
    shape = tuple(inputs[names.index(wanted)].shape)
    if len(shape) != 3 or shape[0] != -1 or min(shape[1:]) < 1:
        raise WearspecError(f"{where(onnx_path)}: input {wanted!r} has shape {list(shape)}; expected [-1, C, T] "
                            "(dynamic batch, fixed channels and samples): export with a dynamic batch axis")
    return wanted, (shape[1], shape[2])


def _set_precision(trt, config, network, major: int, precision: str, keep_layernorm_fp32: bool,
                   frontend_nodes: Iterable[str]) -> list[str]:
    """The precision flags of 10.x (11.x takes precision from the ONNX types) → the layers pinned to FP32."""
    pinned: list[str] = []
    if major < 11:
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)   # scales come from the Q/DQ nodes (explicit quantization)
        if precision != "fp32" and keep_layernorm_fp32:
            pinned = _pin_fp32(trt, network, frontend_nodes)
            if pinned:
                config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # plain FP32, comparable with ONNX Runtime (TF32 is on by default)
    return pinned


def _load_timing_cache(config, path: Path):
    """The builder's timing cache, from ``path`` when it holds one this TensorRT and GPU accept, else empty."""
    cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    if cache is None or not config.set_timing_cache(cache, False):  # another TensorRT/GPU's: start afresh
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _write_engine(engine_path: Path, serialized, meta: dict) -> None:
    """The engine and its ``.json`` description, each atomically; no engine is left without its description."""
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(engine_path, serialized)
    try:
        atomic_write(engine_meta_path(engine_path), (json.dumps(meta, indent=2) + "\n").encode())
    except BaseException:
        engine_path.unlink(missing_ok=True)
        raise


def build_engine_from_bundle(bundle_dir: str | os.PathLike, precision: str = "fp16",
                             engine_path: str | os.PathLike | None = None, onnx_path: str | os.PathLike | None = None,
                             **kwargs: Any) -> dict:
    """:func:`build_engine` for a bundle: picks ``model.int8.onnx`` for int8, checks the recorded checksum,
    writes ``BUNDLE/model.<precision>.engine`` (default) and a timing cache ``BUNDLE/timing.cache``.

    onnx_path: build from another ONNX derived from the bundle's (e.g. the FP16 model that TensorRT 11
    needs for fp16); the engine still records the bundle's checksum.
    """
    if precision not in TRT_PRECISIONS:
        raise WearspecError(f"precision must be one of {list(TRT_PRECISIONS)}, got {precision!r}")
    spec = read_bundle_spec(bundle_dir)
    onnx_file, digest = spec.model_file(precision)
    if onnx_path is None:
        verify_model_file(onnx_file, digest)
    else:
        onnx_file = Path(onnx_path)
    kwargs.setdefault("timing_cache", spec.path / "timing.cache")
    target = Path(engine_path) if engine_path is not None else default_engine_path(spec.path, precision)
    return build_engine(onnx_file, target, precision=precision, spec=spec, **kwargs)


# ----------------------------------------------------------------------------- run
class TensorRTBackend(Backend):
    """Runs a serialized engine on the GPU; ``infer`` as every :class:`Backend` ((B, C, T) → (B, K)).

    spec: the bundle (labels, input spec, and the model checksum the engine must have been built from);
    without it they come from the engine's ``.json``. check: refuse engines built for another TensorRT/GPU.
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, spec: BundleSpec | None = None, device: int = 0,
                 check: bool = True):
        self._cudart = None
        self._buffers: list = []
        self._stream = None
        engine_path = Path(engine_path)
        meta = read_engine_meta(engine_path)
        trt, cudart = _import_trt(), _import_cudart()
        if check:
            check_engine_compatible(meta, current_environment(device), engine_path)
        if spec is not None and meta.get("bundle_sha256") and meta.get("precision") in TRT_PRECISIONS:
            expected = spec.model_file(meta["precision"])[1]
            if expected and expected != meta["bundle_sha256"]:
                raise WearspecError(f"{where(engine_path)}: built from another model than the one in "
                                    f"{spec.path} (checksums differ); {REBUILD_HINT}")
        if spec is None and not isinstance(meta.get("output"), dict):
            raise WearspecError(f"{where(engine_meta_path(engine_path))}: no labels; pass the bundle")
        labels = spec.labels if spec is not None else tuple(meta["output"]["labels"])
        self.meta, self.engine_path, self.precision = meta, engine_path, str(meta.get("precision", "?"))
        self._trt, self._cudart = trt, cudart
        _cuda(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")

        self._logger = _logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise WearspecError(f"{where(engine_path)}: TensorRT {trt.__version__} could not deserialize the "
                                f"engine; {REBUILD_HINT}")
        self._context = self._engine.create_execution_context()
        eng = self._engine
        names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
        ins = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        want_out = spec.output_name if spec is not None else meta["output"].get("name")
        if len(ins) != 1 or len(outs) != 1:  # execute_async_v3 needs an address for every I/O tensor
            raise WearspecError(f"{where(engine_path)}: expected one input and one output (a wearspec bundle's "
                                f"windows → probabilities), got inputs {ins}, outputs {outs}")
        self._in, self._out = ins[0], outs[0]
        if want_out and want_out != self._out:
            raise WearspecError(f"{where(engine_path)}: the engine's output is {self._out!r}, the bundle's "
                                f"{want_out!r}; {REBUILD_HINT}")
        shape = tuple(eng.get_tensor_shape(self._in))
        lo, _, hi = (tuple(s) for s in eng.get_tensor_profile_shape(self._in, 0))
        super().__init__((shape[1], shape[2]), labels, spec)
        if spec is not None and self.input_shape != spec.input_shape:
            raise WearspecError(f"{where(engine_path)}: engine input (C, T) = {self.input_shape} but the bundle "
                                f"says {spec.input_shape}; {REBUILD_HINT}")
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        self._in_dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(self._in)))
        self._out_dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(self._out)))

        # Device buffers sized for the profile's largest batch, bound once by name.
        if not self._context.set_input_shape(self._in, hi):
            raise WearspecError(f"{where(engine_path)}: TensorRT rejected input shape {hi}")
        out_max = tuple(self._context.get_tensor_shape(self._out))
        self._stream = _cuda(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        for name, nbytes in ((self._in, int(np.prod(hi)) * self._in_dtype.itemsize),
                             (self._out, int(np.prod(out_max)) * self._out_dtype.itemsize)):
            ptr = _cuda(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._buffers.append(ptr)
            if not self._context.set_tensor_address(name, int(ptr)):
                raise WearspecError(f"{where(engine_path)}: TensorRT rejected the address of tensor {name!r}")

    def _infer_batch(self, x: np.ndarray) -> np.ndarray:
        cudart, ctx = self._cudart, self._context
        x = np.ascontiguousarray(x, dtype=self._in_dtype)
        if not ctx.set_input_shape(self._in, x.shape):
            raise WearspecError(f"{self.engine_path}: TensorRT rejected input shape {x.shape} "
                                f"(profile batch {self.min_batch}..{self.max_batch})")
        out = np.empty(tuple(ctx.get_tensor_shape(self._out)), self._out_dtype)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda(cudart, cudart.cudaMemcpyAsync(self._buffers[0], x.ctypes.data, x.nbytes, h2d, self._stream),
              "cudaMemcpyAsync (host to device)")
        if not ctx.execute_async_v3(int(self._stream)):
            raise WearspecError(f"{self.engine_path}: TensorRT execute_async_v3 failed (see the log above)")
        _cuda(cudart, cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[1], out.nbytes, d2h, self._stream),
              "cudaMemcpyAsync (device to host)")
        _cuda(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return out.astype(np.float32, copy=False)

    def describe(self) -> dict:
        keys = ("tensorrt", "gpu", "compute_capability", "profile", "built_at")
        return dict(super().describe(), engine=self.engine_path.name, **{k: self.meta.get(k) for k in keys})

    def close(self) -> None:
        cudart = self._cudart
        if cudart is None:
            return
        for ptr in self._buffers:
            cudart.cudaFree(ptr)
        self._buffers = []
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = self._engine = None
        self._cudart = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here (no tensorrt, no cuda-python, no CUDA GPU), or None when it can."""
    try:
        import tensorrt  # noqa: F401  (only whether it imports)
    except ImportError:
        return "tensorrt is not installed"
    try:
        cudart = _import_cudart()
    except WearspecError:
        return "cuda-python is not installed"
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # driver missing
        return f"CUDA is not usable ({exc})"
    if err != cudart.cudaError_t.cudaSuccess:  # e.g. cudaErrorInsufficientDriver: cuda-python newer than the driver
        return f"CUDA is not usable ({_enum_name(err)}; cuda-python must match the driver's CUDA major version)"
    if count < 1:
        return "no CUDA GPU"
    return None

