"""Raw device files: Axivity .cwa (AX3; AX6 with gyroscope), ActiGraph .gt3x, GENEActiv .bin.

``wearspec prepare device PATH`` reads one file, every such file under a folder (recursively), or the files
and folders a ``.txt`` list names (one a line), with
`actfast <https://github.com/childmindresearch/actfast>`_ (MIT, numpy-only wheels, no Java), an
optional dependency: ``pip install 'wearspec[devices]'``. Each file is one subject's recording:

* channels ``ax, ay, az`` in g, plus ``gx, gy, gz`` in °/s with ``device.gyroscope=true`` (AX6);
* the subject from the file name (``device.subject_pattern``) or a mapping CSV (``device.subjects_csv``);
* optional labels from ``device.annotations_csv`` (columns ``subject,start,end,label``, ISO times in
  the device's clock, as Capture-24's annotations); samples outside every annotation are unlabelled;
* timestamps as the device recorded them (its wall clock; the header's time zone is kept in the
  manifest). Pauses longer than ``device.max_gap_s`` split the recording into parts (``name#k``), so
  no window straddles a gap; the rate of each part is its sample count over its duration, which
  follows clock drift and the device's true rate rather than the nominal one;
* device metadata (format, hardware, serial, nominal rate, time zone, first sample) per file under
  ``meta.devices`` in the store manifest (collected while the files are read);
* optional preprocessing (:mod:`~wearspec.data.preprocess`), recorded per file in the same place:
  ``device.calibrate=true`` (gravity autocalibration), ``device.nonwear=flag|drop`` (non-wear periods
  listed, or their samples made missing so that ``window.nan_policy`` drops the windows). Resampling
  to ``window.rate`` is torchaudio's band-limited sinc, so it low-passes before decimating.

The decoded file is held in memory (actfast decodes whole files); windowing goes through it in
chunks (:mod:`~wearspec.data.chunked`), so its cost does not grow with the recording.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from wearspec.data.chunked import RecordingStream
from wearspec.data.preprocess import calibrate_gravity, nonwear_periods
from wearspec.data.readers import Source
from wearspec.data.readers.tables import _parse_datetimes, check_file, read_csv, require_path, sort_labels
from wearspec.data.windowing import uniform_from_timestamps
from wearspec.errors import WearspecError

SUFFIXES = (".cwa", ".gt3x", ".bin")
CHUNK_SAMPLES = 1 << 20  # samples per chunk handed to the windowing
EXPECTED = "a device file (.cwa, .gt3x, .bin), a folder of them, or a .txt list of them"


def import_actfast():
    """actfast, or a one-line error saying how to install it."""
    try:
        import actfast
    except ImportError:
        raise WearspecError("reading device files needs actfast: pip install 'wearspec[devices]' "
                            "(or pip install actfast)") from None
    return actfast


def device_files(path: Path) -> list[Path]:
    """The device files at ``path``: the file itself, those under the folder (recursively), or those a
    ``.txt`` list names (one file or folder a line, relative to the list's folder; ``#`` comments)."""
    path = require_path(path, EXPECTED)
    if path.is_file() and path.suffix.lower() == ".txt":
        files = []
        for i, ln in enumerate(path.read_text().splitlines(), 1):
            ln = ln.split("#", 1)[0].strip()
            if ln and not (path.parent / ln).exists():
                raise WearspecError(f"{path}, line {i}: {ln} not found; expected a device file or folder")
            files += device_files(path.parent / ln) if ln else []
        if not files:
            raise WearspecError(f"{path}: the list names no device files")
        return files
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise WearspecError(f"{path}: expected {EXPECTED}")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise WearspecError(f"{path}: no .cwa, .gt3x or .bin files in this folder")
    return files


def input_files(path: Path, cfg) -> list[Path]:
    """The files this reader would read at ``path``, one store part each (:mod:`wearspec.data.parts`)."""
    return device_files(path)


def subject_names(files: list[Path], root: Path, cfg) -> dict[Path, str]:
    """File → subject, from ``subjects_csv`` or ``subject_pattern`` (errors name the file)."""
    d = cfg.device
    if d.subjects_csv:
        table_path = _csv_path(d.subjects_csv, root)
        table = read_csv(check_file(table_path, "columns file,subject"))
        table.require(["file", "subject"], "(device.subjects_csv)")
        mapping = dict(zip(np.char.strip(table.strings("file")).tolist(), np.char.strip(table.strings("subject")).tolist()))
        out = {}
        base = root if root.is_dir() else table_path.parent  # rows name files relative to the input folder
        for f in files:
            rel = f.resolve().relative_to(base.resolve()).as_posix() if f.resolve().is_relative_to(base.resolve()) \
                else f.name
            subject = mapping.get(rel, mapping.get(f.name))
            if not subject:
                raise WearspecError(f"{table_path}: no subject for {rel} (expected a row file,subject naming it)")
            out[f] = subject
        return out
    try:
        rx = re.compile(d.subject_pattern)
    except re.error as e:
        raise WearspecError(f"device.subject_pattern: not a regular expression ({e})") from None
    out = {}
    for f in files:
        m = rx.search(f.name)
        if m is None:
            raise WearspecError(f"{f}: file name does not match device.subject_pattern {d.subject_pattern!r}; "
                                "set the pattern or device.subjects_csv")
        out[f] = m.group("subject") if "subject" in rx.groupindex else (m.group(1) if rx.groups else m.group(0))
    return out


def read_device(path: Path, gyroscope: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """One device file → (times (n,) int64 ns, samples (n, 3 or 6) float32, metadata)."""
    actfast = import_actfast()
    check_file(path, EXPECTED)
    try:
        result = actfast.read(str(path))
    except (ValueError, OSError) as e:
        raise WearspecError(f"{path}: cannot read as a {path.suffix} device file ({e})") from None
    table = next((t for t in result["timeseries"].values() if "acceleration" in t), None)
    if table is None or len(table["datetime"]) == 0:
        raise WearspecError(f"{path}: no accelerometer samples in this {result['format']} file")
    parts = [np.asarray(table["acceleration"], np.float32)]
    if gyroscope:
        if "gyroscope" not in table:
            raise WearspecError(f"{path}: no gyroscope in this {result['format']} file, but device.gyroscope "
                                "is true (every file must have one)")
        parts.append(np.asarray(table["gyroscope"], np.float32))
    t = np.asarray(table["datetime"], np.int64)
    meta = {"format": result["format"], **{k: v for sec in result["metadata"].values() for k, v in sec.items()},
            "first_sample": str(np.datetime64(int(t[0]), "ns")), "samples": int(t.shape[0])}
    return t, np.concatenate(parts, axis=1), meta


def _csv_path(name: str, root: Path) -> Path:
    """A CSV setting: as given when absolute, else relative to the input folder (or the file's folder)."""
    p = Path(name)
    return p if p.is_absolute() else (root if root.is_dir() else root.parent) / p


def read_annotations(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Label names and, per subject, (k, 3) int64 rows (start ns, end ns, label code) from a CSV with
    columns subject, start, end, label (ISO date-times, as Capture-24's annotations)."""
    table = read_csv(check_file(path, "columns subject,start,end,label"))
    table.require(["subject", "start", "end", "label"], "(device.annotations_csv)")
    subjects = np.char.strip(table.strings("subject"))
    labels = np.char.strip(table.strings("label"))
    start, end = (_parse_datetimes(table.strings(c), lambda i, c=c: table.where(i, c)) for c in ("start", "end"))
    bad = np.flatnonzero(end <= start)
    if bad.size:
        raise WearspecError(f"{table.where(int(bad[0]), 'end')}: expected an end after the start")
    names = sort_labels(v for v in labels.tolist() if v)
    codes = np.array([names.index(v) if v else -1 for v in labels.tolist()], np.int64)
    rows = np.stack([start, end, codes], axis=1) if len(codes) else np.zeros((0, 3), np.int64)
    return names, {s: rows[subjects == s] for s in np.unique(subjects).tolist()}


def _sample_labels(t_ns: np.ndarray, rows: np.ndarray | None) -> np.ndarray | None:
    """(n,) label codes of samples at ``t_ns`` from annotation rows (start, end, code); -1 outside."""
    if rows is None:
        return None
    out = np.full(t_ns.shape[0], -1, np.int32)
    for s, e, c in rows.tolist():
        out[np.searchsorted(t_ns, s) : np.searchsorted(t_ns, e)] = c
    return out


def _recordings(f: Path, subject: str, cfg, devices: dict, annotations: dict | None) -> Iterator[RecordingStream]:
    """The continuous parts of one file, each delivered in chunks."""
    t_ns, x, meta = read_device(f, cfg.device.gyroscope)
    lab = _sample_labels(t_ns, None if annotations is None else annotations.get(subject, np.zeros((0, 3), np.int64)))
    devices[f.name] = meta
    t = (t_ns - t_ns[0]).astype(np.float64) * 1e-9
    parts = _continuous_parts(t, str(f), cfg.device.max_gap_s)
    meta["parts"] = [{"start_s": float(t[a]), "samples": b - a, "rate": (b - a - 1) / float(t[b - 1] - t[a])}
                     for a, b in parts]
    _preprocess(x, t, max(meta["parts"], key=lambda p: p["samples"])["rate"], cfg.device, meta)
    name = f.stem if f.stem != subject else subject
    for k, ((a, b), info) in enumerate(zip(parts, meta["parts"])):
        rec = f"{name}#{k}" if len(parts) > 1 else name
        chunks = ((x[i : min(i + CHUNK_SAMPLES, b)].T, None if lab is None else lab[i : min(i + CHUNK_SAMPLES, b)])
                  for i in range(a, b, CHUNK_SAMPLES))
        yield RecordingStream(subject=subject, recording=rec, rate=info["rate"], chunks=chunks,
                              start=float(t[a]), source=f"{f} (subject {subject}, part {k + 1} of {len(parts)})")


def _continuous_parts(t: np.ndarray, source: str, max_gap_s: float) -> list[tuple[int, int]]:
    """``(begin, end)`` sample ranges without a gap: split where the clock pauses for more than ``max_gap_s``
    or steps back (a clock reset); parts of fewer than 2 samples are dropped."""
    back = (np.flatnonzero(np.diff(t) <= 0) + 1).tolist()
    parts = []
    for a0, b0 in zip([0, *back], [*back, t.shape[0]]):
        if b0 - a0 >= 2:
            parts += [(a0 + a, a0 + b) for a, b, _ in uniform_from_timestamps(t[a0:b0], None, source,
                                                                             max_gap_s=max_gap_s) if b - a >= 2]
    if not parts:
        raise WearspecError(f"{source}: no stretch of at least 2 samples with increasing timestamps")
    return parts


def _preprocess(x: np.ndarray, t: np.ndarray, rate: float, d, meta: dict) -> None:
    """Gravity calibration and non-wear detection on the accelerometer columns of ``x`` (n, C), in place,
    as ``d`` (the device settings) asks; what was done goes into ``meta``."""
    if d.calibrate:
        x[:, :3], meta["calibration"] = calibrate_gravity(x[:, :3], rate)
    if d.nonwear != "off":
        periods = nonwear_periods(x[:, :3], rate, d.nonwear_window_s)
        meta["nonwear"] = {"action": d.nonwear, "window_s": d.nonwear_window_s,
                           "periods_s": [[float(t[a]), float(t[b - 1])] for a, b in periods]}
        if d.nonwear == "drop":
            for a, b in periods:
                x[a:b] = np.nan  # missing: window.nan_policy drops (or fills) the windows that hold them


def open_source(path: Path | None, cfg) -> Source:
    files = device_files(path)
    root = Path(path)
    subjects = subject_names(files, root, cfg)
    import_actfast()  # fail before any work when it is missing
    channels = ["ax", "ay", "az"] + (["gx", "gy", "gz"] if cfg.device.gyroscope else [])
    devices: dict[str, dict] = {}
    names, annotations, inputs = [], None, list(files)
    if cfg.device.annotations_csv:
        inputs.append(_csv_path(cfg.device.annotations_csv, root))
        names, annotations = read_annotations(inputs[-1])

    def items():
        for f in files:
            yield from _recordings(f, subjects[f], cfg, devices, annotations)

    return Source("device", channels, names, items(), inputs=inputs, meta={"layout": "device", "devices": devices})
