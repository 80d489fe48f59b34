"""Dataset readers: native files → :class:`Source` (channels, label names, recordings).

Each reader module defines ``open_source(path, cfg) -> Source`` where ``cfg`` is the
:class:`~wearspec.data.prepare.PrepareConfig`. ``Source.items`` yields
:class:`~wearspec.data.windowing.Recording` or :class:`~wearspec.data.windowing.WindowBatch`
objects lazily, so a large dataset streams into the store one recording at a time. Readers check
the files (missing, empty, truncated, wrong columns, non-numeric values, unknown labels) and raise
:class:`~wearspec.errors.WearspecError` naming the file and row; windowing, resampling and the NaN
policy are applied afterwards by :mod:`wearspec.data.prepare`, the same for every reader. Each
reader's settings section is in :mod:`wearspec.data.readers.config`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from wearspec.data.windowing import Recording, WindowBatch
from wearspec.errors import WearspecError

READERS = {
    "synthetic": "wearspec.data.synthetic",
    "generic": "wearspec.data.readers.generic",
    "pamap2": "wearspec.data.readers.pamap2",
    "capture24": "wearspec.data.readers.capture24",
    "daphnet": "wearspec.data.readers.daphnet",
    "wisdm": "wearspec.data.readers.wisdm",
    "ucihar": "wearspec.data.readers.ucihar",
    "audio": "wearspec.data.readers.audio",
    "device": "wearspec.data.readers.device",
    "uea": "wearspec.data.readers.uea",
}


@dataclass
class Source:
    """What a reader found: the channel order, label names and a lazy stream of recordings."""

    name: str
    channels: list[str]
    label_names: list[str]
    items: Iterable[Recording | WindowBatch]
    inputs: list[Path] = field(default_factory=list)  # files that determine the content
    meta: dict = field(default_factory=dict)


def get_reader(name: str):
    """The reader module for ``name`` (see ``READERS``)."""
    if name not in READERS:
        raise WearspecError(f"unknown reader {name!r}; expected one of {', '.join(READERS)}")
    return importlib.import_module(READERS[name])
