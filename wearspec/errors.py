"""The one exception type that wearspec raises for bad input.

The CLI prints it on one line and exits non-zero. Build messages with :func:`where` so that every
error names the file, the position in it and what was expected.
"""

from __future__ import annotations

import errno
import os


class WearspecError(Exception):
    """Bad input or an impossible request, described in one line for the user."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def where(path: str | os.PathLike | None, position: str | None = None) -> str:
    """Format a location: ``'data/x.csv'`` or ``'data/x.csv, line 12'``."""
    if path is None:
        return position or "<input>"
    return f"{os.fspath(path)}, {position}" if position else os.fspath(path)


# errno values of a file that cannot be written (or reached), and what to tell the user
_WRITE_ERRORS = {
    errno.ENOSPC: "cannot write: the disk is full (no space left on the device)",
    errno.EDQUOT: "cannot write: the disk quota is exceeded",
    errno.EFBIG: "cannot write: the file is too large for the file system",
    errno.EROFS: "cannot write: the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file is in the way of a folder",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENAMETOOLONG: "the name is too long",
}


def write_error(e: BaseException, path: str | os.PathLike | None = None) -> WearspecError | None:
    """A one-line :class:`WearspecError` for an output that could not be written (a full disk, a quota, a
    read-only file system, no permission, a file where a folder must be), naming the file (``e.filename``, else
    ``path``); None for any other error. ``torch.save``'s RuntimeError for a failed write counts too."""
    if isinstance(e, OSError) and e.errno in _WRITE_ERRORS:
        reason, name = _WRITE_ERRORS[e.errno], e.filename or path
    elif isinstance(e, RuntimeError) and ("file write failed" in str(e) or "No space left" in str(e)):
        reason, name = "cannot write: the disk is full or not writable (the write failed)", path
    else:
        return None
    return WearspecError(f"{where(name, None) if name is not None else 'output'}: {reason}")
