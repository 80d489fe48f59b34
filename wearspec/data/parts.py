"""Many input files: one store part per file, in parallel, resumable, split across machines, merged.

A cohort is thousands of device files (or large CSVs). With any of ``jobs=N``, ``shard=i/n`` or
``keep_going=true`` (``wearspec prepare device IN -o OUT jobs=8``), ``prepare`` writes each input file
as its own complete window store under ``OUT/parts/<file>/`` and then merges them:

* **parallel** — ``jobs`` worker processes, one file each at a time;
* **resumable per file** — a part is written atomically and carries the fingerprint of its file and
  settings, so a re-run skips finished files, redoes changed ones and picks up new ones;
* **one bad file** stops the run with its one-line error, or with ``keep_going=true`` is skipped and
  listed (on stderr and under ``meta.failed`` in the manifest);
* **machines** — ``shard=i/n`` takes every n-th file starting at the i-th (1-based) of the sorted
  list, so n machines that share ``OUT`` prepare disjoint files;
* **merged** — ``OUT/manifest.json`` and ``OUT/index.npz`` describe every finished part, and point at
  the parts' shard files (nothing is copied), so ``OUT`` is an ordinary store for every stage. Each run
  merges what is finished; after the shards of a cluster have finished, one more run (any shard, or
  none: finished files are skipped) merges them all.

Only readers that read file by file offer this (those with ``input_files``: generic tables, device).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from wearspec.data.readers import get_reader
from wearspec.data.readers.tables import sort_labels
from wearspec.data.store import FORMAT, VERSION, WindowStore
from wearspec.errors import WearspecError
from wearspec.utils.integrity import sha256_file

PARTS = "parts"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 1 ≤ i ≤ n; ``""`` → (1, 1)."""
    if not text:
        return 1, 1
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise WearspecError(f"shard: expected i/n with 1 ≤ i ≤ n (e.g. shard=2/8), got {text!r}")
    return i, n


def part_name(file: Path, root: Path) -> str:
    """The part folder of an input file: its path below the input folder ('/' → '__'), else its name."""
    base = root if root.is_dir() else root.parent
    rel = file.relative_to(base) if file.is_relative_to(base) else Path(file.name)
    return "__".join(rel.parts)


def _prepare_one(prepare_store, reader: str, file: str, out: str, cfg) -> tuple[str, str | None]:
    """Worker: one file → one part store. Returns (file, error message or None)."""
    try:
        prepare_store(reader, Path(file), out, cfg, progress=False)
    except WearspecError as e:
        return file, str(e)
    return file, None


def prepare_parts(reader: str, input_path, output, cfg, prepare_store, *,
                  progress: bool | None = None) -> tuple[WindowStore, bool]:
    """Prepare every input file (of this shard) as a part of ``output`` with ``prepare_store`` (the
    one-store ``prepare``, passed in so that this module does not import it back), then merge the
    finished parts. Returns (the merged store, whether every part of this run was already there)."""
    module = get_reader(reader)
    if not hasattr(module, "input_files"):
        raise WearspecError(f"jobs, shard and keep_going: the {reader} reader reads its dataset as a whole; "
                            "they apply to readers that read file by file (generic tables, device)")
    if cfg.jobs < 1:
        raise WearspecError(f"jobs: expected ≥ 1 worker processes, got {cfg.jobs}")
    i, n = parse_shard(cfg.shard)
    root = Path(input_path)
    files = module.input_files(root, cfg)[i - 1 :: n]
    output = Path(output)
    (output / PARTS).mkdir(parents=True, exist_ok=True)
    single = _single_file_cfg(cfg, root)
    jobs = [(prepare_store, reader, str(f), str(output / PARTS / part_name(f, root)), single) for f in files]
    seen: dict[str, str] = {}
    for job in jobs:
        if seen.setdefault(job[3], job[2]) != job[2]:
            raise WearspecError(f"{job[2]} and {seen[job[3]]} would be the same part {Path(job[3]).name}; "
                                "give files distinct names or read them from one folder")
    before = {p.name for p in _finished_parts(output)}
    failed = _run(jobs, cfg, progress)
    store = merge_parts(output, failed)
    return store, not failed and all(Path(j[3]).name in before for j in jobs)


def _single_file_cfg(cfg, root: Path):
    """The settings for one part: the same, without the many-file keys (so a part is a plain store); a
    CSV named relative to the input folder is made absolute (a part reads one file)."""
    import dataclasses

    device = cfg.device
    for key in ("subjects_csv", "annotations_csv"):
        name = getattr(device, key)
        if name and not Path(name).is_absolute() and root.is_dir():
            device = dataclasses.replace(device, **{key: str((root / name).resolve())})
    return dataclasses.replace(cfg, jobs=1, shard="", keep_going=False, device=device)


def _run(jobs: list[tuple], cfg, progress: bool | None) -> list[dict]:
    """Run the per-file jobs (in ``cfg.jobs`` processes); the failures, or an error at the first one."""
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    failed: list[dict] = []
    bar = tqdm(total=len(jobs), desc="prepare files", unit="file", disable=not show)

    def done(file: str, error: str | None) -> None:
        bar.update(1)
        if error is None:
            return
        if not cfg.keep_going:
            raise WearspecError(error if file in error else f"{file}: {error}")
        print(f"wearspec: skipped {file}: {error}", file=sys.stderr)
        failed.append({"file": file, "error": error})

    try:
        if cfg.jobs == 1:
            for job in jobs:
                done(*_prepare_one(*job))
        else:
            with ProcessPoolExecutor(cfg.jobs) as pool:
                futures = [pool.submit(_prepare_one, *job) for job in jobs]
                try:
                    for fut in as_completed(futures):
                        done(*fut.result())
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    return failed


def _finished_parts(output: Path) -> list[Path]:
    folder = output / PARTS
    return sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file()) if folder.is_dir() else []


def merge_parts(output: Path, failed: list[dict] = ()) -> WindowStore:
    """Write ``output/manifest.json`` and ``index.npz`` describing every finished part (their shards are
    used in place). Parts must agree on channels, rate, window, hop and dtype; label, subject and
    recording names are united (codes remapped)."""
    parts = [WindowStore(p) for p in _finished_parts(output)]
    if not parts:
        raise WearspecError(f"{output}: no finished parts to merge" + (f" ({len(failed)} files failed)" if failed else ""))
    first = parts[0]
    for p in parts[1:]:
        for key in ("channels", "rate", "window", "hop", "dtype"):
            if getattr(p, key) != getattr(first, key):
                raise WearspecError(f"{p.path}: {key} {getattr(p, key)} differs from {getattr(first, key)} in "
                                    f"{first.path}; parts of one store must share their settings")
    labels = sort_labels(name for p in parts for name in p.label_names)
    subjects = list(dict.fromkeys(name for p in parts for name in p.subject_names))
    recordings = list(dict.fromkeys(name for p in parts for name in p.recording_names))
    codes = {k: {name: i for i, name in enumerate(names)}
             for k, names in (("subject", subjects), ("recording", recordings), ("label", labels))}
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("subject", "recording", "start", "label", "split")}
    shards = []
    for p in parts:
        lut = {k: np.array([names[n] for n in own] or [0], np.int32) for k, names, own in (
            ("subject", codes["subject"], p.subject_names), ("recording", codes["recording"], p.recording_names),
            ("label", codes["label"], p.label_names))}
        cols["subject"].append(lut["subject"][p.subjects])
        cols["recording"].append(lut["recording"][p.recordings])
        cols["label"].append(np.where(p.labels >= 0, lut["label"][np.maximum(p.labels, 0)], -1).astype(np.int32))
        cols["start"].append(p.starts)
        cols["split"].append(p.splits)
        shards += [{"file": f"{PARTS}/{p.path.name}/{s['file']}", "windows": s["windows"],
                    **({"sha256": s["sha256"]} if s.get("sha256") else {})} for s in p.manifest["shards"]]
    return _write_merged(output, parts, cols, shards, labels, subjects, recordings, list(failed))


def _write_merged(output: Path, parts, cols, shards, labels, subjects, recordings, failed) -> WindowStore:
    first = parts[0]
    n = int(sum(len(p) for p in parts))
    fp = hashlib.sha256("".join(p.manifest.get("fingerprint", "") for p in parts).encode()).hexdigest()[:16]
    manifest = {
        "format": FORMAT, "version": VERSION, "channels": first.channels, "rate": first.rate,
        "window": first.window, "hop": first.hop, "dtype": first.dtype.name, "labels": labels,
        "subjects": subjects, "recordings": recordings, "n_windows": n,
        "shard_windows": max(int(p.manifest["shard_windows"]) for p in parts), "shards": shards,
        "fingerprint": fp,
        "meta": {**{k: v for k, v in first.meta.items() if k != "devices"}, "parts": [p.path.name for p in parts],
                 "failed": failed, "devices": {k: v for p in parts for k, v in p.meta.get("devices", {}).items()}},
    }
    tmp_index = output / f".index.npz.tmp-{os.getpid()}"
    with open(tmp_index, "wb") as f:
        np.savez(f, **{k: np.concatenate(v) for k, v in cols.items()})
    manifest["index_sha256"] = sha256_file(tmp_index)
    tmp_manifest = output / f".manifest.json.tmp-{os.getpid()}"
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp_index, output / "index.npz")
    os.replace(tmp_manifest, output / "manifest.json")
    return WindowStore(output)
