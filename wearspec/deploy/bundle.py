"""Writing deploy bundles: a folder with the ONNX model(s) and ``bundle.json``, published atomically.

The format and its one parser are in :mod:`wearspec.deploy.runtime.schema` (standard library only, so the
torch-free runtime reads bundles with the same rules); its names are re-exported here for the export side.

:func:`write_bundle` fills in each file's ``sha256`` and ``bytes``, validates the result with the same
rules as :func:`read_bundle`, and publishes the folder by renaming a complete temporary folder into place
(:func:`wearspec.utils.io.atomic_path`, fsynced), so a failed export leaves no bundle (and an existing bundle
stays until the new one is complete).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from wearspec.deploy.runtime.schema import BUNDLE_FILE, FORMAT, VERSION, read_bundle, sha256_file, validate_bundle
from wearspec.errors import WearspecError
from wearspec.utils.io import atomic_path

__all__ = ["BUNDLE_FILE", "FORMAT", "VERSION", "check_output", "read_bundle", "sha256_file", "validate_bundle",
           "write_bundle"]


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
    # checked again just before the rename: a folder that appeared meanwhile is refused, not replaced
    with atomic_path(out, is_dir=True, check=lambda: check_output(out, overwrite)) as tmp:
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
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out
