"""Verifying a window store's shards: their SHA-256 against the manifest, and that every value is finite.

One streaming pass per shard (4 MiB blocks: hash, then ``np.isfinite`` on the same bytes), done once per
process for files that have not changed since (path, size, mtime): the training recipes verify the store
when they open it, and their DataLoader workers and later calls do not hash again. ``prepare`` verifies an
existing store before it calls it up to date; ``wearspec inspect --verify`` on request.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from wearspec.errors import WearspecError
from wearspec.utils.integrity import sha256_file

_VERIFIED: set[tuple] = set()  # shards verified in this process: (path, size, mtime_ns, recorded sha256)
_WARNED: set[str] = set()  # stores without checksums, already reported


def verify_store(store) -> dict:
    """Verify every shard of ``store`` (a :class:`~wearspec.data.store.WindowStore`). Raises a one-line
    :class:`WearspecError` naming the shard, and for NaN/Inf the window (subject, recording, start). A store
    written before checksums were recorded is scanned for NaN/Inf only, with one warning on stderr. Returns
    ``{"shards", "bytes", "checksums": bool, "seconds"}``."""
    t0, total = time.perf_counter(), 0
    dtype = np.dtype("<" + store.dtype.str[1:])
    row_bytes = store.n_channels * store.window * dtype.itemsize
    has_sums = all(s[2] for s in store._shards)
    if not has_sums and str(store.path) not in _WARNED:
        _WARNED.add(str(store.path))
        print(f"wearspec: warning: {store.path}: the store records no checksums (written by an older wearspec); its "
              "shards are checked for NaN/Inf only (prepare it again to add them)", file=sys.stderr)
    for k, (f, _, want) in enumerate(store._shards):
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns, want)
        if key not in _VERIFIED:
            scan = _FiniteScan(dtype)
            got = sha256_file(f, each=scan)
            if want and got != want:
                raise WearspecError(f"{f}: checksum mismatch (sha256 {got[:12]}…, manifest.json records {want[:12]}…); "
                                    "the shard was damaged after it was written")
            if scan.bad is not None:
                raise WearspecError(f"{f}: {_window(store, k, scan.bad // row_bytes)} holds NaN/Inf; the store is "
                                    "damaged: prepare it again")
            _VERIFIED.add(key)
        total += st.st_size
    return {"shards": len(store._shards), "bytes": total, "checksums": has_sums, "seconds": time.perf_counter() - t0}


class _FiniteScan:
    """Called with each block of a shard: remembers the byte offset of the first non-finite value."""

    def __init__(self, dtype: np.dtype):
        self.dtype, self.pos, self.bad = dtype, 0, None

    def __call__(self, block) -> None:
        if self.bad is None:
            ok = np.isfinite(np.frombuffer(block, self.dtype))
            if not ok.all():
                self.bad = self.pos + int(np.argmin(ok)) * self.dtype.itemsize
        self.pos += len(block)


def _window(store, shard: int, row: int) -> str:
    i = int(store._first_rows[shard]) + row
    return (f"window {i} (subject {store.subject_names[store.subjects[i]]}, recording "
            f"{store.recording_names[store.recordings[i]]}, start {store.starts[i]:g} s)")
