"""Atomic output: write under a temporary name beside the target, flush it to disk, then rename.

A crash or an error part-way leaves the old target (or nothing) in place, never a half-written file
or folder; after the rename the data is on disk (fsync), so a power cut does not leave an empty file under
the real name. This is the one atomic writer of the package: checkpoints, bundles, reports and TensorRT
engines all go through :func:`atomic_path`. It imports only the standard library and numpy, so the
torch-free runtime (:mod:`wearspec.deploy.runtime`) uses it on a Jetson too. The file I/O below the window
store's reads lives here as well: positioned reads into a buffer (:func:`pread_into`) and how many files a
reader may keep open (:func:`open_file_budget`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from wearspec.errors import WearspecError

NPY_MAGIC = b"\x93NUMPY"


def _read_umask() -> int:
    mask = os.umask(0o022)  # os.umask only reads by setting; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, is_dir: bool = False,
                check: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    The temporary file (or every file of the temporary folder) is fsynced before the rename, and the parent
    folder after it. For a folder, an existing ``target`` is replaced only after the new one is complete, and
    ``check()`` runs just before the rename (it raises to refuse replacing what is there now, e.g. a folder
    that another process wrote meanwhile). On any exception the temporary path is removed and the exception
    propagates. The result gets the permissions a plain ``open``/``mkdir`` would give (0o666 / 0o777 less the
    umask), not ``mkstemp``'s private 0o600.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_UMASK)
            _fsync_tree(tmp)
        if check is not None:
            check()
        if is_dir:
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        else:
            os.replace(tmp, target)
        _fsync(target.parent)  # the rename itself
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk; a file system that cannot is left as it is."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file and folder below a folder (a bundle, a report folder)."""
    if path.is_dir():
        for root, _, names in os.walk(path):
            for name in names:
                _fsync(Path(root) / name)
            _fsync(Path(root))
    else:
        _fsync(path)


def atomic_write(path: str | os.PathLike, data: Any) -> None:
    """Write bytes (or any buffer, e.g. TensorRT's ``IHostMemory``) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(memoryview(data))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def jsonable(obj: Any) -> Any:
    """NaN/inf → None, numpy scalars → Python, drop values JSON cannot hold (tensors, bytes)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if _json_keep(v)}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj if _json_keep(v)]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_keep(v: Any) -> bool:
    return v is None or isinstance(v, (dict, list, tuple, str, int, float, bool, np.integer, np.floating, np.bool_))


def load_npy(path: str | os.PathLike, expected: str, mmap: bool = False) -> np.ndarray:
    """Read a ``.npy`` array without unpickling anything (memory-mapped when ``mmap``). A missing file, a
    folder, a file that is not a ``.npy`` (no NumPy header), a truncated one or one of Python objects is a
    :class:`WearspecError` naming the file and ``expected`` (e.g. ``'windows (n, C, T)'``)."""
    path = Path(path)
    if not path.is_file():
        raise WearspecError(f"{path}: {'is a folder' if path.is_dir() else 'no such file'}; expected a .npy "
                            f"file of {expected}")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(NPY_MAGIC))
        if magic != NPY_MAGIC:
            raise WearspecError(f"{path}: not a valid .npy file (no NumPy header); expected {expected}")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e) or "Python objects" in str(e):
            raise WearspecError(
                f"{path}: holds Python objects (dtype=object), which wearspec does not unpickle; save {expected} "
                f"with a numeric or string dtype (e.g. np.asarray(y, dtype=str))") from None
        raise WearspecError(f"{path}: unreadable or truncated .npy file, expected {expected} ({e})") from None
    except (OSError, EOFError) as e:
        raise WearspecError(f"{path}: unreadable or truncated .npy file, expected {expected} ({e})") from None


def open_file_budget() -> int:
    """Files a reader may keep open at once: half the process's soft limit of open files (the rest is the
    process's own), at least 16; 64 where the limit cannot be read."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 64
    return 1 << 20 if soft == resource.RLIM_INFINITY else max(16, soft // 2)


def pread_into(fd: int, buf: memoryview, offset: int) -> int:
    """Fill ``buf`` from ``fd`` at ``offset``; returns bytes read (short only at end of file)."""
    total = 0
    preadv = getattr(os, "preadv", None)
    while total < len(buf):
        if preadv is not None:
            n = preadv(fd, [buf[total:]], offset + total)
        else:  # platforms without preadv
            data = os.pread(fd, len(buf) - total, offset + total)
            n = len(data)
            buf[total : total + n] = data
        if n == 0:
            break
        total += n
    return total
