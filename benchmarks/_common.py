"""Pieces shared by the benchmarks that train on the synthetic default data (``ssl.py``, ``finetune.py``).

* :func:`make_store` — ``prepare synthetic`` with extra unlabelled subjects (the pretraining pool) and any
  other ``prepare`` settings (the data shapes of ``ssl_matrix.py``);
* :func:`subject_split` — the one fixed, seeded subject split of the labelled subjects (8 test, 4 validation,
  12 training; test and validation subjects are excluded from pretraining);
* :class:`Timer` — wall-clock and process CPU seconds of a block;
* :func:`add_data_args` / :func:`save_results` — the options every such benchmark takes (work folder, JSON
  output, data and split seeds) and the JSON it writes;
* :func:`pretrain_config` / :func:`pretrain` — EsViT/DINO pretraining with ``configs/pretrain_{vit,swin}_tiny.yaml``
  at a CPU budget, timed, reusable (``reuse``) when a finished run with the same config is there;
  :func:`load_pretrain_config` / :func:`set_steps` — any recipe file, sized by a number of optimiser steps.

Import it as ``benchmarks._common`` with the repository first on ``sys.path`` (a script in ``benchmarks/``
must not leave that folder on the path: its ``ssl.py`` would shadow the standard library's ``ssl``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from wearspec.config import load_config, to_dict
from wearspec.data.prepare import PrepareConfig, prepare
from wearspec.data.store import WindowStore
from wearspec.ssl.pretrain import PretrainConfig, run_pretrain

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_BUDGET_MIN = 10.0  # the configs' epochs are sized for this many minutes on the 2-core VM
CONFIGS = {"vit": ROOT / "configs" / "pretrain_vit_tiny.yaml", "swin": ROOT / "configs" / "pretrain_swin_tiny.yaml"}
N_TEST, N_VAL, N_INNER_VAL = 8, 4, 3


# -- data and split ---------------------------------------------------------------------------------
def make_store(folder: Path, unlabelled: int, seed: int, overrides: list[str] | tuple = ()) -> WindowStore:
    """The synthetic store in ``folder`` (made once; reused while its settings are the same): the default
    data, or another shape by ``prepare`` ``overrides`` (``synthetic.*``, ``window.*``)."""
    cfg = load_config(PrepareConfig, None, list(overrides))
    cfg.synthetic.unlabelled_subjects, cfg.synthetic.seed = unlabelled, seed
    store, _ = prepare("synthetic", None, folder, cfg, progress=False)  # reused when already there
    return store


def subject_split(store: WindowStore, seed: int, tune: bool = False) -> dict[str, list[str]]:
    """Fixed subject-wise split of the labelled subjects (8 test, 4 validation, 12 training).

    ``tune``: the test subjects are dropped. The probes run 4-fold cross-validation over the 16 other
    subjects (a store holding only them; validation subjects drawn from each fold's training subjects), so
    that every setting is scored on 16 subjects instead of 4; the supervised model trains on 9 training
    subjects, selects on the other 3 and is scored on the 4 validation subjects."""
    labelled = sorted({store.subject_names[s] for s in np.unique(store.subjects[store.labels >= 0])})
    order = [str(s) for s in np.random.default_rng(seed).permutation(labelled)]
    test, val, train = sorted(order[:N_TEST]), sorted(order[N_TEST:N_TEST + N_VAL]), order[N_TEST + N_VAL:]
    split = {"train": sorted(train), "val": val, "test": test, "pretrain_excluded": sorted(test + val)}
    if tune:
        split.update(train=sorted(train[N_INNER_VAL:]), val=sorted(train[:N_INNER_VAL]), test=val,
                     probe_subjects=sorted(train + val), probe_kfold=4)
    return split


def add_data_args(ap: argparse.ArgumentParser, out: str) -> None:
    """``--out`` (work folder, default ``out``), ``--json``, ``--unlabelled``, ``--seed``, ``--split-seed``."""
    ap.add_argument("--out", type=Path, default=Path(out), help="work folder (store, runs)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--unlabelled", type=int, default=24, help="unlabelled subjects in the pretraining pool")
    ap.add_argument("--seed", type=int, default=0, help="data generator seed")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the subject split")


def save_results(path: Path | None, results: dict) -> dict:
    """Write ``results`` as JSON to ``path`` (if given; values JSON does not know become strings)."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


class Timer:
    """Wall-clock and process CPU seconds of a block."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


# -- pretraining --------------------------------------------------------------------------------------
def load_pretrain_config(recipe: Path, store: Path, run_dir: Path, excluded: list[str],
                         overrides: list[str]) -> PretrainConfig:
    """``recipe`` (a pretraining YAML) with ``overrides``, on ``store`` without the ``excluded`` subjects, on the CPU."""
    cfg = load_config(PretrainConfig, recipe, overrides)
    cfg.store, cfg.output, cfg.exclude_subjects = str(store), str(run_dir), list(excluded)
    cfg.runtime.device = "cpu"
    return cfg


def pretrain_config(arch: str, store: Path, run_dir: Path, split: dict, budget_min: float,
                    overrides: list[str]) -> PretrainConfig:
    cfg = load_pretrain_config(CONFIGS[arch], store, run_dir, split["pretrain_excluded"], overrides)
    cfg.optim.epochs = max(1, int(round(cfg.optim.epochs * budget_min / REFERENCE_BUDGET_MIN)))
    cfg.optim.warmup_epochs = min(cfg.optim.warmup_epochs, cfg.optim.epochs)
    return cfg


def set_steps(cfg: PretrainConfig, n_windows: int, steps: int) -> int:
    """Set ``cfg.optim.epochs`` so that a run over ``n_windows`` takes about ``steps`` optimiser steps (whole
    epochs of ``n_windows // batch_size`` steps, at least one; warm-up capped at the run). Returns the steps."""
    per_epoch = max(1, n_windows // cfg.optim.batch_size)
    cfg.optim.epochs = max(1, int(round(steps / per_epoch)))
    cfg.optim.warmup_epochs = min(cfg.optim.warmup_epochs, cfg.optim.epochs)
    return cfg.optim.epochs * per_epoch


def pretrain(cfg: PretrainConfig, reuse: bool) -> dict:
    run_dir = Path(cfg.output)
    timing_file = run_dir / "benchmark_timing.json"
    if reuse and timing_file.is_file() and (run_dir / "teacher_encoder.safetensors").is_file():
        saved = json.loads(timing_file.read_text())
        if saved.get("config") == to_dict(cfg):
            print(f"pretrain: reusing the finished run in {run_dir} (timed {saved['wall_s']:.0f} s when it ran)")
            return saved
    if run_dir.exists():
        shutil.rmtree(run_dir)
    with Timer() as t:
        summary = run_pretrain(cfg)
    steps = summary["steps"]
    result = {"wall_s": t.wall, "cpu_s": t.cpu, "steps": steps, "epochs": cfg.optim.epochs,
              "windows_per_s": steps * cfg.optim.batch_size / t.wall, "config": to_dict(cfg)}
    result.update(_last_health(run_dir))
    timing_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _last_health(run_dir: Path) -> dict:
    """Final loss and collapse statistics of the run (from metrics.jsonl)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    if not rows:
        return {}
    last = rows[-1]
    return {k: last[k] for k in ("loss", "entropy_norm", "mean_entropy_norm", "top_fraction") if k in last}
