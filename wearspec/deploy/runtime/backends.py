"""Deploy bundles and the inference backends that run them.

A bundle is a folder written by ``wearspec export``::

    model.onnx          windows (B, C, T) float32  ->  probabilities (B, K) float32
    model.int8.onnx     optional, the same graph with INT8 Q/DQ nodes
    bundle.json         input spec (channels, rate, window, hop), labels, checksums

Every backend has the same small interface (:class:`Backend`):

* ``infer(windows)``: ``(B, C, T)`` float32 → ``(B, K)`` float32 class probabilities; batches larger than the
  backend's ``max_batch`` are split, smaller than ``min_batch`` padded;
* ``input_shape`` ``(C, T)``, ``labels`` (K names), ``spec`` (the :class:`BundleSpec`, when known).

:class:`OnnxRuntimeBackend` runs anywhere (CPU); the TensorRT backend lives in :mod:`.trt`.
Only the standard library and numpy are imported at module level.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from wearspec.deploy.bundle import sha256_file  # standard library only, like this module
from wearspec.errors import WearspecError, where

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "wearspec-bundle"
BUNDLE_VERSIONS = (1,)
ORT_PRECISIONS = ("fp32", "int8")
TRT_PRECISIONS = ("fp16", "int8", "fp32")
BACKENDS = ("onnxruntime", "tensorrt")


@dataclass(frozen=True)
class BundleSpec:
    """What the runtime needs from ``bundle.json`` (validated), plus the raw dict in ``raw``."""

    path: Path                      # the bundle folder
    input_name: str
    channels: tuple[str, ...]
    window: int                     # T, samples per window
    hop: int                        # samples between consecutive windows
    rate: float                     # Hz
    output_name: str
    labels: tuple[str, ...]
    onnx_file: Path
    onnx_sha256: str | None
    int8_file: Path | None
    int8_sha256: str | None
    opset: int | None
    raw: dict = field(repr=False, compare=False, default_factory=dict)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def input_shape(self) -> tuple[int, int]:
        return (len(self.channels), self.window)

    @property
    def frontend_nodes(self) -> tuple[str, ...]:
        """ONNX node names of the spectrogram front end (kept in FP32 by TensorRT builds)."""
        return tuple((self.raw.get("onnx") or {}).get("frontend_nodes") or ())

    def model_file(self, precision: str) -> tuple[Path, str | None]:
        """The ONNX file and its recorded sha256 for a precision (``int8`` → the Q/DQ model)."""
        if precision == "int8":
            if self.int8_file is None:
                raise WearspecError(
                    f"{where(self.path / BUNDLE_FILE)}: the bundle has no INT8 model ('int8' is null); "
                    "export it again with INT8 quantization, or use precision fp32/fp16")
            return self.int8_file, self.int8_sha256
        return self.onnx_file, self.onnx_sha256


def atomic_write(path: str | os.PathLike, data: bytes | bytearray | memoryview | Any) -> None:
    """Write bytes (or any buffer, e.g. ``IHostMemory``) to a temp name in the same folder, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(memoryview(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_bundle_spec(bundle: str | os.PathLike) -> BundleSpec:
    """Read and validate ``bundle.json`` from a bundle folder (or the json file itself).

    The whole format is checked by :func:`wearspec.deploy.bundle.read_bundle` (standard library only; the
    model checksums are verified when a backend opens a model); this keeps what the runtime needs.
    Raises :class:`WearspecError` naming the file and the field on anything missing or inconsistent.
    """
    try:
        from wearspec.deploy.bundle import read_bundle
    except ImportError:   # a trimmed runtime-only install: check the runtime's fields only
        read_bundle = None
    path = Path(bundle)
    folder = path.parent if path.is_file() else path
    json_path = folder / BUNDLE_FILE
    if read_bundle is not None:
        raw = dict(read_bundle(folder, verify=False))
        raw.pop("dir", None)
        return parse_bundle_dict(raw, folder, json_path)
    if not folder.is_dir():
        raise WearspecError(f"{where(folder)}: no such bundle folder (expected a folder written by "
                            "`wearspec export` holding model.onnx and bundle.json)")
    if not json_path.is_file():
        raise WearspecError(f"{where(json_path)}: missing; this folder is not a wearspec deploy bundle")
    try:
        raw = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WearspecError(f"{where(json_path)}: not valid JSON ({exc})") from None
    return parse_bundle_dict(raw, folder, json_path)


def parse_bundle_dict(raw: Any, folder: Path, source: Path | None = None) -> BundleSpec:
    """Validate a parsed ``bundle.json`` dict; ``folder`` resolves the model file names."""
    src = source or folder / BUNDLE_FILE

    def fail(field_name: str, expected: str, got: Any = None) -> WearspecError:
        tail = "" if got is None else f", got {got!r}"
        return WearspecError(f"{where(src, field_name)}: expected {expected}{tail}")

    def section(name: str) -> dict:
        value = raw.get(name)
        if not isinstance(value, dict):
            raise fail(name, "an object", value)
        return value

    if not isinstance(raw, dict):
        raise fail("top level", "a JSON object", type(raw).__name__)
    if raw.get("format") != BUNDLE_FORMAT:
        raise fail("format", repr(BUNDLE_FORMAT), raw.get("format"))
    if raw.get("version") not in BUNDLE_VERSIONS:
        raise fail("version", f"one of {list(BUNDLE_VERSIONS)} (a newer wearspec wrote this bundle?)",
                   raw.get("version"))
    inp, out, onnx_sec = section("input"), section("output"), section("onnx")

    shape = inp.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) for s in shape)
            and shape[0] == -1):
        raise fail("input.shape", "[-1, C, T] (three integers, the batch axis dynamic)", shape)
    channels = inp.get("channels")
    if not (isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels)):
        raise fail("input.channels", "a non-empty list of channel names", channels)
    if shape[1] != len(channels):
        raise fail("input.shape", f"C = {len(channels)} (the number of input.channels)", shape)
    window = inp.get("window", shape[2])
    if not (isinstance(window, int) and window > 0 and window == shape[2]):
        raise fail("input.window", f"a positive integer equal to input.shape[2] = {shape[2]}", window)
    hop = inp.get("hop")
    if not (isinstance(hop, int) and hop > 0):
        raise fail("input.hop", "a positive integer (samples)", hop)
    rate = inp.get("rate")
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0):
        raise fail("input.rate", "a positive number (Hz)", rate)
    if inp.get("dtype", "float32") != "float32":
        raise fail("input.dtype", "'float32'", inp.get("dtype"))
    labels = out.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise fail("output.labels", "a non-empty list of class names", labels)

    def model_entry(sec: dict, name: str, default: str) -> tuple[Path, str | None]:
        fname = sec.get("file", default)
        if not isinstance(fname, str) or not fname or Path(fname).name != fname:
            raise fail(f"{name}.file", "a file name inside the bundle folder", fname)
        digest = sec.get("sha256")
        if digest is not None and not (isinstance(digest, str) and len(digest) == 64):
            raise fail(f"{name}.sha256", "a 64-character hex digest", digest)
        file = folder / fname
        if not file.is_file():
            raise WearspecError(f"{where(file)}: missing, but {where(src, name + '.file')} names it")
        return file, digest

    onnx_file, onnx_sha = model_entry(onnx_sec, "onnx", "model.onnx")
    int8_file = int8_sha = None
    if raw.get("int8") is not None:
        int8_file, int8_sha = model_entry(section("int8"), "int8", "model.int8.onnx")
    opset = onnx_sec.get("opset")
    return BundleSpec(
        path=folder, input_name=str(inp.get("name", "windows")), channels=tuple(channels), window=window,
        hop=hop, rate=float(rate), output_name=str(out.get("name", "probabilities")), labels=tuple(labels),
        onnx_file=onnx_file, onnx_sha256=onnx_sha, int8_file=int8_file, int8_sha256=int8_sha,
        opset=opset if isinstance(opset, int) else None, raw=raw)


def verify_model_file(file: Path, expected_sha256: str | None) -> str:
    """Hash ``file``; refuse it when ``bundle.json`` recorded another digest. Returns the digest."""
    digest = sha256_file(file)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise WearspecError(
            f"{where(file)}: sha256 {digest[:12]}… does not match the {expected_sha256[:12]}… recorded in "
            f"{BUNDLE_FILE}; the model was changed after export; export the bundle again")
    return digest


class Backend:
    """Common interface of the inference backends. Subclasses implement :meth:`_infer_batch`."""

    name = "backend"
    precision = "fp32"
    min_batch = 1
    max_batch: int | None = None    # None: any batch size

    def __init__(self, input_shape: tuple[int, int], labels: Sequence[str], spec: BundleSpec | None = None):
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        self.labels = tuple(labels)
        self.spec = spec

    def infer(self, windows: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of raw windows.

        windows: (B, C, T) float array (converted to contiguous float32). Returns (B, K) float32.
        """
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if x.ndim == 2 and x.shape == self.input_shape:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != self.input_shape:
            raise WearspecError(
                f"{self.name}: expected windows of shape (B, {self.input_shape[0]}, {self.input_shape[1]}) "
                f"(batch, channels, samples), got {tuple(x.shape)}")
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        step = self.max_batch or n
        parts = []
        for start in range(0, n, step):
            part = x[start:start + step]
            short = self.min_batch - part.shape[0]
            if short > 0:   # pad up to the engine's smallest batch, drop the padding afterwards
                part = np.concatenate([part, np.zeros((short,) + part.shape[1:], np.float32)])
            parts.append(np.asarray(self._infer_batch(part), dtype=np.float32)[:part.shape[0] - max(short, 0)])
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if out.shape != (n, len(self.labels)):
            raise WearspecError(f"{self.name}: model returned shape {tuple(out.shape)}, expected "
                                f"({n}, {len(self.labels)}) (batch, classes)")
        return out

    def _infer_batch(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        """Backend facts for reports and benchmark headers."""
        return {"backend": self.name, "precision": self.precision, "input_shape": list(self.input_shape),
                "classes": len(self.labels), "max_batch": self.max_batch}

    def close(self) -> None:
        """Release resources (device memory, sessions). Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


def default_engine_path(bundle_dir: str | os.PathLike, precision: str) -> Path:
    """Where ``wearspec engine build`` writes the engine for a precision: ``BUNDLE/model.<precision>.engine``."""
    return Path(bundle_dir) / f"model.{precision}.engine"


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
