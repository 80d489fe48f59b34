"""Does SSL pretraining help on every data shape? SSL vs random init vs supervised vs classical, per cell.

Pretraining was tuned on one synthetic draw; on a real IMU set of another shape it made the features
worse than a random-init backbone. This benchmark measures every method on a matrix of data shapes, so
a recipe is judged on all of them at once. Cells (``--cells``, the settings that make each shape):

==================  ============================================================================================
``default``         the embedded data: 24 labelled + 12 unlabelled subjects, 6 channels at 50 Hz, 5 s windows,
                    hop 2.5 s (5148 windows, 7 daily activities)
``short``           2.56 s windows at 50 Hz, hop 1.28 s (128 samples, hop 64; ~10k windows):
                    ``window.length_s=2.56 window.hop_s=1.28``
``acc_only``        accelerometer only, 3 channels: ``synthetic.channels=acc``
``hz100_10s``       100 Hz, 10 s windows, hop 5 s (1000 samples; 2556 windows):
                    ``synthetic.rate=100 window.rate=100 window.length_s=10 window.hop_s=5``
``small_pool``      10 subjects, no unlabelled pool, 12.5 min each (2990 windows):
                    ``synthetic.subjects=10 synthetic.minutes_per_subject=12.5``
``exercise``        upper-body exercises whose classes differ in the plane and path of the wrist's motion
                    (orientation carries class information): ``synthetic.activities=[exercise]``
``exercise_short``  the real set's shape: exercises, 10 subjects × 6.4 min, 2.56 s windows at hop 1.28 s (2990)
``basicmotions``    real data (UEA BasicMotions: 6 channels at 10 Hz, 10 s series, 4 classes, 40 + 40 series):
                    ``wearspec prepare uea`` with ``window.rate=10 window.length_s=10 window.hop_s=10``
==================  ============================================================================================

Per cell and seed (``--seeds``; a synthetic cell draws its data with that seed too):

1. the store under ``--out/CELL/seedS/store`` (made once, reused while its settings are the same);
2. EsViT/DINO pretraining on ALL the cell's windows, labels unused, as a user would run it: the recipe
   ``--config`` (default ``configs/pretrain_vit_tiny.yaml``) with ``runtime.amp=none`` (bf16 is ~7× slower on
   CPUs without native bf16) and ``--set`` overrides, sized to ``--steps`` optimiser steps (``--cell-steps
   CELL=N`` per cell; ``--epochs`` fixes epochs instead), so a cell costs a stated budget; wall and process
   CPU minutes are recorded (``--reuse``: a finished run with the same config is not repeated). A run that
   the recipe's collapse guard stops is a result: its SSL columns stay empty, the table counts it as stopped
   and the note below it gives the guard's line (``--set runtime.on_collapse=warn`` probes it anyway);
3. k-fold by subject (``--folds``, default 5, at most half the labelled subjects; a quarter of each fold's
   training subjects validate): linear probe and weighted k-NN on the SSL teacher and on the same backbone
   randomly initialised (``benchmarks/ssl.py``'s ``probe``), supervised from scratch (its ``supervised``:
   the recipe's front end and backbone + a linear head, ``--set supervised:KEY=V``), and the classical
   baseline (hand-crafted features + logistic regression / random forest, ``wearspec.evaluate.classical``),
   all on the same folds. BasicMotions has no subject ids: it uses the archive's own train/test split
   (so it is not subject-wise), and it is probe-only (no supervised model: 40 training series).

Pretraining sees the test folds' windows (without labels): transductive, as on a user's own unlabelled
recordings; every method is scored on subjects it did not train on. Scores are pooled macro-F1 over the
folds' test windows; with several seeds the table gives mean ± SD over seeds.

BasicMotions is looked for in an installed ``aeon`` or ``sktime`` (``datasets/data/BasicMotions``) or at
``--basicmotions PATH`` (the folder with ``BasicMotions_TRAIN.ts`` and ``BasicMotions_TEST.ts``); without it
the cell is skipped with a note.

    python benchmarks/ssl_matrix.py [--cells default,short,...] [--seeds 0,1] [--steps 1280] [--folds 5]
        [--skip supervised,classical] [--reuse] [--threads 1] [--set optim.lr=1e-3] [--set probe:n_last=2]
        [--json PATH] [--out DIR] [--basicmotions DIR]
    python benchmarks/ssl_matrix.py --cells short,exercise --epochs 1 --skip supervised \\
        --set runtime.on_collapse=warn --data-set synthetic.subjects=6 \\
        --data-set synthetic.minutes_per_subject=2 --unlabelled 0                    # smoke run (minutes)
    (the supervised model needs validation subjects in every fold: 6 labelled subjects at least; a run that
    stops before its first checkpoint leaves no front end for the random-init probe either)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_HERE = Path(__file__).resolve().parent
# run as a script, this folder is sys.path[0]: its ssl.py would shadow the standard library's ssl
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import ssl as ssl_bench  # noqa: E402
from benchmarks._common import Timer, load_pretrain_config, make_store, pretrain, save_results, set_steps  # noqa: E402
from wearspec.config import load_config  # noqa: E402
from wearspec.data.prepare import PrepareConfig, prepare  # noqa: E402
from wearspec.data.splits import make_splits  # noqa: E402
from wearspec.data.store import WindowStore  # noqa: E402
from wearspec.evaluate.classical import ClassicalConfig, classical_baseline  # noqa: E402
from wearspec.errors import WearspecError  # noqa: E402
from wearspec.evaluate.probe import ProbeConfig  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "pretrain_vit_tiny.yaml"
BASE_SETS = ["runtime.amp=none"]  # before --set: float32 unless asked (bf16 is slow without native support)
SHORT = ["window.length_s=2.56", "window.hop_s=1.28"]
EXERCISE = ["synthetic.activities=[exercise]"]


@dataclass(frozen=True)
class Cell:
    """One data shape: ``prepare`` settings, the unlabelled pool (synthetic) or the reader of real data."""

    prepare: tuple[str, ...] = ()
    unlabelled: int = 12
    reader: str = "synthetic"
    supervised: bool = True
    note: str = ""


CELLS: dict[str, Cell] = {
    "default": Cell(note="embedded default data"),
    "short": Cell(tuple(SHORT), note="2.56 s windows at 50 Hz (128 samples, hop 64)"),
    "acc_only": Cell(("synthetic.channels=acc",), note="accelerometer only (3 channels)"),
    "hz100_10s": Cell(("synthetic.rate=100", "window.rate=100", "window.length_s=10", "window.hop_s=5"),
                      note="100 Hz, 10 s windows"),
    "small_pool": Cell(("synthetic.subjects=10", "synthetic.minutes_per_subject=12.5"), unlabelled=0,
                       note="10 subjects, ~3k windows"),
    "exercise": Cell(tuple(EXERCISE), note="upper-body exercises (orientation carries class information)"),
    "exercise_short": Cell(tuple(EXERCISE + ["synthetic.subjects=10", "synthetic.minutes_per_subject=6.4"] + SHORT),
                           unlabelled=0, note="exercises in the real set's shape: 10 subjects, 2.56 s, ~3k windows"),
    "basicmotions": Cell(("window.rate=10", "window.length_s=10", "window.hop_s=10"), unlabelled=0, reader="uea",
                         supervised=False, note="real (UEA BasicMotions), the archive's train/test split, probe-only"),
}


# -- data ---------------------------------------------------------------------------------------------
def find_basicmotions(given: Path | None) -> Path | None:
    """The BasicMotions folder: ``given``, else inside an installed aeon or sktime, else None."""
    if given is not None:
        return given
    for package in ("aeon", "sktime"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "BasicMotions"
            if (folder / "BasicMotions_TRAIN.ts").is_file():
                return folder
    return None


def build_store(name: str, cell: Cell, folder: Path, seed: int, args) -> WindowStore:
    """The cell's store in ``folder``: made once, reused while its settings (and the generator) are the same,
    else made again (``store.overwrite``: the folder is the benchmark's own)."""
    settings = list(cell.prepare) + ["store.overwrite=true"]
    if cell.reader == "uea":
        return prepare("uea", args.basicmotions, folder, load_config(PrepareConfig, None, settings), progress=False)[0]
    unlabelled = cell.unlabelled if args.unlabelled is None else args.unlabelled
    return make_store(folder, unlabelled, seed, settings + args.data_set)


def evaluation_split(store: WindowStore, cell: Cell, folds: int) -> dict:
    """The ``benchmarks/ssl.py`` split dict for k folds by subject over the labelled subjects (the archive's
    own split for real data without subject ids); nothing is excluded from pretraining."""
    if cell.reader == "uea":
        return {"train": [], "val": [], "test": [], "pretrain_excluded": [], "probe_kfold": 1,
                "probe_split": {"mode": "predefined"}}
    n_subjects = len(np.unique(store.subjects[store.labels >= 0]))
    k = max(2, min(folds, n_subjects // 2))
    return {"train": [], "val": [], "test": [], "pretrain_excluded": [], "probe_kfold": k,
            "probe_val_fraction": 0.25}


# -- one cell ------------------------------------------------------------------------------------------
def scores(r: dict) -> dict:
    """Pooled macro-F1 of a probe/supervised/classical result, plus its per-subject mean ± SD and accuracy."""
    return {"macro_f1": r["macro_f1"], "accuracy": r["accuracy"], "subject_macro_f1": r["subject_macro_f1"]}


def run_classical(store: WindowStore, split: dict, seed: int, threads: int) -> dict:
    """The classical baseline on the probes' folds (the same ``make_splits`` call on the same store)."""
    splits = make_splits(store, np.flatnonzero(store.labels >= 0), ssl_bench.probe_folds(split))
    with Timer() as t:
        rep = classical_baseline(store, splits, ClassicalConfig(n_jobs=max(1, threads)), seed=seed)
    out = {"wall_s": t.wall, "cpu_s": t.cpu, "features": rep["features"]["count"]}
    for m in rep["models"]:
        out[m] = {"macro_f1": rep[m]["pooled"]["macro_f1"], "accuracy": rep[m]["pooled"]["accuracy"],
                  "subject_macro_f1": rep[m]["subject_summary"]["macro_f1"]}
    return out


def run_pretraining(cfg, reuse: bool, store: WindowStore) -> dict:
    """``benchmarks/_common.py``'s timed pretraining; a run that stops (the collapse guard, bad settings) is a
    result, not the end of the matrix: ``{"error": its one line, "wall_s", "cpu_s"}``. ``reuse`` holds only for
    a run made on this very store (its fingerprint is kept beside the run: the store may have been remade)."""
    marker = Path(cfg.output) / "store_fingerprint.txt"
    fingerprint = str(store.manifest.get("fingerprint", ""))
    reuse = reuse and marker.is_file() and marker.read_text() == fingerprint
    with Timer() as t:
        try:
            p = pretrain(cfg, reuse)
            marker.write_text(fingerprint)
        except WearspecError as e:
            p = {"error": str(e)}
    if "error" in p:
        p.update(wall_s=t.wall, cpu_s=t.cpu, steps=0)
        print(f"pretrain stopped after {t.wall / 60:.1f} min: {p['error']}", flush=True)
    else:
        print(f"pretrain: {p['steps']} steps, {p['wall_s'] / 60:.1f} min wall, {p['cpu_s'] / 60:.1f} CPU-min, "
              f"{p['windows_per_s']:.0f} windows/s", flush=True)
    return p


def run_cell(name: str, cell: Cell, seed: int, args, sets: dict[str, list[str]]) -> dict:
    """Store → pretraining → probes, supervised, classical for one cell and seed (module docstring)."""
    work = args.out / name / f"seed{seed}"
    with Timer() as t:
        store = build_store(name, cell, work / "store", seed, args)
    split = evaluation_split(store, cell, args.folds)
    r: dict = {"store": {"windows": len(store), "labelled": int((store.labels >= 0).sum()),
                         "subjects": len(store.subject_names), "channels": store.n_channels, "rate": store.rate,
                         "window": store.window, "hop": store.hop, "classes": len(store.label_names),
                         "prepare_s": t.wall},
               "folds": split.get("probe_split") or {"mode": "kfold", "k": split["probe_kfold"]}}
    print(f"\n== {name} (seed {seed}): {len(store)} windows, {store.n_channels} ch × {store.window} at "
          f"{store.rate:g} Hz, {len(store.subject_names)} subjects, {len(store.label_names)} classes; "
          f"evaluation {r['folds']} ==", flush=True)
    cfg = load_pretrain_config(args.config, work / "store", work / "pretrain", [], BASE_SETS + sets["pretrain"])
    cfg.runtime.seed = seed
    if args.epochs:
        cfg.optim.epochs, cfg.optim.warmup_epochs = args.epochs, min(cfg.optim.warmup_epochs, args.epochs)
    else:
        set_steps(cfg, len(store), args.cell_steps.get(name, args.steps))
    probe_sets = ssl_bench.PROBE_ARCH.get("swin" if "swin" in cfg.backbone.name else "vit", []) + sets["probe"]
    if any(f.name == "classical" for f in dataclasses.fields(ProbeConfig)):
        probe_sets = ["classical.enabled=false"] + probe_sets  # run once below, not in both probes
    if not {"ssl", "random"} <= args.skip:
        r["pretrain"] = run_pretraining(cfg, args.reuse, store)
    for which, key in (("teacher", "ssl"), ("random", "random")):
        if key not in args.skip:
            if key == "ssl" and "error" in r["pretrain"]:
                r[key] = {"error": "no encoder: pretraining stopped"}
                continue
            try:
                res = ssl_bench.probe(work / "pretrain", work / "store", work / "probe" / key, which, split,
                                      probe_sets)
            except WearspecError as e:  # e.g. the random probe of a run stopped before its first checkpoint
                r[key] = {"error": str(e)}
                print(f"{key} probe: {e}", flush=True)
                continue
            r[key] = {"wall_s": res["wall_s"], "cpu_s": res["cpu_s"], "knn": scores(res["knn"]),
                      "linear": scores(res["linear"]), "linear_selected": res["linear"]["selected"]}
            print(f"{key} probe: linear {res['linear']['macro_f1']:.3f}, k-NN {res['knn']['macro_f1']:.3f}",
                  flush=True)
    if cell.supervised and "supervised" not in args.skip:
        res = ssl_bench.supervised(cfg, store, split, seed=seed, hp=args.hp)
        r["supervised"] = {**scores(res), "wall_s": res["wall_s"], "cpu_s": res["cpu_s"], "folds": res["folds"]}
        print(f"supervised: {res['macro_f1']:.3f} ({res['wall_s'] / 60:.1f} min)", flush=True)
    if "classical" not in args.skip:
        r["classical"] = run_classical(store, split, seed, args.threads)
        c = r["classical"]
        print(f"classical: LR {c['logreg']['macro_f1']:.3f}, RF {c['forest']['macro_f1']:.3f}", flush=True)
    return r


# -- report --------------------------------------------------------------------------------------------
COLUMNS = [("SSL lin", ("ssl", "linear")), ("SSL kNN", ("ssl", "knn")), ("random lin", ("random", "linear")),
           ("random kNN", ("random", "knn")), ("supervised", ("supervised",)), ("classical LR", ("classical", "logreg")),
           ("classical RF", ("classical", "forest"))]


def _get(r: dict, path: tuple[str, ...]) -> float | None:
    for k in path:
        if not isinstance(r, dict) or k not in r:
            return None
        r = r[k]
    return r["macro_f1"]


def _fmt(values: list[float], sign: str = "") -> str:
    """``0.812`` for one value, ``0.812 ± 0.041`` (mean ± SD) for several, ``–`` for none; ``sign="+"`` signs it."""
    if not values:
        return "–"
    mean = f"{np.mean(values):{sign}.3f}"
    return mean if len(values) == 1 else f"{mean} ± {np.std(values, ddof=1):.3f}"


def table(results: dict) -> str:
    """cell × (the seven scores, SSL − random for linear and k-NN, pretraining cost), mean ± SD over seeds."""
    head = [c for c, _ in COLUMNS] + ["SSL − random lin", "SSL − random kNN", "pretrain wall / CPU min (steps)"]
    lines = ["| cell | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for cell, by_seed in results.items():
        runs = list(by_seed.values())
        row = [_fmt([v for v in (_get(r, p) for r in runs) if v is not None]) for _, p in COLUMNS]
        for m in ("linear", "knn"):
            d = [_get(r, ("ssl", m)) - _get(r, ("random", m)) for r in runs
                 if _get(r, ("ssl", m)) is not None and _get(r, ("random", m)) is not None]
            row.append(_fmt(d, "+"))
        pre = [r["pretrain"] for r in runs if "pretrain" in r]
        stopped = sum("error" in p for p in pre)
        row.append(f"{np.mean([p['wall_s'] for p in pre]) / 60:.1f} / {np.mean([p['cpu_s'] for p in pre]) / 60:.1f} "
                   f"({max(p['steps'] for p in pre)})" + (f", {stopped} stopped" if stopped else "") if pre else "–")
        lines.append(f"| {cell} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated cells: {', '.join(CELLS)}")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (data draw and training)")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the pretraining recipe")
    ap.add_argument("--set", action="append", default=[], metavar="[probe:|supervised:]KEY=VALUE",
                    help="override a pretraining setting (no prefix), a probe or a supervised one")
    ap.add_argument("--steps", type=int, default=1280, help="pretraining optimiser steps per cell (whole epochs)")
    ap.add_argument("--cell-steps", action="append", default=[], metavar="CELL=N", help="steps for one cell")
    ap.add_argument("--epochs", type=int, default=0, help="pretraining epochs instead of --steps (smoke runs)")
    ap.add_argument("--folds", type=int, default=5, help="subject folds (at most half the labelled subjects)")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: ssl, random, supervised, classical")
    ap.add_argument("--data-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a prepare setting for every synthetic cell (e.g. synthetic.subjects=4 for a smoke run)")
    ap.add_argument("--unlabelled", type=int, default=None, help="unlabelled subjects in every synthetic cell")
    ap.add_argument("--basicmotions", type=Path, default=None, help="folder with BasicMotions_{TRAIN,TEST}.ts")
    ap.add_argument("--reuse", action="store_true", help="reuse a finished pretraining run with the same config")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (and the forest's jobs)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/wearspec-bench-ssl-matrix"), help="work folder")
    ap.add_argument("--json", type=Path, default=None, help="also write every result here")
    args = ap.parse_args(argv)
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in args.cells if c not in CELLS]
    if unknown:
        ap.error(f"--cells: unknown cell {unknown[0]!r} (expected {', '.join(CELLS)})")
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.cell_steps = {k: int(v) for k, _, v in (item.partition("=") for item in args.cell_steps)}
    sets: dict[str, list[str]] = {"pretrain": [], "probe": [], "supervised": []}
    for item in args.set:
        head, _, rest = item.partition(":")
        sets[head if rest and head in sets else "pretrain"].append(rest if rest and head in sets else item)
    args.sets = sets
    try:
        args.hp = ssl_bench.supervised_hp(sets["supervised"])
    except KeyError as e:
        ap.error(e.args[0])
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.basicmotions = find_basicmotions(args.basicmotions)
    results: dict = {}
    notes: list[str] = []
    for name in args.cells:
        cell = CELLS[name]
        if cell.reader == "uea" and args.basicmotions is None:
            notes.append(f"{name}: skipped (BasicMotions not found: install aeon or sktime, or pass --basicmotions)")
            print(notes[-1])
            continue
        results[name] = {str(s): run_cell(name, cell, s, args, args.sets) for s in args.seeds}
    print("\nPooled macro-F1 over the folds' test windows (mean ± SD over seeds where there are several).\n")
    print(table(results))
    for name, by_seed in results.items():
        for seed, r in by_seed.items():
            if "error" in r.get("pretrain", {}):
                notes.append(f"{name} seed {seed}: pretraining stopped, no SSL scores: {r['pretrain']['error']}")
    for n in notes:
        print(n)
    out = {"args": {k: str(v) for k, v in vars(args).items() if k != "hp"}, "supervised_hp": args.hp,
           "cells": {n: dataclasses.asdict(CELLS[n]) for n in args.cells}, "torch_threads": torch.get_num_threads(),
           "results": results, "notes": notes}
    return save_results(args.json, out)


if __name__ == "__main__":
    main()
