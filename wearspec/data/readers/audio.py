"""Short audio clips (WAV, FLAC, OGG via ``soundfile``): one clip = one window, channel ``audio``.

Clips are mixed down to mono and delivered at their native rate; ``window.rate`` resamples them
(native rates may differ from clip to clip). A clip shorter than ``window.length_s`` is an error
unless ``window.short_policy=pad`` (zero-padded at the end) or ``skip``; a longer clip is cropped to
its first ``window.length_s`` seconds. Two layouts:

**ESC-50 style** (``audio.labels_csv`` set, e.g. ``meta/esc50.csv``, relative to ``PATH``): one CSV
row per clip with ``audio.filename_column`` (file under ``audio.audio_dir``),
``audio.label_column`` (``category``) and ``audio.fold_column`` (``fold``). Each fold becomes the
subject ``fold1``..``fold5``, so leave-one-subject-out evaluation is the official 5-fold
cross-validation. Set ``audio.fold_column=''`` for a CSV without folds (one subject ``S0``)::

    wearspec prepare audio ESC-50-master audio.labels_csv=meta/esc50.csv \\
        window.rate=16000 window.length_s=5 window.hop_s=5

**Speech Commands style** (``audio.labels_csv`` empty): the label is the sub-folder name
(``_background_noise_`` and hidden folders are skipped), the speaker — the part of the file name
before ``_nohash_`` (the whole name when there is none) — is the subject, and
``validation_list.txt`` / ``testing_list.txt`` (paths relative to ``PATH``) put clips in the
``val`` / ``test`` split, all others in ``train`` (no split when neither list exists; list entries
whose file is absent are ignored, e.g. in a subset). Speech Commands clips are at most 1 s long::

    wearspec prepare audio speech_commands_v0.02 \\
        window.short_policy=pad window.length_s=1 window.hop_s=1 window.rate=16000
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wearspec.data.readers import Source
from wearspec.data.readers.tables import check_file, read_csv, sort_labels
from wearspec.data.windowing import WindowBatch
from wearspec.errors import WearspecError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SPLIT_LISTS = (("validation_list.txt", "val"), ("testing_list.txt", "test"))


def read_clip(path: Path) -> tuple[np.ndarray, float]:
    """A clip as mono float32 (T,) and its native sample rate; stereo is averaged."""
    import soundfile as sf

    check_file(path, "an audio clip")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, OSError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise WearspecError(f"{path}: unreadable or corrupt audio file ({e})") from None
    if data.shape[0] == 0:
        raise WearspecError(f"{path}: audio file holds no samples")
    return data.mean(axis=1, dtype=np.float32), float(sr)


def _clip_batch(path: Path, subject: str, recording: str, label: int, split: str | None) -> WindowBatch:
    x, sr = read_clip(path)
    return WindowBatch(
        subject=subject,
        recording=recording,
        windows=x[None, None, :],
        rate=sr,
        labels=np.array([label], np.int32),
        starts=np.zeros(1),
        source=str(path),
        split=split,
    )


def open_source(path: Path, cfg) -> Source:
    """ESC-50 style when ``audio.labels_csv`` is set, else Speech Commands style. The CSV / folder
    listing and file existence are checked up front; clips are decoded one by one when iterated."""
    if path is None or not Path(path).is_dir():
        raise WearspecError(f"{path}: expected a folder of audio clips")
    path = Path(path)
    if cfg.audio.labels_csv:
        return _open_csv(path, cfg)
    return _open_folders(path, cfg)


def _open_csv(root: Path, cfg) -> Source:
    a = cfg.audio
    csv_path = root / a.labels_csv
    table = read_csv(csv_path)
    needed = [a.filename_column, a.label_column] + ([a.fold_column] if a.fold_column else [])
    table.require(needed, "(audio.filename_column, audio.label_column, audio.fold_column)")
    if table.n_rows == 0:
        raise WearspecError(f"{csv_path}: no rows after the header (expected one row per clip)")
    audio_dir = root / a.audio_dir
    files = [f.strip() for f in table.cols[a.filename_column]]
    labels = [v.strip() for v in table.cols[a.label_column]]
    folds = [v.strip() for v in table.cols[a.fold_column]] if a.fold_column else ["S0"] * len(files)
    clips = []
    for i, (name, label, fold) in enumerate(zip(files, labels, folds)):
        if not name:
            raise WearspecError(f"{table.where(i, a.filename_column)}: expected a file name, found an empty cell")
        f = audio_dir / name
        if not f.is_file():
            raise WearspecError(f"{table.where(i, a.filename_column)}: audio file {f} not found")
        if a.fold_column and not fold:
            raise WearspecError(f"{table.where(i, a.fold_column)}: expected a fold, found an empty cell")
        subject = f"fold{fold}" if a.fold_column else fold
        clips.append((f, subject, Path(name).with_suffix("").as_posix(), label))
    names = sort_labels(v for v in labels if v)
    code = {n: k for k, n in enumerate(names)}

    def items():
        for f, subject, rec, label in clips:
            yield _clip_batch(f, subject, rec, code.get(label, -1), None)

    meta = {"layout": "csv", "labels_csv": a.labels_csv, "clips": len(clips)}
    return Source("audio", ["audio"], names, items(), inputs=[csv_path] + [c[0] for c in clips], meta=meta)


def _speaker(stem: str) -> str:
    return stem.split("_nohash_", 1)[0] if "_nohash_" in stem else stem


def _open_folders(root: Path, cfg) -> Source:
    folders = sorted(
        d for d in root.iterdir()
        if d.is_dir() and not d.name.startswith((".", "_"))
    )
    clips: dict[str, list[Path]] = {}
    for d in folders:
        found = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if found:
            clips[d.name] = found
    if not clips:
        raise WearspecError(
            f"{root}: no audio clips found (expected one sub-folder per label holding .wav/.flac/.ogg "
            "files, or set audio.labels_csv for an ESC-50 style CSV)"
        )
    names = sort_labels(clips)
    split_of: dict[str, str] = {}
    lists = []
    ignored = 0
    for fname, split in SPLIT_LISTS:
        lp = root / fname
        if lp.exists():
            lists.append(lp)
            for line in lp.read_text().splitlines():
                rel = line.strip()
                if not rel:
                    continue
                if (root / rel).is_file():
                    split_of[Path(rel).as_posix()] = split
                else:
                    ignored += 1
    has_splits = bool(lists)
    ordered = [(label, f) for label in names for f in clips[label]]
    code = {n: k for k, n in enumerate(names)}

    def items():
        for label, f in ordered:
            rel = f"{label}/{f.name}"
            split = split_of.get(rel, "train") if has_splits else None
            yield _clip_batch(f, _speaker(f.stem), f"{label}/{f.stem}", code[label], split)

    meta = {"layout": "folders", "clips": len(ordered), "split_list_entries_ignored": ignored}
    return Source("audio", ["audio"], names, items(), inputs=lists + [f for _, f in ordered], meta=meta)
