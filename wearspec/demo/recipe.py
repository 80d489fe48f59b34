"""``wearspec demo``: the whole pipeline on one store, ending in a report folder.

Steps (each writes ``OUTPUT/steps/<step>.json`` when it is done; re-running skips finished steps, and the
pretraining and fine-tuning resume from their newest checkpoints):

1. ``data``     the embedded synthetic data (``prepare synthetic``: labelled subjects plus unlabelled ones, the
                pretraining pool) or the store given as ``store=``; one subject-wise split (test and validation
                subjects are held out of pretraining); counts and example spectrograms per class.
2. ``pretrain`` EsViT/DINO under ``torchrun --standalone --nproc_per_node=N`` (gloo on CPU, nccl on GPUs).
3. ``probe``    linear probe and k-NN of the pretrained teacher and of the same backbone randomly initialised,
                and the classical baseline (hand-crafted features + logistic regression / random forest) on the
                same split, in the teacher's report (``probe.classical.enabled=false``: off).
4. ``finetune`` DeSepTr: a CNN teacher, then a student initialised from the SSL backbone with class +
                distillation heads.
5. ``export``   ONNX bundle with the front end inside, INT8 Q/DQ, parity gates; FP32 and INT8 scored per test
                subject (the report's INT8 verdict).
6. ``stream``   a held-out recording replayed through the bundle (ONNX Runtime), compared with batch inference.
7. ``engine``   a TensorRT engine when ``tensorrt`` and a GPU are present (recorded as skipped otherwise).
8. ``report``   ``OUTPUT/report/report.html`` (self-contained) and ``report.md``: every number read from the
                files the steps wrote.

The stage sections (``pretrain``, ``probe``, ``finetune``, ``export``) are the stage recipes' own configs; the
demo sets their store, output, checkpoint and split fields, and the student's backbone to the pretrained one.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from wearspec.config import from_dict, saved_config_difference, to_dict, to_yaml
from wearspec.data.prepare import PrepareConfig
from wearspec.data.readers.config import SyntheticConfig
from wearspec.data.splits import SplitConfig, make_splits
from wearspec.data.store import WindowStore
from wearspec.demo.steps import STEPS
from wearspec.deploy.export import ExportConfig
from wearspec.errors import WearspecError
from wearspec.evaluate.probe import ProbeConfig
from wearspec.finetune.recipe import FinetuneConfig
from wearspec.models.backbones import PRESETS
from wearspec.ssl.pretrain import PretrainConfig
from wearspec.utils.io import jsonable, write_json, write_text


# -- settings sized for the embedded data on 2 CPU cores (≤ 10 minutes in all) ----------------------------


def _demo_pretrain() -> PretrainConfig:
    """configs/pretrain_vit_tiny.yaml's optimiser at the demo's budget, with the EsViT region loss and 2 local
    crops, and the full 3-D rotation that the embedded data (where the mounting rotation is a nuisance) was tuned
    with; ``runtime.amp`` is auto (bf16 only where the hardware computes it natively)."""
    return from_dict(PretrainConfig, {
        "backbone": {"name": "vit_tiny_cpu", "drop_path_rate": 0.1},
        "head": {"out_dim": 256, "hidden_dim": 512, "bottleneck_dim": 128, "region": True},
        "loss": {"teacher_temp": 0.06, "warmup_teacher_temp": 0.06},
        "optim": {"epochs": 6, "batch_size": 32, "lr": 2e-3, "warmup_epochs": 1, "weight_decay": 0.04,
                  "weight_decay_end": 0.1, "momentum_teacher": 0.99},
        "crops": {"n_global": 2, "n_local": 2},
        "augment": {"rotation_max_deg": 180.0, "time_warp_p": 0.0, "time_roll_p": 0.0, "time_mask_p": 0.0,
                    "freq_mask_p": 0.0},
        # warn, not stop: the demo's short run sits near the collapse guard's line (0.76–0.88 of log K after 40 %
        # on the 2-core VM) and must finish anywhere; its verdict block says whether pretraining helped
        "runtime": {"log_every": 10, "ckpt_every": 100, "on_collapse": "warn"},
    })


def _demo_finetune() -> FinetuneConfig:
    return from_dict(FinetuneConfig, {
        "augment": {"rotation_max_deg": 30.0, "cutmix_p": 0.5},
        "teacher": {"cnn": {"width": 16, "small_stem": True}, "epochs": 10, "batch_size": 32, "lr": 1e-3,
                    "warmup_epochs": 1, "label_smoothing": 0.1, "class_weights": "balanced", "patience": 4},
        "student": {"model": {"arch": "vit", "teacher_stem": False, "distillation": True, "head_fusion": "mean"},
                    "layer_decay": 0.75, "freeze_backbone_epochs": 1, "epochs": 12, "batch_size": 32,
                    "lr": 5e-4, "warmup_epochs": 1, "patience": 4, "distill": {"kind": "hard", "alpha": 0.5}},
        "runtime": {"log_every": 20},
    })


@dataclass
class StreamDemoConfig:
    """The replay: ``windows`` consecutive windows of one held-out recording, classified every hop by
    :func:`~wearspec.deploy.runtime.stream.run_stream` (ONNX Runtime) with this ``smoothing``."""

    windows: int = 40
    smoothing: int = 1  # moving average over this many predictions (batch inference is smoothed the same way)

    def validate(self) -> None:
        if self.windows < 2 or self.smoothing < 1:
            raise WearspecError(f"stream.windows / stream.smoothing: expected ≥ 2 and ≥ 1, got {self.windows}, "
                                f"{self.smoothing}")


@dataclass
class EngineDemoConfig:
    """TensorRT engine build + benchmark (only when ``tensorrt`` imports and a GPU is present)."""

    precision: str = "fp16"  # fp16 | int8 (the bundle's Q/DQ model)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])

    def validate(self) -> None:
        if self.precision not in ("fp16", "int8", "fp32") or not self.batch_sizes or min(self.batch_sizes) < 1:
            raise WearspecError(f"engine.precision / engine.batch_sizes: expected fp16, int8 or fp32 and batch sizes "
                                f"≥ 1, got {self.precision!r}, {self.batch_sizes!r}")


@dataclass
class DemoConfig:
    """``wearspec demo``: prepare → pretrain (torchrun) → probe → finetune → export → stream → engine → report."""

    output: str = "runs/demo"
    store: str = ""  # your own window store (any reader's output; labels needed for probe/fine-tuning); "" = synthetic
    synthetic: SyntheticConfig = field(default_factory=lambda: SyntheticConfig(unlabelled_subjects=12))
    split: SplitConfig = field(default_factory=lambda: SplitConfig(test_fraction=0.3, val_fraction=0.2))
    nproc: int = 0  # pretraining processes under torchrun; 0 = one per GPU, or 2 on a CPU
    # minutes for the whole demo (0 = none: the stages' epochs decide): split over the steps by BUDGET_SHARES, the
    # pretraining and each fine-tuning stage sized to their part (runtime.budget_min, wearspec.training.budget)
    budget_min: float = 0.0
    pretrain: PretrainConfig = field(default_factory=_demo_pretrain)
    probe: ProbeConfig = field(default_factory=lambda: ProbeConfig(n_last=4))
    finetune: FinetuneConfig = field(default_factory=_demo_finetune)
    export: ExportConfig = field(default_factory=lambda: ExportConfig(calibration_windows=256))
    stream: StreamDemoConfig = field(default_factory=StreamDemoConfig)
    engine: EngineDemoConfig = field(default_factory=EngineDemoConfig)

    def validate(self) -> None:
        if self.split.mode != "holdout":
            raise WearspecError(f"split.mode: the demo uses one holdout split, got {self.split.mode!r}")
        if self.nproc < 0:
            raise WearspecError(f"nproc: expected ≥ 0 (0 = automatic), got {self.nproc}")
        if not 0 <= self.budget_min < float("inf"):
            raise WearspecError(f"budget_min: expected minutes ≥ 0 (0 = no budget), got {self.budget_min}")
        arch = PRESETS.get(self.pretrain.backbone.name, {}).get("arch")
        if arch not in ("vit", "swin"):
            raise WearspecError(f"pretrain.backbone.name: expected a ViT or Swin preset, got "
                                f"{self.pretrain.backbone.name!r}")
        for section in ("split", "pretrain", "probe", "finetune", "export", "stream", "engine"):
            try:
                getattr(self, section).validate()
            except WearspecError as e:
                raise WearspecError(f"{section}.{e}") from None
        preset, b = PRESETS[self.pretrain.backbone.name], self.pretrain.backbone
        units, unit = (len(preset["depth"]), "stages") if arch == "swin" else (b.depth or preset["depth"], "blocks")
        if self.probe.n_last > units:  # found here, not after pretraining
            raise WearspecError(f"probe.n_last: {b.name} has {units} {unit}; expected 1…{units}, got "
                                f"{self.probe.n_last} (e.g. probe.n_last={units})")


# -- the recipe ----------------------------------------------------------------------------------------------

# parts of a demo's budget_min per step, measured on the own-store demo (2 CPU cores, ~3k windows): the two
# training steps get what the others leave; a step that ran long shrinks the parts of those after it
BUDGET_SHARES = {"data": 0.04, "pretrain": 0.52, "probe": 0.08, "finetune": 0.28, "export": 0.05, "stream": 0.01,
                 "engine": 0.01, "report": 0.01}


def step_budget_min(cfg: DemoConfig, step: str, done: dict) -> float:
    """The minutes of ``cfg.budget_min`` for ``step``: what the finished steps left, shared in proportion to
    :data:`BUDGET_SHARES` among this step and the ones after it (0 without a budget)."""
    if not cfg.budget_min:
        return 0.0
    spent = sum(float(r.get("seconds", 0.0)) for r in done.values()) / 60.0
    ahead = list(STEPS)[list(STEPS).index(step):]
    left = max(cfg.budget_min - spent, 0.0)
    return max(left * BUDGET_SHARES[step] / sum(BUDGET_SHARES[s] for s in ahead), 0.05)



def run_demo(cfg: DemoConfig) -> dict:
    """Run every unfinished step in order; returns ``{step: its record}`` (also in ``OUTPUT/steps/``)."""
    cfg.validate()
    out = Path(cfg.output)
    _check_same_demo(out, cfg)
    write_text(out / "config.yaml", to_yaml(cfg))
    done: dict[str, dict] = {}
    t_all = time.time()
    for i, name in enumerate(STEPS, 1):
        marker = out / "steps" / f"{name}.json"
        if marker.is_file() and name != "report":
            done[name] = json.loads(marker.read_text())
            _say(f"[{i}/{len(STEPS)}] {name}: done in an earlier run ({marker})")
            continue
        _say(f"[{i}/{len(STEPS)}] {name}")
        t0 = time.time()
        record = jsonable(_STEPS[name](cfg, out, done))
        record["seconds"] = round(time.time() - t0, 1)
        write_json(marker, record)
        done[name] = record
    _say(f"demo finished in {time.time() - t_all:.0f} s: {out / 'report' / 'report.html'}")
    return done


def _say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


def _check_same_demo(out: Path, cfg: DemoConfig) -> None:
    """A folder holds one demo: resuming with other settings would mix results."""
    diff = saved_config_difference(out / "config.yaml", to_dict(cfg))
    if diff is not None:
        raise WearspecError(f"{out / 'config.yaml'}: this folder holds a demo with other settings ({diff[1]}); "
                            f"use another output= or delete the folder")


def _split(done: dict) -> SplitConfig:
    d = done["data"]
    return SplitConfig(mode="holdout", test_subjects=list(d["test_subjects"]), val_subjects=list(d["val_subjects"]))


def _store(cfg: DemoConfig, out: Path) -> Path:
    return Path(cfg.store) if cfg.store else out / "store"


# -- steps ---------------------------------------------------------------------------------------------------


def step_data(cfg: DemoConfig, out: Path, done: dict) -> dict:
    from wearspec.data.inspect import format_summary, spectrogram_grid
    from wearspec.data.prepare import prepare

    if cfg.store:
        store = WindowStore(cfg.store)
    else:
        store, _ = prepare("synthetic", None, out / "store", PrepareConfig(synthetic=copy.deepcopy(cfg.synthetic)))
    if not store.has_labels:
        raise WearspecError(f"{store.path}: the store has no labelled windows; the demo's probe and fine-tuning "
                            f"need labels (prepare it from a labelled dataset)")
    sp = make_splits(store, np.flatnonzero(store.labels >= 0), cfg.split)[0]
    names = store.subject_names

    def subjects(idx: np.ndarray) -> list[str]:
        return [names[s] for s in np.unique(store.subjects[idx])]

    test, val, train = subjects(sp.test), subjects(sp.val), subjects(sp.train)
    held = np.isin(store.subjects, [names.index(s) for s in test + val])
    summary = store.summary()
    write_json(out / "data" / "summary.json", summary)
    spectrogram_grid(store, out / "data" / "spectrograms.png", per_class=3)
    print(format_summary(summary))
    return {"store": str(store.path), "windows": len(store), "labelled_windows": int((store.labels >= 0).sum()),
            "unlabelled_windows": int((store.labels < 0).sum()), "pretrain_windows": int((~held).sum()),
            "labels": store.label_names, "channels": store.channels, "rate_hz": store.rate,
            "window_samples": store.window, "hop_samples": store.hop, "test_subjects": test, "val_subjects": val,
            "train_subjects": train, "unlabelled_subjects": sorted(set(names) - set(test + val + train))}


def pretrain_config(cfg: DemoConfig, out: Path, done: dict) -> PretrainConfig:
    p = copy.deepcopy(cfg.pretrain)
    p.store, p.output = str(_store(cfg, out)), str(out / "pretrain")
    p.exclude_subjects = list(done["data"]["test_subjects"]) + list(done["data"]["val_subjects"])
    if cfg.budget_min:
        p.runtime.budget_min = round(step_budget_min(cfg, "pretrain", done), 3)
    return p


def step_pretrain(cfg: DemoConfig, out: Path, done: dict) -> dict:
    import torch

    from wearspec.utils.checkpoint import latest_checkpoint
    from wearspec.utils.logging import read_metrics

    p = pretrain_config(cfg, out, done)
    gpus = torch.cuda.device_count() if p.runtime.device in ("auto", "cuda") else 0
    nproc = cfg.nproc or gpus or 2
    if gpus and nproc > gpus:
        raise WearspecError(f"demo: nproc={nproc} with {gpus} GPU(s): pretraining runs one process per GPU; set "
                            f"nproc ≤ {gpus}, or pretrain.runtime.device=cpu for {nproc} CPU processes")
    recipe = out / "pretrain.yaml"
    write_text(recipe, to_yaml(p))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "wearspec", "pretrain", "--config", str(recipe)]
    _say(" ".join(["torchrun"] + cmd[3:]))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # wearspec importable in the workers, installed or not
    env["PYTHONPATH"] = os.pathsep.join([root] + [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x])
    rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        raise WearspecError(f"pretraining under torchrun failed (exit {rc}); its output is in {p.output}; "
                            f"re-running the demo resumes from the newest checkpoint")
    if not (Path(p.output) / "encoder.json").is_file():
        raise WearspecError(f"{p.output}: pretraining ended without its final encoder (encoder.json)")
    ckpt = latest_checkpoint(Path(p.output) / "checkpoints")
    records = [r for r in read_metrics(Path(p.output) / "metrics.jsonl") if "loss" in r]
    return {"output": p.output, "checkpoint": str(ckpt), "nproc": nproc,
            "backend": "nccl" if gpus else "gloo", "device": "cuda" if gpus else "cpu",
            "steps": int(records[-1]["step"]) if records else 0, "last": records[-1] if records else {},
            "command": " ".join(["torchrun"] + cmd[3:])}


def _probe_config(cfg: DemoConfig, out: Path, done: dict, which: str) -> ProbeConfig:
    p = copy.deepcopy(cfg.probe)
    p.checkpoint, p.store = str(out / "pretrain"), str(_store(cfg, out))
    p.output, p.which, p.split = str(out / "probe" / which), which, _split(done)
    return p


def step_probe(cfg: DemoConfig, out: Path, done: dict) -> dict:
    from wearspec.evaluate.probe import run_probe

    def scores(rep: dict, methods) -> dict:
        return {m: {**rep[m]["pooled"], "subject_summary": rep[m]["subject_summary"]} for m in methods}

    result = {}
    for which in ("teacher", "random"):
        p = _probe_config(cfg, out, done, which)
        # the classical baseline reads the windows, not the encoder: once, in the teacher's report, is enough
        p.classical.enabled = p.classical.enabled and which == "teacher"
        rep = run_probe(p)
        result[which] = {**scores(rep, ("linear", "knn")), "report": str(out / "probe" / which / "report.json")}
        if rep.get("classical"):
            result["classical"] = scores(rep["classical"], rep["classical"]["models"])
    return result


def finetune_config(cfg: DemoConfig, out: Path, done: dict) -> FinetuneConfig:
    f = copy.deepcopy(cfg.finetune)
    f.store, f.output, f.split = str(_store(cfg, out)), str(out / "finetune"), _split(done)
    f.classical.enabled = False  # the probe step's report holds the classical baseline on this same split
    f.student.init_checkpoint = str(out / "pretrain")
    f.student.model.backbone = copy.deepcopy(cfg.pretrain.backbone)
    f.student.model.arch = PRESETS[cfg.pretrain.backbone.name]["arch"]
    if cfg.budget_min:  # runtime.budget_min is per stage: the step's part over its stages
        f.runtime.budget_min = round(step_budget_min(cfg, "finetune", done) / len(f.stages), 3)
    return f


def step_finetune(cfg: DemoConfig, out: Path, done: dict) -> dict:
    from wearspec.finetune.recipe import run_finetune

    summary = run_finetune(finetune_config(cfg, out, done))
    if not summary["finished"]:
        raise WearspecError(f"fine-tuning stopped early ({summary['stopped']}); re-run the demo to resume")
    fold = summary["folds"][0]["name"]
    return {"output": summary["output"], "report": summary["report"], "stages": summary["stages"],
            "student": str(out / "finetune" / fold / "student"), "teacher": str(out / "finetune" / fold / "teacher")}


def step_export(cfg: DemoConfig, out: Path, done: dict) -> dict:
    from wearspec.deploy.export import run_export

    e = copy.deepcopy(cfg.export)
    e.checkpoint, e.store, e.output = done["finetune"]["student"], str(_store(cfg, out)), str(out / "bundle")
    e.split, e.overwrite = _split(done), True  # a bundle without this step's record is from an interrupted run
    summary = run_export(e)
    held_out = (held_out_reports(WindowStore(_store(cfg, out)), summary["bundle"], done["data"]["test_subjects"],
                                 cfg.export.accuracy_windows, cfg.pretrain.runtime.seed)
                if summary["int8"] else None)
    return {"bundle": summary["bundle"], "parity": summary["parity"], "int8": summary["int8"],
            "fp16": summary["fp16"], "opset": summary["opset"], "notes": summary["notes"], "held_out": held_out}


def held_out_reports(store: WindowStore, bundle: str, subjects: list[str], max_windows: int, seed: int) -> dict:
    """``{"fp32", "int8": classification_report}`` of the bundle's two ONNX graphs (ONNX Runtime) on the labelled
    windows of the test ``subjects`` (at most ``max_windows``, drawn with ``seed``; 0 = all): the per-subject
    scores the report's INT8 verdict resamples (the bundle itself records pooled scores only)."""
    from wearspec.deploy.runtime.backends import load_backend
    from wearspec.evaluate.metrics import classification_report

    codes = [store.subject_names.index(s) for s in subjects]
    idx = np.flatnonzero(np.isin(store.subjects, codes) & (store.labels >= 0))
    if max_windows and len(idx) > max_windows:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_windows, replace=False))
    reports = {}
    for precision in ("fp32", "int8"):
        be = load_backend(bundle, "onnxruntime", precision=precision)
        try:
            pred = np.concatenate([be.infer(store.read_batch(idx[i:i + 256])).argmax(1)
                                   for i in range(0, len(idx), 256)]) if len(idx) else np.zeros(0, np.int64)
        finally:
            be.close()
        reports[precision] = classification_report(store.labels[idx], pred, store.subjects[idx], store.label_names,
                                                   store.subject_names)
    return reports


def replay_recording(store: WindowStore, subjects: list[str], max_windows: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The longest run of hop-spaced windows of one recording of ``subjects`` → (samples (n, C), the windows'
    labels (-1 = unlabelled), recording name); samples are rebuilt from the windows (first hop of each, then all
    of the last)."""
    codes = [store.subject_names.index(s) for s in subjects]
    hop_s = store.hop / store.rate
    best = np.empty(0, dtype=np.int64)
    for rec in np.unique(store.recordings[np.isin(store.subjects, codes)]):
        idx = np.flatnonzero(store.recordings == rec)
        idx = idx[np.argsort(store.starts[idx], kind="stable")]
        breaks = np.flatnonzero(~np.isclose(np.diff(store.starts[idx]), hop_s, atol=0.5 / store.rate)) + 1
        best = max([best, *np.split(idx, breaks)], key=len)
    run = best[:max_windows]
    if len(run) < 2:
        raise WearspecError(f"{store.path}: no held-out recording has 2 consecutive windows to replay")
    windows = store.read_batch(run)
    samples = np.concatenate([w.T[: store.hop] for w in windows[:-1]] + [windows[-1].T])
    return samples, store.labels[run], store.recording_names[int(store.recordings[run[0]])]


def step_stream(cfg: DemoConfig, out: Path, done: dict) -> dict:
    import csv

    from wearspec.deploy.runtime.backends import load_backend
    from wearspec.deploy.runtime.stream import StreamConfig, run_stream

    store, bundle = WindowStore(_store(cfg, out)), done["export"]["bundle"]
    samples, labels, recording = replay_recording(store, done["data"]["test_subjects"], cfg.stream.windows)
    folder = out / "stream"
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "replay.csv"
    with open(source, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(store.channels)
        w.writerows(np.round(samples.astype(np.float64), 7).tolist())
    preds: list = []
    with open(folder / "predictions.csv", "w") as f:
        stats = run_stream(bundle, source, StreamConfig(smoothing=cfg.stream.smoothing, time_column=None), out=f,
                           err=io.StringIO(), on_prediction=preds.append)
    # the same windows in one batch, smoothed the same way
    n = len(preds)
    windows = np.stack([samples[i * store.hop: i * store.hop + store.window].T for i in range(n)])
    be = load_backend(bundle, "onnxruntime")
    try:
        probs = be.infer(windows)
    finally:
        be.close()
    k = cfg.stream.smoothing
    smoothed = np.stack([probs[max(0, i - k + 1): i + 1].mean(0) for i in range(n)])
    stream_labels = [p.label for p in preds]
    batch_labels = [store.label_names[int(j)] for j in smoothed.argmax(1)]
    scored = [(a, store.label_names[int(y)]) for a, y in zip(stream_labels, labels[:n]) if y >= 0]
    agree = float(np.mean([a == b for a, b in zip(stream_labels, batch_labels)]))
    max_diff = float(np.abs(np.stack([p.probabilities for p in preds]) - smoothed).max())
    result = {"recording": recording, "samples": int(len(samples)), "predictions": n, "smoothing": k,
              "agreement_with_batch": agree, "max_probability_difference": max_diff,
              "labelled_predictions": len(scored),
              "accuracy_vs_labels": float(np.mean([a == b for a, b in scored])) if scored else None,
              "latency": stats, "latencies_ms": [p.latency_ms for p in preds],
              "hop_ms": 1000.0 * store.hop / store.rate, "source": str(source),
              "predictions_csv": str(folder / "predictions.csv")}
    write_json(folder / "stream.json", result)
    if agree < 1.0:
        raise WearspecError(f"stream: streaming and batch inference disagree on {1 - agree:.1%} of the windows")
    return result


def step_engine(cfg: DemoConfig, out: Path, done: dict) -> dict:
    from wearspec.deploy.runtime.backends import load_backend
    from wearspec.deploy.runtime.bench import benchmark
    from wearspec.deploy.runtime.trt import build_engine_from_bundle, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is not None:
        reason += " (engines are built on the target device, e.g. a Jetson: see docs/jetson.md)"
        _say(f"engine: skipped: {reason}")
        return {"built": False, "skipped": reason}
    bundle = done["export"]["bundle"]
    meta = build_engine_from_bundle(bundle, precision=cfg.engine.precision, max_batch=max(cfg.engine.batch_sizes))
    be = load_backend(bundle, "tensorrt", precision=cfg.engine.precision)
    try:
        rows = benchmark(be, batch_sizes=cfg.engine.batch_sizes, warmup=10, iterations=100)
    finally:
        be.close()
    return {"built": True, "engine": meta, "bench": rows}


def step_report(cfg: DemoConfig, out: Path, done: dict) -> dict:
    from wearspec.demo.figures import make_figures
    from wearspec.demo.report import write_report

    figures = make_figures(out, done, seed=cfg.pretrain.runtime.seed)
    write_json(out / "report" / "figures.json", figures)
    paths = write_report(out)
    return {k: str(v) for k, v in paths.items()}


_STEPS: dict[str, Callable[[DemoConfig, Path, dict], dict]] = {
    "data": step_data, "pretrain": step_pretrain, "probe": step_probe, "finetune": step_finetune,
    "export": step_export, "stream": step_stream, "engine": step_engine, "report": step_report}
