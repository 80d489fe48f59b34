"""Deploy bundles: a folder with the ONNX model(s) and ``bundle.json``, written atomically, read with checks.

Layout::

    <bundle>/model.onnx        windows (B, C, T) float32 → probabilities (B, K) float32 (opset 17, batch dynamic)
    <bundle>/model.int8.onnx   optional: the same graph with INT8 Q/DQ nodes
    <bundle>/bundle.json       what the runtime needs, and how the export was checked:

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

:func:`write_bundle` fills in each file's ``sha256`` and ``bytes``, validates the result with the same
rules as :func:`read_bundle`, and publishes the folder by renaming a complete temporary folder into place,
so a failed export leaves no bundle (and an existing bundle stays until the new one is complete).

This module imports only the standard library (json, hashlib, pathlib, …) and :mod:`wearspec.errors`:
the runtime reads bundles on a Jetson without torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from wearspec.errors import WearspecError
from wearspec.utils.io import atomic_path

FORMAT = "wearspec-bundle"
VERSION = 1
BUNDLE_FILE = "bundle.json"
MODEL_FILES = {"onnx": "model.onnx", "int8": "model.int8.onnx"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_output(output: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse an output folder that exists and is not empty, unless ``overwrite`` and it is a bundle
    (holds ``bundle.json``): a folder of anything else is never replaced."""
    path = Path(output)
    if not path.exists():
        return
    if not path.is_dir():
        raise WearspecError(f"{path}: output exists and is not a folder")
    if not any(path.iterdir()):
        return
    if not (path / BUNDLE_FILE).is_file():
        raise WearspecError(f"{path}: output folder is not empty and holds no deploy bundle; refusing to replace it")
    if not overwrite:
        raise WearspecError(f"{path}: a bundle exists already; pass overwrite=true to replace it")


def write_bundle(output: str | os.PathLike, meta: dict[str, Any], files: dict[str, bytes | str | os.PathLike],
                 overwrite: bool = False) -> Path:
    """Write ``files`` ({name: bytes or a path to copy}) and ``meta`` as ``bundle.json`` into the folder
    ``output``, atomically; returns the folder. Each ``meta`` section naming one of ``files`` in its
    ``"file"`` gets that file's ``sha256`` and ``bytes``. The finished ``bundle.json`` must pass
    :func:`validate_bundle`, else nothing is written."""
    out = Path(output)
    check_output(out, overwrite)
    for name in files:
        if Path(name).name != name or name == BUNDLE_FILE:
            raise WearspecError(f"bundle: file name {name!r} must be a plain name other than {BUNDLE_FILE}")
    with atomic_path(out, is_dir=True) as tmp:
        for name, content in files.items():
            if isinstance(content, (bytes, bytearray)):
                (tmp / name).write_bytes(content)
            else:
                shutil.copyfile(content, tmp / name)
        meta = json.loads(json.dumps(meta))  # a plain-JSON copy (fails early on non-JSON values)
        for section in meta.values():
            if isinstance(section, dict) and section.get("file") in files:
                section["sha256"] = sha256_file(tmp / section["file"])
                section["bytes"] = (tmp / section["file"]).stat().st_size
        validate_bundle(meta, tmp, out / BUNDLE_FILE)
        text = json.dumps(meta, indent=2, allow_nan=False) + "\n"
        with open(tmp / BUNDLE_FILE, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return out


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


def validate_bundle(meta: Any, folder: str | os.PathLike, source: str | os.PathLike | None = None,
                    verify: bool = True) -> None:
    """Check a ``bundle.json`` dict against the format (see the module docstring) and the files in
    ``folder``; raise :class:`WearspecError` ``"<source>: field <name>: expected …, got …"``."""
    folder = Path(folder)
    src = Path(source) if source is not None else folder / BUNDLE_FILE

    def bad(name: str, expected: str, got: Any = ...) -> WearspecError:
        tail = "" if got is ... else f", got {_short(got)}"
        return WearspecError(f"{src}: field {name}: expected {expected}{tail}")

    def section(name: str, optional: bool = False) -> dict | None:
        v = meta.get(name, ...)
        if optional and v is None:
            return None
        if not isinstance(v, dict):
            raise bad(name, "an object" + (" or null" if optional else ""), None if v is ... else v)
        return v

    if not isinstance(meta, dict):
        raise WearspecError(f"{src}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise bad("format", repr(FORMAT), meta.get("format"))
    if meta.get("version") != VERSION:
        raise bad("version", f"{VERSION} (this wearspec reads version {VERSION}; a newer one wrote it?)",
                  meta.get("version"))
    for key in ("wearspec_version", "created"):
        if not isinstance(meta.get(key), str):
            raise bad(key, "a string", meta.get(key))

    inp = section("input")
    if not _name(inp.get("name")):
        raise bad("input.name", "a non-empty string", inp.get("name"))
    shape = inp.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_int(s) for s in shape) and shape[0] == -1
            and shape[1] >= 1 and shape[2] >= 1):
        raise bad("input.shape", "[-1, C, T] with C, T ≥ 1 (only the batch axis dynamic)", shape)
    c, t = shape[1], shape[2]
    if inp.get("dtype") != "float32":
        raise bad("input.dtype", "'float32'", inp.get("dtype"))
    ch = inp.get("channels")
    if not (isinstance(ch, list) and len(ch) == c and all(_name(x) for x in ch) and len(set(ch)) == c):
        raise bad("input.channels", f"{c} distinct channel names (C of input.shape)", ch)
    if not (_num(inp.get("rate")) and inp["rate"] > 0):
        raise bad("input.rate", "a number > 0 (Hz)", inp.get("rate"))
    if inp.get("window") != t or not _int(inp.get("window")):
        raise bad("input.window", f"{t} (T of input.shape)", inp.get("window"))
    if not (_int(inp.get("hop")) and inp["hop"] >= 1):
        raise bad("input.hop", "an integer ≥ 1 (samples between windows)", inp.get("hop"))

    out = section("output")
    if not _name(out.get("name")):
        raise bad("output.name", "a non-empty string", out.get("name"))
    labels = out.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise bad("output.labels", "a non-empty list of class names", labels)
    if "shape" in out and out["shape"] != [-1, len(labels)]:
        raise bad("output.shape", f"[-1, {len(labels)}] (K = number of labels)", out["shape"])

    norm = section("normalization")
    mean, std = norm.get("mean"), norm.get("std")
    if (mean is None) != (std is None):
        raise bad("normalization.mean/std", "both null or both lists", [mean, std])
    if mean is not None:
        for key, v in (("mean", mean), ("std", std)):
            if not (isinstance(v, list) and len(v) == c and all(_num(x) and math.isfinite(x) for x in v)):
                raise bad(f"normalization.{key}", f"{c} finite numbers (one per channel)", v)
        if any(x <= 0 for x in std):
            raise bad("normalization.std", "positive numbers", std)
    if not isinstance(norm.get("where"), str):
        raise bad("normalization.where", "a string", norm.get("where"))
    section("frontend")
    model = section("model")
    for key in ("kind", "arch"):
        if not _name(model.get(key)):
            raise bad(f"model.{key}", "a non-empty string", model.get(key))
    if model.get("sha256") is not None and not _hex(model.get("sha256")):
        raise bad("model.sha256", "a 64-digit hex SHA-256 or null", model.get("sha256"))

    onnx_sec = section("onnx")
    if not (_int(onnx_sec.get("opset")) and onnx_sec["opset"] >= 1):
        raise bad("onnx.opset", "an integer", onnx_sec.get("opset"))
    if not isinstance(onnx_sec.get("ops"), dict):
        raise bad("onnx.ops", "an object {op type: count}", onnx_sec.get("ops"))
    _check_file(onnx_sec, "onnx", folder, bad, verify)
    int8 = section("int8", optional=True)
    if int8 is not None:
        if not isinstance(int8.get("method"), str):
            raise bad("int8.method", "a string", int8.get("method"))
        _check_file(int8, "int8", folder, bad, verify)
    parity = section("parity")
    for key in ("random", "thresholds"):
        if not isinstance(parity.get(key), dict):
            raise bad(f"parity.{key}", "an object", parity.get(key))
    if parity.get("real") is not None and not isinstance(parity["real"], dict):
        raise bad("parity.real", "an object or null", parity["real"])
    section("fp16", optional=True)


def _check_file(sec: dict, name: str, folder: Path, bad, verify: bool) -> None:
    fname = sec.get("file")
    if not (isinstance(fname, str) and fname and Path(fname).name == fname and fname != BUNDLE_FILE):
        raise bad(f"{name}.file", "a file name inside the bundle folder", fname)
    if not _hex(sec.get("sha256")):
        raise bad(f"{name}.sha256", "a 64-digit lower-case hex SHA-256", sec.get("sha256"))
    f = folder / fname
    if not f.is_file():
        raise WearspecError(f"{f}: missing, but the bundle's field {name}.file names it")
    if verify and sha256_file(f) != sec["sha256"]:
        raise WearspecError(f"{f}: SHA-256 differs from the bundle's field {name}.sha256 ({sec['sha256'][:12]}…); "
                            "the file was changed after export; export the bundle again")


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
