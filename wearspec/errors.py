"""The one exception type that wearspec raises for bad input.

The CLI prints it on one line and exits non-zero. Build messages with :func:`where` so that every
error names the file, the position in it and what was expected.
"""

from __future__ import annotations

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
