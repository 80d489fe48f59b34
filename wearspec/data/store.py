"""The window store: fixed-size windows (C, T) in memmap shards plus a manifest.

Layout of a store folder::

    manifest.json        format version, channels, rate, window, hop, dtype, label names,
                         subject and recording names, shard table, counts, provenance
    index.npz            per window: subject, recording (codes into the names), start (s), label
                         (-1 = unlabelled), split (predefined split of the dataset: -1 none,
                         0 train, 1 val, 2 test); a few bytes per window
    shards/00000.bin     raw little-endian (n, C, T) arrays of ``dtype`` (float16 or float32)

The manifest records the SHA-256 of every shard (``shards[i].sha256``) and of the index (``index_sha256``).
Opening a store checks the index; :meth:`WindowStore.verify` checks the shards (and that every value is
finite) once per process, before training reads them, and ``wearspec inspect --verify`` on request.

Shards are plain arrays that ``np.memmap`` can open (:meth:`WindowStore.shard_array`); training
reads go through positioned reads of just the requested rows, so the store is never loaded whole
into RAM and resident memory does not grow with the store's size. A
:class:`StoreWriter` writes into a hidden temporary folder and renames it into place on success, so
a failed ``prepare`` leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from wearspec.errors import WearspecError
from wearspec.utils.integrity import sha256_file
from wearspec.utils.io import open_file_budget, pread_into

FORMAT = "wearspec-window-store"
VERSION = 1
DTYPES = ("float16", "float32")
SPLITS = ("train", "val", "test")
FLOAT16_MAX = 65504.0


@dataclass
class StoreConfig:
    """Window-store output (the ``store.*`` settings of ``prepare``): element type, windows per shard
    file, replace an existing store."""

    dtype: str = "float32"
    shard_windows: int = 4096
    overwrite: bool = False

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise WearspecError(f"store.dtype: expected float16 or float32, got {self.dtype!r}")
        if self.shard_windows < 1:
            raise WearspecError(f"store.shard_windows: expected ≥ 1, got {self.shard_windows}")


class StoreWriter:
    """Append windows, then :meth:`close` to publish the store atomically.

    Use as a context manager: an exception inside the ``with`` block discards everything written.
    ``fingerprint`` identifies what produced the store (reader, inputs, window spec); ``prepare``
    uses it to recognise an existing identical store. ``overwrite``: whether :meth:`close` may replace a
    window store at ``path``; without it, anything found there at close (e.g. written meanwhile by another
    process) is refused, never replaced.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        channels: Sequence[str],
        rate: float,
        window: int,
        hop: int,
        label_names: Sequence[str] = (),
        dtype: str = "float32",
        shard_windows: int = 4096,
        fingerprint: str = "",
        meta: dict | None = None,
        overwrite: bool = False,
    ):
        if dtype not in DTYPES:
            raise WearspecError(f"store.dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
        if shard_windows < 1:
            raise WearspecError(f"store.shard_windows: expected ≥ 1, got {shard_windows}")
        if len(set(channels)) != len(channels) or not channels:
            raise WearspecError(f"channels: expected distinct, non-empty channel names, got {list(channels)}")
        self.path = Path(path)
        self.channels = [str(c) for c in channels]
        self.rate, self.window, self.hop = float(rate), int(window), int(hop)
        self.label_names = [str(n) for n in label_names]
        self.dtype = np.dtype(dtype)
        self.shard_windows = int(shard_windows)
        self.fingerprint, self.meta = fingerprint, dict(meta or {})
        self.overwrite = overwrite
        self._made_parents = [p for p in reversed(self.path.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        (self._tmp / "shards").mkdir()
        self._subjects: dict[str, int] = {}
        self._recordings: dict[str, int] = {}
        self._cols: dict[str, list[np.ndarray]] = {"subject": [], "recording": [], "start": [], "label": [], "split": []}
        self._n = 0
        self._shard_file = None
        self._shard_hash = None
        self._shard_rows = 0
        self._shards: list[dict] = []
        self._closed = False

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _code(self, table: dict[str, int], name: str) -> int:
        return table.setdefault(str(name), len(table))

    def add(
        self,
        windows: np.ndarray,
        subject: str,
        recording: str,
        starts: np.ndarray,
        labels: np.ndarray | None = None,
        source: str = "",
        split: str | None = None,
    ) -> None:
        """Append windows (n, C, T) of one subject/recording with their start times (s) and labels.

        ``split`` marks a dataset's own predefined split (``train``/``val``/``test``) when it has one.
        """
        windows = np.asarray(windows)
        n = windows.shape[0] if windows.ndim == 3 else -1
        where = source or f"subject {subject}, recording {recording}"
        if windows.ndim != 3 or windows.shape[1:] != (len(self.channels), self.window):
            raise WearspecError(
                f"{where}: expected windows of shape (n, {len(self.channels)}, {self.window}), got {windows.shape}"
            )
        if n == 0:
            return
        if not np.isfinite(windows).all():
            raise WearspecError(f"{where}: windows hold NaN/Inf after the NaN policy was applied")
        if self.dtype == np.float16 and np.abs(windows).max() > FLOAT16_MAX:
            raise WearspecError(
                f"{where}: values up to {np.abs(windows).max():.3g} overflow float16; use store.dtype=float32"
            )
        labels = np.full(n, -1, np.int32) if labels is None else np.asarray(labels, dtype=np.int32)
        if labels.shape != (n,) or np.asarray(starts).shape != (n,):
            raise WearspecError(f"{where}: expected {n} labels and {n} start times")
        if labels.size and (labels.max() >= len(self.label_names) or labels.min() < -1):
            raise WearspecError(f"{where}: label code {int(labels.max())} has no name (labels: {self.label_names})")
        self._cols["subject"].append(np.full(n, self._code(self._subjects, subject), np.int32))
        self._cols["recording"].append(np.full(n, self._code(self._recordings, recording), np.int32))
        self._cols["start"].append(np.asarray(starts, dtype=np.float64))
        self._cols["label"].append(labels)
        if split is not None and split not in SPLITS:
            raise WearspecError(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}")
        self._cols["split"].append(np.full(n, -1 if split is None else SPLITS.index(split), np.int8))
        data = windows.astype(self.dtype, copy=False)
        pos = 0
        while pos < n:
            if self._shard_file is None:
                name = f"shards/{len(self._shards):05d}.bin"
                self._shard_file, self._shard_hash = open(self._tmp / name, "wb"), hashlib.sha256()
                self._shards.append({"file": name, "windows": 0})
                self._shard_rows = 0
            take = min(n - pos, self.shard_windows - self._shard_rows)
            block = np.ascontiguousarray(data[pos : pos + take]).astype("<" + self.dtype.str[1:]).tobytes()
            self._shard_file.write(block)
            self._shard_hash.update(block)
            self._shard_rows += take
            self._shards[-1]["windows"] = self._shard_rows
            pos += take
            if self._shard_rows == self.shard_windows:
                self._end_shard()
        self._n += n

    def rename_recording(self, old: str, new: str) -> None:
        """Rename a recording already written (its windows keep their code). Readers of long files name
        a recording before they know it will be split at a gap; its first part then becomes ``name#0``."""
        if old not in self._recordings or new in self._recordings:
            raise WearspecError(f"{self.path}: cannot rename recording {old!r} to {new!r} (unknown, or taken)")
        self._recordings = {(new if k == old else k): v for k, v in self._recordings.items()}

    def _end_shard(self) -> None:
        self._shard_file.close()
        self._shards[-1]["sha256"] = self._shard_hash.hexdigest()
        self._shard_file = self._shard_hash = None

    def abort(self) -> None:
        """Discard everything written so far."""
        if self._shard_file is not None:
            self._end_shard()
        shutil.rmtree(self._tmp, ignore_errors=True)
        for parent in reversed(self._made_parents):  # folders this writer created, deepest first
            try:
                parent.rmdir()
            except OSError:
                break
        self._closed = True

    def close(self) -> "WindowStore":
        """Write the manifest and index, then move the store into place."""
        if self._closed:
            raise RuntimeError("StoreWriter already closed")
        if self._shard_file is not None:
            self._end_shard()
        if self._n == 0:
            self.abort()
            raise WearspecError(f"{self.path}: no windows to write (every recording was too short or dropped by the NaN policy)")
        cols = {k: np.concatenate(v) for k, v in self._cols.items()}
        np.savez(self._tmp / "index.npz", **cols)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "channels": self.channels,
            "rate": self.rate,
            "window": self.window,
            "hop": self.hop,
            "dtype": self.dtype.name,
            "labels": self.label_names,
            "subjects": list(self._subjects),
            "recordings": list(self._recordings),
            "n_windows": self._n,
            "shard_windows": self.shard_windows,
            "shards": self._shards,
            "fingerprint": self.fingerprint,
            "meta": self.meta,
            "index_sha256": sha256_file(self._tmp / "index.npz"),
        }
        (self._tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            self._check_target()
        except WearspecError:
            self.abort()
            raise
        if self.path.exists() and any(self.path.iterdir()):
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            os.replace(self.path, old)
            os.replace(self._tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self._tmp, self.path)
        self._closed = True
        return WindowStore(self.path)

    def _check_target(self) -> None:
        """Just before the rename: refuse to replace what is at ``path`` now unless it is an empty folder, or a
        window store and ``overwrite`` is set (``check_output`` ran at the start; another process may have
        written the folder since)."""
        if not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir())):
            return
        if not self.overwrite:
            raise WearspecError(f"{self.path}: the output folder was filled while this store was written (by "
                                "another process?); refusing to replace it; nothing was written")
        if not (self.path / "manifest.json").is_file():
            raise WearspecError(f"{self.path}: folder holds files that are not a window store; refusing to "
                                "overwrite it; nothing was written")


def check_output(path: str | os.PathLike, fingerprint: str, overwrite: bool = False) -> bool:
    """Decide what to do with an output folder before writing a store.

    Returns True when ``path`` already holds a complete, intact (:meth:`WindowStore.verify`) store with the same
    ``fingerprint`` (nothing to do), False when it is free (absent or empty) or ``overwrite`` is set. Raises
    for a folder that holds something else, or a damaged store without ``overwrite``.
    """
    path = Path(path)
    if not path.exists():
        return False
    if not path.is_dir():
        raise WearspecError(f"{path}: output exists and is not a folder")
    if not any(path.iterdir()):
        return False
    manifest = path / "manifest.json"
    if not manifest.is_file():
        if overwrite:
            raise WearspecError(f"{path}: folder holds files that are not a window store; refusing to overwrite it")
        raise WearspecError(f"{path}: output folder is not empty and holds no window store")
    try:
        old = json.loads(manifest.read_text()).get("fingerprint")
    except (json.JSONDecodeError, AttributeError) as e:
        raise WearspecError(f"{manifest}: unreadable manifest ({e}); remove the folder or pass --overwrite") from None
    if old == fingerprint:
        try:
            WindowStore(path).verify()
            return True
        except WearspecError as e:
            if overwrite:
                return False
            raise WearspecError(f"{e}; pass --overwrite to prepare the store again") from None
    if overwrite:
        return False
    raise WearspecError(
        f"{path}: output folder already holds a different store (other inputs or settings); "
        "choose another folder or pass --overwrite"
    )


MAX_OPEN_SHARDS = open_file_budget()  # shard files a reading process keeps open at once


class WindowStore:
    """Read-only access to a store folder.

    Attributes: ``channels``, ``rate``, ``window`` (samples), ``hop`` (samples), ``label_names``,
    ``subject_names``, ``recording_names`` and per-window arrays ``subjects``, ``recordings``,
    ``starts``, ``labels`` (-1 = unlabelled), ``splits``. Windows are read on demand with :meth:`read`
    / :meth:`read_batch` as float32; files are opened lazily in each process.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise WearspecError(f"{self.path}: not a window store (no manifest.json)")
        try:
            m = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise WearspecError(f"{mpath}: invalid JSON at line {e.lineno}: {e.msg}") from None
        if m.get("format") != FORMAT:
            raise WearspecError(f"{mpath}: not a wearspec window store manifest (format={m.get('format')!r})")
        if m.get("version") != VERSION:
            raise WearspecError(f"{mpath}: store format version {m.get('version')} is not supported (expected {VERSION})")
        self.manifest = m
        self.channels: list[str] = m["channels"]
        self.rate = float(m["rate"])
        self.window, self.hop = int(m["window"]), int(m["hop"])
        self.dtype = np.dtype(m["dtype"])
        self.label_names: list[str] = m["labels"]
        self.subject_names: list[str] = m["subjects"]
        self.recording_names: list[str] = m["recordings"]
        self.shard_windows = int(m["shard_windows"])
        self.meta = m.get("meta", {})
        ipath = self.path / "index.npz"
        if m.get("index_sha256") and ipath.is_file() and sha256_file(ipath) != m["index_sha256"]:
            raise WearspecError(f"{ipath}: checksum mismatch (not the index recorded in manifest.json); the file "
                                "was damaged after it was written")
        try:
            with np.load(ipath) as z:
                self.subjects = z["subject"]
                self.recordings = z["recording"]
                self.starts = z["start"]
                self.labels = z["label"]
                self.splits = z["split"]
        except Exception as e:  # missing, a damaged zip (BadZipFile), a damaged array
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise WearspecError(f"{ipath}: missing or unreadable window index ({first})") from None
        n = int(m["n_windows"])
        if not all(len(a) == n for a in (self.subjects, self.recordings, self.starts, self.labels, self.splits)):
            raise WearspecError(f"{ipath}: index has a different length than manifest n_windows={n}")
        row_bytes = len(self.channels) * self.window * self.dtype.itemsize
        self._shards = []
        for s in m["shards"]:
            f = self.path / s["file"]
            size = f.stat().st_size if f.is_file() else -1
            if size != s["windows"] * row_bytes:
                raise WearspecError(
                    f"{f}: shard is missing or truncated (expected {s['windows'] * row_bytes} bytes, found {max(size, 0)})"
                )
            self._shards.append((f, int(s["windows"]), s.get("sha256")))
        self._first_rows = np.concatenate([[0], np.cumsum([s[1] for s in self._shards])])[:-1].astype(np.int64)
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    # -- pickling for DataLoader workers: file descriptors are re-opened in the worker -------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fds"] = {}
        return state

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def has_labels(self) -> bool:
        return bool(self.label_names) and bool((self.labels >= 0).any())

    def _fd(self, shard: int) -> int:
        """The shard's open descriptor; at most :data:`MAX_OPEN_SHARDS` stay open (least recently used closed
        first), so a store of thousands of shards reads under a limit of 1024 open files."""
        if self._pid != os.getpid():  # a forked DataLoader worker: open its own descriptors
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.pop(shard, None)
        if fd is None:
            while len(self._fds) >= MAX_OPEN_SHARDS:
                os.close(self._fds.pop(next(iter(self._fds))))
            fd = os.open(self._shards[shard][0], os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._fds[shard] = fd  # most recently used last
        return fd

    def shard_array(self, shard: int) -> np.memmap:
        """A read-only ``np.memmap`` (rows, C, T) of one shard, for users who want numpy views."""
        f, rows, _ = self._shards[shard]
        return np.memmap(f, dtype="<" + self.dtype.str[1:], mode="r", shape=(rows, self.n_channels, self.window))

    def read(self, i: int) -> np.ndarray:
        """One window (C, T) as float32 (a fresh, writable array)."""
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range 0..{len(self) - 1}")
        return self.read_batch(np.array([i]))[0]

    def read_batch(self, indices: Iterable[int]) -> np.ndarray:
        """Windows (B, C, T) as float32 in the given order.

        Rows are sorted by position and each run of consecutive rows is one positioned read
        (``pread``) into a preallocated buffer. Unlike touching a memmap, this keeps the process's
        resident memory flat however large the store is: the data passes through the OS page
        cache, not through pages mapped into the process.
        """
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices, dtype=np.int64)
        c, t = self.n_channels, self.window
        if idx.size == 0:
            return np.empty((0, c, t), dtype=np.float32)
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"window index out of range 0..{len(self) - 1}")
        shard = np.searchsorted(self._first_rows, idx, side="right") - 1  # shards may differ in size
        row = idx - self._first_rows[shard]
        order = np.lexsort((row, shard))
        s_sorted, r_sorted = shard[order], row[order]
        raw = np.empty((idx.size, c, t), dtype="<" + self.dtype.str[1:])
        new_run = np.ones(idx.size, dtype=bool)
        new_run[1:] = (s_sorted[1:] != s_sorted[:-1]) | (r_sorted[1:] != r_sorted[:-1] + 1)
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], idx.size)
        row_bytes = c * t * self.dtype.itemsize
        flat = raw.reshape(idx.size, -1).view(np.uint8)
        for a, b in zip(starts.tolist(), ends.tolist()):
            fd = self._fd(int(s_sorted[a]))
            want = (b - a) * row_bytes
            got = pread_into(fd, memoryview(flat[a:b]).cast("B"), int(r_sorted[a]) * row_bytes)
            if got != want:
                raise WearspecError(f"{self._shards[int(s_sorted[a])][0]}: short read ({got} of {want} bytes); store truncated?")
        out = np.empty((idx.size, c, t), dtype=np.float32)
        out[order] = raw
        return out

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    def verify(self) -> dict:
        """Check every shard against its SHA-256 in the manifest and that every value is finite
        (:func:`wearspec.data.verify.verify_store`: once per process, a one-line error naming the shard)."""
        from wearspec.data.verify import verify_store

        return verify_store(self)

    def summary(self) -> dict:
        """Counts per subject and per label (for ``wearspec inspect``)."""
        per_subject: dict[str, dict[str, int]] = {}
        names = self.label_names + ["(unlabelled)"]
        pairs = Counter(zip(self.subjects.tolist(), self.labels.tolist()))
        for (s, l), c in sorted(pairs.items()):
            per_subject.setdefault(self.subject_names[s], {})[names[l]] = c
        per_label = Counter(names[l] for l in self.labels.tolist())
        return {
            "path": str(self.path),
            "windows": len(self),
            "channels": self.channels,
            "rate_hz": self.rate,
            "window_samples": self.window,
            "hop_samples": self.hop,
            "dtype": self.dtype.name,
            "subjects": len(self.subject_names),
            "recordings": len(self.recording_names),
            "per_label": dict(sorted(per_label.items())),
            "per_subject": per_subject,
        }
