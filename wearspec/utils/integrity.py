"""Integrity of what wearspec writes: streaming checksums, checksum sidecars, and output-folder locks.

* :func:`sha256_file` hashes a file in 4 MiB blocks (SHA-256 runs at about 1 GB/s on one core, faster than
  the disk reads it follows). Stores record one digest per shard and one for ``index.npz``; bundles one per
  model file; checkpoints carry a sidecar ``<file>.sha256`` in the format of ``sha256sum`` (so
  ``sha256sum -c ckpt-00000100.pt.sha256`` checks one by hand).
* :func:`output_lock` holds an exclusive, non-blocking ``flock`` on ``.<name>.lock`` beside an output folder
  for as long as a command writes it; a second writer stops at once with one line naming the holder's pid.

Standard library only: the torch-free runtime (:mod:`wearspec.deploy.runtime`) imports this on a Jetson too.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator

from wearspec.errors import WearspecError

BLOCK = 4 << 20  # bytes per read while hashing
SIDECAR = ".sha256"


def sha256_file(path: str | os.PathLike, block: int = BLOCK, each: Callable[[bytes], None] | None = None) -> str:
    """Hex SHA-256 of a file, read in ``block``-byte pieces; ``each(piece)`` sees every piece (e.g. to scan
    values in the same pass)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(block)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            if each is not None:
                each(view[:n])
    return h.hexdigest()


# ---------------------------------------------------------------------------- sidecars
def sidecar_path(path: str | os.PathLike) -> Path:
    """``<file>.sha256`` beside ``path``."""
    p = Path(path)
    return p.with_name(p.name + SIDECAR)


def write_sidecar(path: str | os.PathLike, digest: str | None = None) -> str:
    """Record the SHA-256 of ``path`` (computed unless given) in its sidecar, atomically; returns it."""
    from wearspec.utils.io import write_text

    digest = digest or sha256_file(path)
    write_text(sidecar_path(path), f"{digest}  {Path(path).name}\n")
    return digest


def recorded_digest(path: str | os.PathLike) -> str | None:
    """The digest in ``path``'s sidecar, or None when it has none (written before checksums were kept)."""
    side = sidecar_path(path)
    try:
        text = side.read_text(encoding="ascii").split()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise WearspecError(f"{side}: unreadable checksum file ({e})") from None
    if not text or len(text[0]) != 64 or any(c not in "0123456789abcdef" for c in text[0]):
        raise WearspecError(f"{side}: expected a 64-digit SHA-256, got {(text or [''])[0][:70]!r}")
    return text[0]


def check_sidecar(path: str | os.PathLike) -> bool:
    """Verify ``path`` against its sidecar: True when it matches, False when there is no sidecar (unverified);
    a mismatch raises a one-line :class:`WearspecError` naming the file."""
    want = recorded_digest(path)
    if want is None:
        return False
    got = sha256_file(path)
    if got != want:
        raise WearspecError(f"{path}: checksum mismatch (sha256 {got[:12]}…, recorded {want[:12]}… in "
                            f"{sidecar_path(path).name}); the file was damaged after it was written")
    return True


# ---------------------------------------------------------------------------- locks
_HELD: dict[Path, list] = {}  # lock file → [fd, depth]: a process may take the lock of a folder it holds again


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of an output folder: ``.<name>.lock`` beside it (the folder itself is replaced by renames)."""
    p = Path(os.path.abspath(folder))
    return p.with_name(f".{p.name}.lock")


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, enabled: bool = True) -> Iterator[None]:
    """Hold the exclusive lock of the output ``folder`` for the ``with`` block; a folder that another process
    holds raises ``"<folder>: is being written by another wearspec process (pid N)"`` at once. With
    ``enabled`` false (ranks other than 0 of a distributed run) nothing is taken. Re-entrant in a process. The
    lock file is removed on release, and the parent folders it had to create when they are still empty."""
    lock = lock_path(folder)
    if not enabled or lock in _HELD:
        if enabled:
            _HELD[lock][1] += 1
        try:
            yield
        finally:
            if enabled:
                _HELD[lock][1] -= 1
        return
    made = [p for p in reversed(lock.parents) if not p.exists()]
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, folder)
    _HELD[lock] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[lock]
        with contextlib.suppress(OSError):
            lock.unlink()  # still holding it: a process that opened this file finds it replaced and retries
        os.close(fd)
        for parent in reversed(made):
            try:
                parent.rmdir()
            except OSError:
                break


def _acquire(lock: Path, folder: str | os.PathLike) -> int:
    """Open and ``flock`` the lock file without waiting; retry when its holder removed it meanwhile."""
    import fcntl

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise WearspecError(f"{lock}: cannot lock the output folder ({e.strerror})") from None
            raise WearspecError(f"{folder}: is being written by another wearspec process (pid "
                                f"{_holder(lock)}); wait for it to finish or choose another output folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the previous holder removed the file between our open and our lock


def _holder(lock: Path) -> str:
    try:
        return lock.read_text().strip() or "unknown"
    except OSError:
        return "unknown"
