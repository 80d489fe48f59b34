"""``wearspec prepare``: run a reader, cut windows, write the store atomically.

The same :class:`~wearspec.data.windowing.WindowSpec` applies to every reader. Re-running with the
same inputs and settings finds the finished store (after verifying its checksums) and does nothing; a
folder holding a different store is an error unless ``store.overwrite`` is set. The output folder is locked
for the whole run (:func:`wearspec.utils.integrity.output_lock`): a second ``prepare`` into it stops at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from wearspec import __version__
from wearspec.config import to_dict
from wearspec.data.chunked import RecordingStream, cut_stream
from wearspec.data.readers import get_reader
from wearspec.data.readers.config import (AudioConfig, Capture24Config, DaphnetConfig, DeviceConfig, GenericConfig,
                                          Pamap2Config, SyntheticConfig, UciHarConfig)
from wearspec.data.store import StoreConfig, StoreWriter, WindowStore, check_output
from wearspec.data.windowing import WindowSpec, cut_windows
from wearspec.errors import WearspecError
from wearspec.utils.integrity import output_lock


@dataclass
class PrepareConfig:
    """``wearspec prepare``: a dataset in its native format → a window store. ``window`` and ``store``
    apply to every reader; each reader reads its own section (:mod:`wearspec.data.readers.config`)."""

    window: WindowSpec = field(default_factory=WindowSpec)
    store: StoreConfig = field(default_factory=StoreConfig)
    generic: GenericConfig = field(default_factory=GenericConfig)
    pamap2: Pamap2Config = field(default_factory=Pamap2Config)
    capture24: Capture24Config = field(default_factory=Capture24Config)
    daphnet: DaphnetConfig = field(default_factory=DaphnetConfig)
    ucihar: UciHarConfig = field(default_factory=UciHarConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    # many input files (generic tables, device files): one store part per file, merged (wearspec.data.parts)
    jobs: int = 1  # worker processes
    shard: str = ""  # i/n: this machine's share of the sorted file list
    keep_going: bool = False  # skip (and list) files that fail instead of stopping

    @property
    def by_file(self) -> bool:
        """Whether the input is prepared file by file (:mod:`wearspec.data.parts`)."""
        return self.jobs != 1 or bool(self.shard) or self.keep_going


def fingerprint(reader: str, cfg: PrepareConfig, inputs: list[Path], source_meta: dict | None = None) -> str:
    """Hash of the reader, its settings, what it reports about the data (``Source.meta``, e.g. a
    generator version) and the input files (path, size, mtime in ns)."""
    settings = {"reader": reader, "window": to_dict(cfg.window), "dtype": cfg.store.dtype, "source": source_meta}
    section = getattr(cfg, reader, None)  # the reader's own config section, when it has one
    if section is not None:
        settings[reader] = to_dict(section)
    files = []
    for p in sorted(inputs):
        st = p.stat()
        files.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"settings": settings, "files": files}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def prepare(
    reader: str,
    input_path: str | os.PathLike | None,
    output: str | os.PathLike,
    cfg: PrepareConfig,
    *,
    progress: bool | None = None,
) -> tuple[WindowStore, bool]:
    """Build a store from ``input_path`` with ``reader``. Returns (store, reused_existing). With ``jobs``,
    ``shard`` or ``keep_going`` set, file by file as parts of one store (:mod:`wearspec.data.parts`)."""
    cfg.window.validate()
    path = Path(input_path) if input_path is not None else None
    if path is not None and not path.exists():
        raise WearspecError(f"{path}: input not found")
    with output_lock(output):
        if cfg.by_file:
            from wearspec.data.parts import prepare_parts

            return prepare_parts(reader, path, output, cfg, prepare_store, progress=progress)
        return prepare_store(reader, path, output, cfg, progress=progress)


def prepare_store(reader: str, path: Path | None, output: str | os.PathLike, cfg: PrepareConfig, *,
                  progress: bool | None = None) -> tuple[WindowStore, bool]:
    """One store from everything ``reader`` finds at ``path`` (checked to exist)."""
    source = get_reader(reader).open_source(path, cfg)
    fp = fingerprint(reader, cfg, source.inputs, source.meta)
    if check_output(output, fp, cfg.store.overwrite):
        return WindowStore(output), True
    spec = cfg.window
    meta = {
        "reader": reader,
        "input": str(path) if path is not None else None,
        "window_s": spec.length_s,
        "hop_s": spec.hop_s,
        "nan_policy": spec.nan_policy,
        "label_policy": spec.label_policy,
        "wearspec_version": __version__,
        **source.meta,
    }
    show = sys.stderr.isatty() if progress is None else progress
    with StoreWriter(
        output,
        channels=source.channels,
        rate=spec.rate,
        window=spec.window,
        hop=spec.hop,
        label_names=source.label_names,
        dtype=cfg.store.dtype,
        shard_windows=cfg.store.shard_windows,
        fingerprint=fp,
        meta=meta,
        overwrite=cfg.store.overwrite,
    ) as writer:
        for item in tqdm(source.items, desc=f"prepare {reader}", unit="rec", disable=not show):
            if isinstance(item, RecordingStream):  # a long recording in chunks: bounded memory
                if item.rename is not None:
                    writer.rename_recording(*item.rename)
                parts = cut_stream(item, spec, len(source.channels))
            else:
                parts = [cut_windows(item, spec, len(source.channels))]
            for windows, starts, labels in parts:
                writer.add(windows, item.subject, item.recording, starts, labels, source=item.source,
                           split=item.split)
    return WindowStore(output), False
