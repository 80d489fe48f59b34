"""The ``bundle.json`` schema: the one parser, used by ``wearspec export`` (before it publishes a bundle) and by
the runtime (before it opens one).

A bundle is a folder::

    model.onnx          windows (B, C, T) float32 -> probabilities (B, K) float32 (opset 17, batch dynamic)
    model.int8.onnx     optional: the same graph with INT8 Q/DQ nodes
    bundle.json         what the runtime needs, and how the export was checked:

    {"format": "wearspec-bundle", "version": 1, "wearspec_version": "0.1.0", "created": "<UTC ISO time>",
     "input": {"name": "windows", "shape": [-1, C, T], "dtype": "float32", "channels": [...], "rate": Hz,
               "window": T, "hop": samples between windows},
     "output": {"name": "probabilities", "shape": [-1, K], "labels": [K names]},
     "normalization": {"mean": [C] | null, "std": [C] | null, "where": "..."},
     "frontend": {SpectrogramFrontend.config()},
     "model": {"kind", "arch", "source_checkpoint", "sha256" (of the checkpoint file) | null, ...},
     "onnx": {"file": "model.onnx", "sha256", "bytes", "opset", "exporter", "ops": {op: count}, ...},
     "int8": {"file": "model.int8.onnx", "sha256", "bytes", "method", "accuracy": {...}, ...} | null,
     "parity": {"random": {...}, "real": {...} | null, "thresholds": {...}},
     "fp16": {...} | null}

:func:`validate_bundle` checks a dict against this (and the model files in the folder), :func:`read_bundle`
reads and checks a folder, :func:`read_bundle_spec` gives the runtime's typed view (:class:`BundleSpec`).
Only the standard library is imported: the runtime reads bundles on a Jetson without torch (and without
PyYAML).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wearspec.errors import WearspecError, where
from wearspec.utils.integrity import sha256_file

FORMAT = "wearspec-bundle"
VERSION = 1
BUNDLE_FILE = "bundle.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------------- reading
def read_bundle(path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """Read and validate a bundle folder (or its ``bundle.json``) → the ``bundle.json`` dict plus ``"dir"``
    (the absolute bundle folder, a string). With ``verify`` the model files' SHA-256 must match the recorded
    ones. Every problem is a one-line :class:`WearspecError` naming the file and the field."""
    p = Path(path)
    folder = p.parent if p.name == BUNDLE_FILE and p.is_file() else p
    jpath = folder / BUNDLE_FILE
    if not folder.is_dir():
        raise WearspecError(f"{folder}: no such bundle folder")
    if not jpath.is_file():
        raise WearspecError(f"{jpath}: missing; {folder} is not a wearspec deploy bundle")
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise WearspecError(f"{jpath}, line {e.lineno} column {e.colno}: invalid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WearspecError(f"{jpath}: unreadable ({e})") from None
    validate_bundle(meta, folder, jpath, verify=verify)
    meta["dir"] = str(folder.resolve())
    return meta


@dataclass(frozen=True)
class BundleSpec:
    """The runtime's view of a validated ``bundle.json``, plus the raw dict in ``raw``."""

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


def read_bundle_spec(bundle: str | os.PathLike) -> BundleSpec:
    """Read and validate ``bundle.json`` of a bundle folder (or the json file itself) → :class:`BundleSpec`.

    The model checksums are verified when a backend opens a model (:func:`verify_model_file`), not here.
    """
    raw = read_bundle(bundle, verify=False)
    raw.pop("dir")
    folder = _given_folder(bundle)
    inp, out, onnx_sec, int8 = raw["input"], raw["output"], raw["onnx"], raw.get("int8")
    return BundleSpec(
        path=folder, input_name=inp["name"], channels=tuple(inp["channels"]), window=inp["window"],
        hop=inp["hop"], rate=float(inp["rate"]), output_name=out["name"], labels=tuple(out["labels"]),
        onnx_file=folder / onnx_sec["file"], onnx_sha256=onnx_sec["sha256"],
        int8_file=folder / int8["file"] if int8 else None, int8_sha256=int8["sha256"] if int8 else None,
        opset=onnx_sec["opset"], raw=raw)


def _given_folder(bundle: str | os.PathLike) -> Path:
    """The bundle folder as the caller named it (relative paths stay relative in messages)."""
    p = Path(bundle)
    return p.parent if p.name == BUNDLE_FILE and p.is_file() else p


def verify_model_file(file: Path, expected_sha256: str | None) -> str:
    """Hash ``file``; refuse it when ``bundle.json`` recorded another digest. Returns the digest."""
    digest = sha256_file(file)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise WearspecError(
            f"{where(file)}: sha256 {digest[:12]}… does not match the {expected_sha256[:12]}… recorded in "
            f"{BUNDLE_FILE}; the model was changed after export; export the bundle again")
    return digest


# ---------------------------------------------------------------------------- validation
class _Fields:
    """Field access with one-line errors ``"<source>: field <name>: expected …, got …"``."""

    def __init__(self, meta: dict, src: Path):
        self.meta, self.src = meta, src

    def bad(self, name: str, expected: str, got: Any = ...) -> WearspecError:
        tail = "" if got is ... else f", got {_short(got)}"
        return WearspecError(f"{self.src}: field {name}: expected {expected}{tail}")

    def section(self, name: str, optional: bool = False) -> dict | None:
        v = self.meta.get(name, ...)
        if optional and v is None:
            return None
        if not isinstance(v, dict):
            raise self.bad(name, "an object" + (" or null" if optional else ""), None if v is ... else v)
        return v


def validate_bundle(meta: Any, folder: str | os.PathLike, source: str | os.PathLike | None = None,
                    verify: bool = True) -> None:
    """Check a ``bundle.json`` dict against the format (see the module docstring) and the files in
    ``folder`` (with ``verify``, their SHA-256 too); raise :class:`WearspecError`
    ``"<source>: field <name>: expected …, got …"``."""
    folder = Path(folder)
    src = Path(source) if source is not None else folder / BUNDLE_FILE
    if not isinstance(meta, dict):
        raise WearspecError(f"{src}: expected a JSON object, got {type(meta).__name__}")
    f = _Fields(meta, src)
    if meta.get("format") != FORMAT:
        raise f.bad("format", repr(FORMAT), meta.get("format"))
    if meta.get("version") != VERSION:
        raise f.bad("version", f"{VERSION} (this wearspec reads version {VERSION}; a newer one wrote it?)",
                    meta.get("version"))
    for key in ("wearspec_version", "created"):
        if not isinstance(meta.get(key), str):
            raise f.bad(key, "a string", meta.get(key))
    c = _check_input(f)
    _check_output(f)
    _check_normalization(f, c)
    f.section("frontend")
    _check_model(f)
    _check_models(f, folder, verify)
    _check_parity(f)
    f.section("fp16", optional=True)


def _check_input(f: _Fields) -> int:
    """The ``input`` section (shape [-1, C, T], channels, rate, window, hop) → C."""
    inp = f.section("input")
    if not _name(inp.get("name")):
        raise f.bad("input.name", "a non-empty string", inp.get("name"))
    shape = inp.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_int(s) for s in shape) and shape[0] == -1
            and shape[1] >= 1 and shape[2] >= 1):
        raise f.bad("input.shape", "[-1, C, T] with C, T ≥ 1 (only the batch axis dynamic)", shape)
    c, t = shape[1], shape[2]
    if inp.get("dtype") != "float32":
        raise f.bad("input.dtype", "'float32'", inp.get("dtype"))
    ch = inp.get("channels")
    if not (isinstance(ch, list) and len(ch) == c and all(_name(x) for x in ch) and len(set(ch)) == c):
        raise f.bad("input.channels", f"{c} distinct channel names (C of input.shape)", ch)
    if not (_num(inp.get("rate")) and inp["rate"] > 0):
        raise f.bad("input.rate", "a number > 0 (Hz)", inp.get("rate"))
    if inp.get("window") != t or not _int(inp.get("window")):
        raise f.bad("input.window", f"{t} (T of input.shape)", inp.get("window"))
    if not (_int(inp.get("hop")) and inp["hop"] >= 1):
        raise f.bad("input.hop", "an integer ≥ 1 (samples between windows)", inp.get("hop"))
    return c


def _check_output(f: _Fields) -> None:
    out = f.section("output")
    if not _name(out.get("name")):
        raise f.bad("output.name", "a non-empty string", out.get("name"))
    labels = out.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise f.bad("output.labels", "a non-empty list of class names", labels)
    if "shape" in out and out["shape"] != [-1, len(labels)]:
        raise f.bad("output.shape", f"[-1, {len(labels)}] (K = number of labels)", out["shape"])


def _check_normalization(f: _Fields, c: int) -> None:
    """Per-channel mean/std (both null, or ``c`` finite numbers each, std > 0) and where they apply."""
    norm = f.section("normalization")
    mean, std = norm.get("mean"), norm.get("std")
    if (mean is None) != (std is None):
        raise f.bad("normalization.mean/std", "both null or both lists", [mean, std])
    if mean is not None:
        for key, v in (("mean", mean), ("std", std)):
            if not (isinstance(v, list) and len(v) == c and all(_num(x) and math.isfinite(x) for x in v)):
                raise f.bad(f"normalization.{key}", f"{c} finite numbers (one per channel)", v)
        if any(x <= 0 for x in std):
            raise f.bad("normalization.std", "positive numbers", std)
    if not isinstance(norm.get("where"), str):
        raise f.bad("normalization.where", "a string", norm.get("where"))


def _check_model(f: _Fields) -> None:
    model = f.section("model")
    for key in ("kind", "arch"):
        if not _name(model.get(key)):
            raise f.bad(f"model.{key}", "a non-empty string", model.get(key))
    if model.get("sha256") is not None and not _hex(model.get("sha256")):
        raise f.bad("model.sha256", "a 64-digit hex SHA-256 or null", model.get("sha256"))


def _check_models(f: _Fields, folder: Path, verify: bool) -> None:
    """The ``onnx`` section and the optional ``int8`` one, with the files they name."""
    onnx_sec = f.section("onnx")
    if not (_int(onnx_sec.get("opset")) and onnx_sec["opset"] >= 1):
        raise f.bad("onnx.opset", "an integer", onnx_sec.get("opset"))
    if not isinstance(onnx_sec.get("ops"), dict):
        raise f.bad("onnx.ops", "an object {op type: count}", onnx_sec.get("ops"))
    _check_file(f, onnx_sec, "onnx", folder, verify)
    int8 = f.section("int8", optional=True)
    if int8 is not None:
        if not isinstance(int8.get("method"), str):
            raise f.bad("int8.method", "a string", int8.get("method"))
        _check_file(f, int8, "int8", folder, verify)


def _check_parity(f: _Fields) -> None:
    parity = f.section("parity")
    for key in ("random", "thresholds"):
        if not isinstance(parity.get(key), dict):
            raise f.bad(f"parity.{key}", "an object", parity.get(key))
    if parity.get("real") is not None and not isinstance(parity["real"], dict):
        raise f.bad("parity.real", "an object or null", parity["real"])


def _check_file(f: _Fields, sec: dict, name: str, folder: Path, verify: bool) -> None:
    fname = sec.get("file")
    if not (isinstance(fname, str) and fname and Path(fname).name == fname and fname != BUNDLE_FILE):
        raise f.bad(f"{name}.file", "a file name inside the bundle folder", fname)
    if not _hex(sec.get("sha256")):
        raise f.bad(f"{name}.sha256", "a 64-digit lower-case hex SHA-256", sec.get("sha256"))
    path = folder / fname
    if not path.is_file():
        raise WearspecError(f"{path}: missing, but the bundle's field {name}.file names it")
    if verify and sha256_file(path) != sec["sha256"]:
        raise WearspecError(f"{path}: SHA-256 differs from the bundle's field {name}.sha256 "
                            f"({sec['sha256'][:12]}…); the file was changed after export; export the bundle again")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _name(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def _hex(v: Any) -> bool:
    return isinstance(v, str) and bool(_HEX64.match(v))
