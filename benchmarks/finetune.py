"""Fine-tuning: CNN teacher, ViT from scratch, SepTr, DeSepTr, SSL-initialised ViT/Swin; label-fraction curve.

The issue's benchmark, on the embedded synthetic data, subject-wise, every model with the same budget:

* **main table** (100 % of the labels): the CNN teacher (ResNet-18 width 16, ``configs/finetune_deseptr.yaml``);
  ViT from scratch (``vit_tiny_cpu``, class head only); SepTr (1 × 1 patches on the spectrogram, class head
  only); DeSepTr (SepTr on the frozen teacher's stem + first stage, hard distillation, α = 0.5); ViT and Swin
  initialised from EsViT/DINO checkpoints + hard distillation (``configs/finetune_vit_ssl.yaml``: layer-wise
  LR decay 0.75, heads only in the first epoch), and the same two students from scratch + distillation
  (what the SSL initialisation adds). One teacher serves every distilled student.
* ``--kfold K``: ViT from scratch, SepTr and DeSepTr (with a CNN teacher per fold) on K subject folds instead
  of the one split, so every labelled subject is tested once (the one-split ordering rests on 8 subjects).
* **label-fraction curve**: from scratch vs SSL-initialised, for each of ``--curve-backbones`` (ViT by
  default; ``vit,swin`` for both), *without* distillation (a teacher trained on all labels would leak them
  into the small-fraction runs), at ``--fractions`` of the training subjects' labelled windows
  (``label_fraction``: stratified by class, seeded), several seeds (label subset, weights, augmentation) for
  the fractions up to ``--multi-seed-max`` (10 %).

Budget: every run of the main table trains ``--epochs`` epochs of batch ``--batch`` (the same number of
optimiser steps) with no early stopping; the epoch with the best validation-subject macro-F1 is evaluated
once on the test subjects. Curve runs train ``max(--epochs, ⌈--min-steps / steps per epoch⌉)`` epochs (a
5 % subset has 2 batches per epoch). Wall-clock and process CPU seconds of every run are reported.

Data and split (``benchmarks/_common.py``, shared with ``benchmarks/ssl.py``): ``prepare synthetic`` with the
default 24 labelled subjects plus ``--unlabelled`` unlabelled ones; one seeded subject split for every model:
8 test, 4 validation, 12 training subjects. Pretraining (``configs/pretrain_{vit,swin}_tiny.yaml`` scaled to
``--budget-min``) sees the unlabelled and training subjects only; ``--pretrain-vit/--pretrain-swin DIR``
reuse finished pretraining runs (checked: they must exclude the validation and test subjects). All models
of the main table see the same spectrograms: the SSL checkpoint's front end (STFT + normalisation fitted
label-free on the pretraining pool), handed on by the teacher.

    python benchmarks/finetune.py [--epochs 15] [--jobs 2] [--pretrain-vit DIR] [--pretrain-swin DIR]
                                  [--fractions 0.05,0.1,0.25,1] [--seeds 0,1,2] [--curve-backbones vit,swin]
                                  [--out DIR] [--json PATH] [--reuse]
    python benchmarks/finetune.py --kfold 3 [--epochs 15] [--jobs 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this folder is sys.path[0] and its ssl.py would shadow the standard library's ssl.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import shutil  # noqa: E402
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks._common import (Timer, add_data_args, make_store, pretrain, pretrain_config,  # noqa: E402
                                save_results, subject_split)
from wearspec.config import from_dict, load_config, to_dict  # noqa: E402
from wearspec.data.splits import SplitConfig  # noqa: E402
from wearspec.errors import WearspecError  # noqa: E402
from wearspec.evaluate.metrics import format_mean_sd, mean_sd  # noqa: E402
from wearspec.finetune.recipe import FinetuneConfig, label_subset, run_finetune  # noqa: E402
from wearspec.ssl.pretrain import PretrainConfig  # noqa: E402
from wearspec.utils.checkpoint import check_same_store, latest_checkpoint, load_checkpoint  # noqa: E402

DESEPTR = ROOT / "configs" / "finetune_deseptr.yaml"
VIT_SSL = ROOT / "configs" / "finetune_vit_ssl.yaml"
ARCH_NAMES = {"vit": "ViT", "swin": "Swin"}  # the students that can start from an SSL checkpoint
MAIN = [  # name, label, init, distillation
    ("teacher", "CNN teacher (ResNet-18 w16)", "–", "–"),
    ("vit", "ViT from scratch", "random", "none"),
    ("septr", "SepTr", "random", "none"),
    ("deseptr", "DeSepTr (SepTr + teacher stem + distillation)", "random", "hard"),
    ("vit_distill", "ViT + distillation", "random", "hard"),
    ("vit_ssl_distill", "ViT SSL-initialised + distillation", "SSL", "hard"),
    ("swin_distill", "Swin + distillation", "random", "hard"),
    ("swin_ssl_distill", "Swin SSL-initialised + distillation", "SSL", "hard"),
]


# -- run configurations ------------------------------------------------------------------------------
def student_variant(base: FinetuneConfig, arch: str, init: str, distill: bool) -> FinetuneConfig:
    """``base`` with the student of ``configs/finetune_vit_ssl.yaml`` (ViT or Swin): from ``init`` (a pretrain
    run folder: layer decay and heads-only first epoch as in that recipe) or from scratch (no layer decay,
    no freezing); hard distillation from the teacher, or none (no distillation head)."""
    cfg = copy.deepcopy(base)
    cfg.student = load_config(FinetuneConfig, VIT_SSL).student
    s = cfg.student
    s.epochs, s.batch_size, s.patience = base.student.epochs, base.student.batch_size, base.student.patience
    if arch == "swin":
        s.model.arch, s.model.backbone.name = "swin", "swin_tiny_cpu"
    s.init_checkpoint = init
    if not init:
        s.layer_decay, s.freeze_backbone_epochs = 1.0, 0
    if not distill:
        s.model.distillation, s.distill.kind = False, "none"
    return cfg


def main_configs(base: FinetuneConfig, out: Path, pre: dict[str, str], teachers: dict[str, str]) -> dict:
    """The main table's runs: name → FinetuneConfig (the teacher's config under ``"teacher"``)."""
    runs = {}
    teacher = student_variant(base, "vit", pre["vit"], True)  # its front end: the SSL checkpoint's
    teacher.stages = ["teacher"]
    runs["teacher"] = teacher
    plain = copy.deepcopy(base)  # DeSepTr's SepTr without the teacher's stem and without distillation
    plain.student.model.teacher_stem, plain.student.model.distillation = False, False
    plain.student.distill.kind = "none"
    runs["septr"] = plain
    runs["deseptr"] = copy.deepcopy(base)
    runs["vit"] = student_variant(base, "vit", "", False)
    for arch in ("vit", "swin"):
        runs[f"{arch}_distill"] = student_variant(base, arch, "", True)
        runs[f"{arch}_ssl_distill"] = student_variant(base, arch, pre[arch], True)
    for name, cfg in runs.items():
        cfg.output = str(out / name)
        if name != "teacher":
            cfg.stages = ["student"]
            arch = "swin" if name.startswith("swin") else "vit"
            cfg.teacher_checkpoint = teachers[arch]  # the distillation targets, and the front end
    return runs


def curve_configs(base: FinetuneConfig, out: Path, pre: dict[str, str], archs: list[str], fractions: list[float],
                  seeds: list[int], min_steps: int, multi_seed_max: float, labels: np.ndarray,
                  train_idx: np.ndarray) -> dict:
    """Label-fraction runs: (arch, init, fraction, seed) → FinetuneConfig, for each backbone of ``archs``
    (initialised from ``pre[arch]`` or from scratch); no teacher, no distillation; every seed for the
    fractions ≤ ``multi_seed_max``, the first for the others."""
    runs = {}
    for f in sorted(fractions, key=lambda f: abs(math.log(f / 0.1))):  # priority: 10 % (the target) first
        n = len(label_subset(labels, train_idx, f, 0))
        per_epoch = max(1, n // base.student.batch_size)
        epochs = max(base.student.epochs, math.ceil(min_steps / per_epoch))
        for seed in (seeds if f <= multi_seed_max else seeds[:1]):
            for arch in archs:
                for init in ("scratch", "ssl"):
                    cfg = student_variant(base, arch, pre[arch] if init == "ssl" else "", False)
                    cfg.stages, cfg.label_fraction, cfg.student.epochs = ["student"], f, epochs
                    cfg.split.seed, cfg.runtime.seed = seed, seed  # the label subset; weights and augmentation
                    cfg.output = str(out / f"{arch}_{init}_f{f:g}_s{seed}")
                    runs[(arch, init, f, seed)] = cfg
    return runs


KFOLD_ROWS = ("vit", "septr", "deseptr")


def kfold_configs(base: FinetuneConfig, out: Path, k: int, seed: int) -> dict:
    """``--kfold``: the rows that need no SSL checkpoint on ``k`` subject folds (every labelled subject tested
    once; per fold a quarter of the other subjects validate): ViT from scratch and SepTr train the student
    only (each fits its front end on its fold's training subjects); DeSepTr trains a CNN teacher per fold,
    then the student on the teacher's stem with distillation (its run also gives the teacher's row)."""
    base = copy.deepcopy(base)
    base.split = SplitConfig(mode="kfold", k=k, val_fraction=0.25, seed=seed)
    runs = main_configs(base, out, {"vit": "", "swin": ""}, {"vit": "", "swin": ""})
    runs = {name: runs[name] for name in KFOLD_ROWS}
    runs["deseptr"].stages = ["teacher", "student"]
    return runs


def curve_name(key: tuple) -> str:
    """The job name of a curve run: ``curve:ARCH:INIT:FRACTION:SEED``."""
    return "curve:{}:{}:{:g}:{}".format(*key)


# -- running them (in worker processes, one torch thread each) ---------------------------------------
def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_job(kind: str, config: dict, reuse: bool) -> dict:
    """One finetune (``kind`` "finetune") or pretraining run, timed; a finished run with the same config
    and a ``benchmark_timing.json`` is reused with ``reuse``."""
    if kind == "pretrain":
        return pretrain(from_dict(PretrainConfig, config), reuse)
    cfg = from_dict(FinetuneConfig, config)
    out = Path(cfg.output)
    timing = out / "benchmark_timing.json"
    if reuse and timing.is_file() and json.loads(timing.read_text()).get("config") == config:
        return json.loads(timing.read_text())
    if out.exists():
        shutil.rmtree(out)
    with Timer() as t:
        summary = run_finetune(cfg)
    stage = cfg.stages[-1]
    fold, test = summary["folds"][0], summary["stages"][stage]
    res = {"wall_s": t.wall, "cpu_s": t.cpu, "accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
           "kappa": test["kappa"], "subject_macro_f1": test["subject_summary"]["macro_f1"],
           "train_windows": fold["windows"]["train"], "steps": fold[stage]["step"],
           "epochs": fold[stage]["epochs_run"], "best_epoch": fold[stage]["best_epoch"] + 1,
           "val_macro_f1": fold[stage]["best_val_macro_f1"],
           "val_macro_f1_folds": [f[stage]["best_val_macro_f1"] for f in summary["folds"]],
           "stages": {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"], "kappa": v["kappa"],
                          "subject_macro_f1": v["subject_summary"]["macro_f1"]}
                      for k, v in summary["stages"].items()}, "config": config}
    timing.write_text(json.dumps(res, indent=2) + "\n")
    return res


def run_all(jobs: dict, deps: dict, n_jobs: int, threads: int, reuse: bool, done: dict) -> dict:
    """Run ``jobs`` (name → (kind, config dict), in priority order) on ``n_jobs`` processes, a job once all
    its ``deps`` are in ``done``; at most ``n_jobs`` in flight, so a job that becomes ready jumps the queue."""
    pending, running = dict(jobs), {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n_jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        while pending or running:
            for name in [n for n in pending if all(d in done for d in deps.get(n, ()))]:
                if len(running) >= n_jobs:
                    break
                kind, config = pending.pop(name)
                running[pool.submit(run_job, kind, config, reuse)] = name
            if not running:
                raise RuntimeError(f"jobs waiting on unfinished dependencies: {sorted(pending)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                name = running.pop(fut)
                done[name] = fut.result()
                r = done[name]
                score = f"macro-F1 {r['macro_f1']:.3f}, " if "macro_f1" in r else ""
                print(f"[done] {name}: {score}{r['wall_s'] / 60:.1f} min wall, {r['cpu_s'] / 60:.1f} CPU-min",
                      flush=True)
    return done


def checked_pretrain(path: Path, split: dict, store) -> dict:
    """A given pretraining run folder: it must have pretrained on this benchmark's store (the fingerprint its
    checkpoints record; older checkpoints without one get a warning) and excluded the validation and test
    subjects; its timing if known."""
    cfg_file, newest = path / "config.yaml", latest_checkpoint(path / "checkpoints")
    if not cfg_file.is_file() or newest is None:
        raise SystemExit(f"{path}: not a finished `wearspec pretrain` run (config.yaml and checkpoints/ expected)")
    state = load_checkpoint(newest)
    if not (state.get("data") or {}).get("store_fingerprint"):
        print(f"warning: {path}: its checkpoints do not record the store they were trained on; cannot check that "
              f"it is this benchmark's store", flush=True)
    try:
        check_same_store(state, store, newest, remedy=f"pretrain on {store.path}")
    except WearspecError as e:
        raise SystemExit(str(e))
    excluded = set((yaml.safe_load(cfg_file.read_text()) or {}).get("exclude_subjects") or [])
    leaked = sorted(set(split["pretrain_excluded"]) - excluded)
    if leaked:
        raise SystemExit(f"{path}: pretraining saw validation/test subjects {leaked}; pretrain with "
                         f"exclude_subjects={split['pretrain_excluded']}")
    timing = path / "benchmark_timing.json"
    info = json.loads(timing.read_text()) if timing.is_file() else {}
    return {k: info.get(k) for k in ("wall_s", "cpu_s", "steps", "epochs")} | {"dir": str(path)}


def same_frontend(a: str, b: str) -> bool:
    ca, cb = (load_checkpoint(latest_checkpoint(Path(p) / "checkpoints")) for p in (a, b))
    fa, fb = ({k: v for k, v in c["teacher"].items() if k.startswith("frontend.")} for c in (ca, cb))
    return (ca["encoder"]["frontend"] == cb["encoder"]["frontend"] and fa.keys() == fb.keys()
            and all(torch.equal(fa[k], fb[k]) for k in fa))


# -- report -------------------------------------------------------------------------------------------
def main_table(res: dict) -> str:
    lines = ["| model | init | distillation | accuracy | macro-F1 | κ | per-subject macro-F1 | best / epochs "
             "| steps | wall (CPU) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, label, init, dist in MAIN:
        if name in res:
            r = res[name]
            lines.append(f"| {label} | {init} | {dist} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['kappa']:.3f} "
                         f"| {format_mean_sd(r['subject_macro_f1'])} | {r['best_epoch']} / {r['epochs']} "
                         f"| {r['steps']} | {r['wall_s'] / 60:.1f} min ({r['cpu_s'] / 60:.1f}) |")
    return "\n".join(lines)


def kfold_table(res: dict) -> str:
    """``--kfold`` rows: the teacher (from the DeSepTr runs), ViT, SepTr, DeSepTr; metrics pooled over folds."""
    labels = dict((name, label) for name, label, _, _ in MAIN)
    rows = [("teacher", res["deseptr"]["stages"]["teacher"], None)] if "deseptr" in res else []
    rows += [(name, res[name], res[name]) for name in KFOLD_ROWS if name in res]
    lines = ["| model | accuracy | macro-F1 | κ | per-subject macro-F1 | validation macro-F1 per fold | CPU-min |",
             "|---|---|---|---|---|---|---|"]
    for name, m, run in rows:
        val = ", ".join(f"{v:.3f}" for v in run["val_macro_f1_folds"]) if run else "–"
        cpu = f"{run['cpu_s'] / 60:.1f}" if run else "(in DeSepTr's)"
        lines.append(f"| {labels[name]} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['kappa']:.3f} "
                     f"| {format_mean_sd(m['subject_macro_f1'])} | {val} | {cpu} |")
    return "\n".join(lines)


def curve_rows(curve: dict, archs: list[str]) -> list[dict]:
    """One row per (backbone, fraction): scratch and SSL-initialised macro-F1 over seeds, and their difference."""
    rows = []
    for arch, f in sorted({k[::2] for k in curve}, key=lambda af: (archs.index(af[0]), af[1])):
        row = {"arch": arch, "fraction": f}
        for init in ("scratch", "ssl"):
            runs = [curve[k] for k in sorted(curve) if k[:3] == (arch, init, f)]
            row[init] = {"macro_f1": mean_sd([r["macro_f1"] for r in runs]), "per_seed": [r["macro_f1"] for r in runs],
                         "subject_mean": mean_sd([r["subject_macro_f1"]["mean"] for r in runs]),
                         "kappa": mean_sd([r["kappa"] for r in runs])}
            row.update(windows=runs[0]["train_windows"], epochs=runs[0]["epochs"], steps=runs[0]["steps"],
                       seeds=len(runs))
        row["delta"] = row["ssl"]["macro_f1"]["mean"] - row["scratch"]["macro_f1"]["mean"]
        rows.append(row)
    return rows


def curve_table(rows: list[dict]) -> str:
    lines = ["| backbone | labels | windows | epochs × steps | seeds | scratch macro-F1 | SSL-init macro-F1 "
             "| SSL − scratch | scratch per-seed | SSL per-seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def seeds(init):
            return ", ".join(f"{v:.3f}" for v in r[init]["per_seed"])

        msd = {i: format_mean_sd(r[i]["macro_f1"]) if r["seeds"] > 1 else f"{r[i]['macro_f1']['mean']:.3f}"
               for i in ("scratch", "ssl")}
        lines.append(f"| {ARCH_NAMES[r['arch']]} | {r['fraction']:.0%} | {r['windows']} "
                     f"| {r['epochs']} × {r['steps']} | {r['seeds']} | {msd['scratch']} | {msd['ssl']} "
                     f"| {r['delta']:+.3f} | {seeds('scratch')} | {seeds('ssl')} |")
    return "\n".join(lines)


def verdict(res: dict, rows: list[dict]) -> list[str]:
    out = []
    if {"deseptr", "septr", "vit"} <= set(res):
        d, s, v = (res[k]["macro_f1"] for k in ("deseptr", "septr", "vit"))
        out.append(f"DeSepTr {d:.3f} ≥ SepTr {s:.3f} ≥ ViT from scratch {v:.3f} (test macro-F1): "
                   f"{'met' if d >= s >= v else 'not met'} (DeSepTr ≥ SepTr: {d >= s}, SepTr ≥ ViT: {s >= v})")
    for r in rows:
        if math.isclose(r["fraction"], 0.1):
            a, b = r["ssl"]["macro_f1"]["mean"], r["scratch"]["macro_f1"]["mean"]
            out.append(f"{ARCH_NAMES[r['arch']]} SSL-initialised {a:.3f} > scratch {b:.3f} at 10 % labels "
                       f"(mean of {r['seeds']} seeds): {'met' if a > b else 'not met'}")
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=15, help="epochs of every main-table run (no early stopping)")
    ap.add_argument("--batch", type=int, default=32, help="batch size of every run")
    ap.add_argument("--fractions", default="0.05,0.1,0.25,1", help="label fractions of the curve ('' = no curve)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the curve's small fractions (the others: the first)")
    ap.add_argument("--multi-seed-max", type=float, default=0.1, help="fractions up to this one run every seed")
    ap.add_argument("--min-steps", type=int, default=120, help="curve runs train at least this many steps")
    ap.add_argument("--curve-backbones", default="vit",
                    help="comma-separated backbones of the label-fraction curve, scratch vs SSL-initialised each "
                         "(vit, swin; a Swin curve costs about as much as the ViT one)")
    ap.add_argument("--pretrain-vit", type=Path, default=None, help="a finished ViT pretraining run to reuse")
    ap.add_argument("--pretrain-swin", type=Path, default=None, help="a finished Swin pretraining run to reuse")
    ap.add_argument("--budget-min", type=float, default=10.0,
                    help="pretraining budget per backbone when no run is given (scales the configs' epochs)")
    ap.add_argument("--only", default="", help="comma-separated main-table runs to keep (default: all)")
    ap.add_argument("--kfold", type=int, default=0,
                    help="K ≥ 2: instead of the one split, ViT from scratch, SepTr and DeSepTr (+ its CNN teacher) on "
                         "K subject folds, every labelled subject tested once; no pretraining, no curve")
    add_data_args(ap, "/tmp/wearspec-bench-finetune")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs with the same config")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    curve_archs = [a.strip() for a in args.curve_backbones.split(",") if a.strip()]
    if not curve_archs or set(curve_archs) - set(ARCH_NAMES):
        ap.error(f"--curve-backbones: expected a comma-separated subset of {', '.join(ARCH_NAMES)}, "
                 f"got {args.curve_backbones!r}")

    with Timer() as t_data:
        store = make_store(args.out / "store", args.unlabelled, args.seed)
    if args.kfold:
        print(f"store: {len(store)} windows ({int((store.labels >= 0).sum())} labelled)")
        return kfold_main(args, store)
    split = subject_split(store, args.split_seed)
    print(f"store: {len(store)} windows ({int((store.labels >= 0).sum())} labelled); prepared in {t_data.wall:.1f} s")
    print(f"split: train {split['train']}, val {split['val']}, test {split['test']}; pretraining excludes "
          f"{split['pretrain_excluded']}", flush=True)

    # 1. SSL checkpoints: given, or pretrained here (both backbones side by side)
    pre, done, jobs = {}, {}, {}
    for arch, given in (("vit", args.pretrain_vit), ("swin", args.pretrain_swin)):
        if given is not None:
            done[f"pretrain_{arch}"] = checked_pretrain(given, split, store)
            pre[arch] = str(given)
        else:
            pre[arch] = str(args.out / "pretrain" / arch)
            cfg = pretrain_config(arch, args.out / "store", Path(pre[arch]), split, args.budget_min, [])
            jobs[f"pretrain_{arch}"] = ("pretrain", to_dict(cfg))
    if jobs:
        print(f"pretraining {', '.join(jobs)} ({args.budget_min:g} min budget each)", flush=True)
        run_all(jobs, {}, args.jobs, args.threads, args.reuse, done)

    # 2. the runs: one teacher (two if the Swin checkpoint brings other spectrograms), students, curve
    base = base_config(args, args.out / "store")
    base.split = SplitConfig(mode="holdout", test_subjects=split["test"], val_subjects=split["val"], seed=0)
    ft = args.out / "finetune"
    teachers = {a: str(ft / ("teacher" if a == "vit" else "teacher_swin") / "holdout" / "teacher" / "best.pt")
                for a in ("vit", "swin")}
    two_teachers = not same_frontend(pre["vit"], pre["swin"])
    if not two_teachers:
        teachers["swin"] = teachers["vit"]
    runs = main_configs(base, ft, pre, teachers)
    if two_teachers:
        print("the Swin checkpoint's front end differs from the ViT's: a second teacher for the Swin students")
        runs["teacher_swin"] = student_variant(base, "swin", pre["swin"], True)
        runs["teacher_swin"].stages = ["teacher"]
        runs["teacher_swin"].output = str(Path(teachers["swin"]).parents[2])
    keep = {s.strip() for s in args.only.split(",") if s.strip()}
    runs = {k: v for k, v in runs.items() if not keep or k in keep or k.startswith("teacher")}
    deps = {k: ["teacher_swin" if k.startswith("swin") and "teacher_swin" in runs else "teacher"]
            for k in runs if not k.startswith("teacher")}
    order = ["teacher", "teacher_swin", "septr", "deseptr"] + [k for k in runs]  # the long ones first
    jobs = {k: ("finetune", to_dict(runs[k])) for k in dict.fromkeys(order) if k in runs}
    train_idx = np.flatnonzero(np.isin(store.subjects, [store.subject_names.index(s) for s in split["train"]])
                               & (store.labels >= 0))
    curve = curve_configs(base, ft / "curve", pre, curve_archs, fractions, seeds, args.min_steps,
                          args.multi_seed_max, store.labels, train_idx)
    for key, cfg in curve.items():
        jobs[curve_name(key)] = ("finetune", to_dict(cfg))
    print(f"{len(jobs)} fine-tuning runs on {args.jobs} process(es), {args.threads} thread(s) each", flush=True)
    run_all(jobs, deps, args.jobs, args.threads, args.reuse, done)

    res = {k: done[k] for k in runs}
    curve_res = {key: done[curve_name(key)] for key in curve}
    rows = curve_rows(curve_res, curve_archs) if curve_res else []
    print(f"\nTest subjects {', '.join(split['test'])}; pooled metrics and per-subject macro-F1 mean ± SD.\n")
    print(main_table(res))
    if rows:
        print("\nLabel-fraction curve (no distillation; macro-F1 mean ± SD over seeds):\n")
        print(curve_table(rows))
    for k in ("pretrain_vit", "pretrain_swin"):
        p = done[k]
        if p.get("wall_s") is not None:
            print(f"{k}: {p.get('epochs')} epochs, {p.get('steps')} steps, {p['wall_s'] / 60:.1f} min wall, "
                  f"{p['cpu_s'] / 60:.1f} CPU-min")
    lines = verdict(res, rows)
    print("\n" + "\n".join(lines))
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "split": split, "torch_threads": args.threads,
           "pretrain": {k: {kk: vv for kk, vv in done[k].items() if kk != "config"} for k in ("pretrain_vit",
                                                                                             "pretrain_swin")},
           "main": {k: {kk: vv for kk, vv in v.items() if kk != "config"} for k, v in res.items()},
           "curve": rows,
           "curve_runs": {curve_name(k): {kk: vv for kk, vv in v.items() if kk != "config"}
                          for k, v in curve_res.items()},
           "verdict": lines}
    return save_results(args.json, out)


def base_config(args, store_dir: Path) -> FinetuneConfig:
    """``configs/finetune_deseptr.yaml`` with the benchmark's budget: ``--epochs`` × ``--batch`` for the
    teacher and the student, no early stopping, CPU."""
    base = load_config(FinetuneConfig, DESEPTR)
    base.store = str(store_dir)
    for section in (base.teacher, base.student):
        section.epochs, section.batch_size, section.patience = args.epochs, args.batch, 0
    base.runtime.device, base.runtime.log_every = "cpu", 50
    return base


def kfold_main(args, store) -> dict:
    """``--kfold K``: :func:`kfold_configs` run side by side, the table and the ordering verdict."""
    runs = kfold_configs(base_config(args, args.out / "store"), args.out / f"kfold{args.kfold}", args.kfold,
                         args.split_seed)
    print(f"{len(runs)} runs on {args.kfold} subject folds, {args.jobs} process(es)", flush=True)
    order = ["deseptr", "septr", "vit"]  # the long ones first
    res = run_all({k: ("finetune", to_dict(runs[k])) for k in order}, {}, args.jobs, args.threads, args.reuse, {})
    n = res["vit"]["subject_macro_f1"]["n"]
    print(f"\n{args.kfold} subject folds, {n} test subjects in all; metrics pooled over the folds.\n")
    print(kfold_table(res))
    lines = verdict(res, [])
    print("\n" + "\n".join(lines))
    return save_results(args.json, {"args": {k: str(v) for k, v in vars(args).items()}, "kfold": args.kfold,
                                    "main": {k: {kk: vv for kk, vv in v.items() if kk != "config"}
                                             for k, v in res.items()}, "verdict": lines})


if __name__ == "__main__":
    main()
