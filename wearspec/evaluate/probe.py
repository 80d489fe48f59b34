"""The ``wearspec probe`` recipe: frozen features → k-NN and linear probe, subject-wise.

Read top to bottom, :func:`run_probe`:

1. loads the encoder (``encoder_from_checkpoint``; a pretrain output folder means its newest
   checkpoint in ``<dir>/checkpoints/``) and checks that the labelled store matches it: same
   channels in the same order, same rate, same window length;
2. builds the subject-wise split(s): one holdout split, k folds, leave-one-subject-out, or the
   dataset's predefined split; validation subjects always come from the training subjects;
3. extracts features of every labelled window once and caches them under ``<output>/features/``
   (keyed by the encoder weights and architecture, the feature options, the store and the torch/timm
   versions), so re-runs reuse them;
4. per split: weighted k-NN (bank = training windows) and the linear-probe sweep, selected on
   validation macro-F1 only; with ``avgpool=auto`` (a ViT) each of the two also chooses on validation
   between the CLS features and CLS + mean patch token; test predictions come last. The k-NN uses the
   linear probe's features (the last ``n_last`` CLS tokens, concatenated): DINO's ``eval_knn`` and the
   online k-NN of pretraining use the last block's only, so compare k-NN numbers at the same ``n_last``;
5. pools the test predictions of all folds (every subject is tested exactly once in k-fold/LOSO)
   into one report: pooled and per-subject accuracy, macro-F1 and κ with mean ± SD over subjects,
   per-class F1, confusion matrices;
6. runs the classical baseline (:mod:`wearspec.evaluate.classical`: hand-crafted window features with
   logistic regression and a random forest) on the same splits, unless ``classical.enabled=false``, so
   the table shows whether the deep features beat features on this data;
7. writes ``confusion_{knn,linear}.png``, ``per_subject_{knn,linear}.png`` and, last, ``report.json``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Union

import numpy as np
import torch

from wearspec.config import check_range, to_dict
from wearspec.data.splits import Split, SplitConfig, make_splits
from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError
from wearspec.evaluate.classical import MODELS as CLASSICAL_MODELS
from wearspec.evaluate.classical import ClassicalConfig, classical_baseline
from wearspec.evaluate.features import (
    FeatureCache,
    cache_key,
    extract_features,
    hash_array,
    hash_module,
    resolve_device,
)
from wearspec.evaluate.knn import knn_predict
from wearspec.evaluate.linear import LinearProbeConfig, fit_linear_probe
from wearspec.evaluate.metrics import METRICS, classification_report, format_mean_sd, macro_f1
from wearspec.evaluate.plots import plot_confusion, plot_per_subject
from wearspec.utils.checkpoint import list_checkpoints
from wearspec.utils.io import jsonable, write_json

WHICH = ("teacher", "student", "random")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".bin")


@dataclass
class ProbeConfig:
    """``wearspec probe``: evaluate a pretrained encoder by k-NN and linear probe on a labelled store."""

    checkpoint: str = ""  # pretrain checkpoint file, or a pretrain output dir (newest in <dir>/checkpoints/)
    store: str = ""  # labelled window store
    output: str = ""  # report folder
    which: str = "teacher"  # teacher | student | random (a randomly initialised baseline)
    n_last: int = 4  # features from the last n blocks (ViT: CLS tokens; Swin: pooled stages)
    # ViT: also append the mean patch token of the last block (true), or not (false: DINO's ViT-S protocol), or
    # let each split's validation subjects choose, for the k-NN and the linear probe each (auto); Swin features
    # are average-pooled already
    avgpool: Union[bool, Literal["auto"]] = False
    split: SplitConfig = field(default_factory=SplitConfig)
    knn_k: int = 20  # neighbours of the weighted k-NN
    knn_temperature: float = 0.07  # vote weight exp(cosine similarity / T)
    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    # label efficiency: a second linear probe fitted on this fraction of each split's training windows (drawn per
    # class, seeded; validation and test as for the full probe); 0 = off. Report key "linear_few".
    few_labels: float = 0.1
    # hand-crafted features + logistic regression / random forest on the same splits (classical.enabled=false: off)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    batch_size: int = 256  # feature-extraction batch
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0

    def validate(self) -> None:
        if self.which not in WHICH:
            raise WearspecError(f"which: expected one of {', '.join(WHICH)}, got {self.which!r}")
        if self.n_last < 1:
            raise WearspecError(f"n_last: expected ≥ 1, got {self.n_last}")
        if self.knn_k < 1 or not self.knn_temperature > 0:
            raise WearspecError(
                f"knn_k / knn_temperature: expected ≥ 1 and > 0, got {self.knn_k}, {self.knn_temperature}")
        if self.batch_size < 1:
            raise WearspecError(f"batch_size: expected ≥ 1, got {self.batch_size}")
        if not 0 <= self.seed < 2**32:
            raise WearspecError(f"seed: expected an integer in [0, 4294967295], got {self.seed}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise WearspecError(f"device: expected auto, cpu or cuda[:N], got {self.device!r}")
        check_range("few_labels", self.few_labels, 0, 1, high_open=True, note="0 = off")
        self.split.validate()
        self.linear.validate()
        self.classical.validate()


# -- components ----------------------------------------------------------------------------------


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as is; a folder → its newest checkpoint (``<dir>/checkpoints/`` if present)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise WearspecError(f"{p}: checkpoint not found (expected a checkpoint file or a pretrain output folder)")
    folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    found = [f for f in folder.iterdir()
             if f.is_file() and not f.name.startswith(".") and f.suffix in CHECKPOINT_SUFFIXES]
    if not found:
        raise WearspecError(f"{folder}: no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) in this folder")
    steps = list_checkpoints(folder)  # ckpt-<step>.pt: the highest step (copies need not keep modification times)
    return steps[-1] if steps else max(found, key=lambda f: (f.stat().st_mtime_ns, f.name))


def check_store_matches(store: WindowStore, meta: dict, source: str) -> None:
    """Raise unless the store's channels (and order), rate and window length equal the encoder's."""
    where = f"{store.path} does not match the encoder of {source}"
    want = meta.get("channels")
    if want is not None and list(want) != list(store.channels):
        if sorted(want) == sorted(store.channels):
            raise WearspecError(f"{where}: same channels in a different order (store {store.channels}, "
                                f"encoder {list(want)}); re-prepare the store with the encoder's channel order")
        raise WearspecError(f"{where}: channels differ (store {store.channels}, encoder {list(want)})")
    rate = meta.get("rate")
    if rate is not None and not math.isclose(float(rate), store.rate, rel_tol=1e-6):
        raise WearspecError(f"{where}: sampling rate differs (store {store.rate:g} Hz, encoder {float(rate):g} Hz)")
    window = meta.get("window")
    if window is not None and int(window) != store.window:
        raise WearspecError(
            f"{where}: window length differs (store {store.window} samples, encoder {int(window)} samples)")


def _store_identity(store: WindowStore) -> dict:
    shards = [(s["file"], (store.path / s["file"]).stat().st_size, (store.path / s["file"]).stat().st_mtime_ns)
              for s in store.manifest["shards"]]
    h = hashlib.sha256((store.path / "manifest.json").read_bytes())
    h.update(repr(shards).encode())
    return {"path": str(store.path.resolve()), "manifest_and_shards": h.hexdigest()[:16]}


def feature_sets(cfg: ProbeConfig, encoder: torch.nn.Module, dim: int) -> list[tuple[str, int]]:
    """The candidate feature sets as (name, leading columns) of the extracted (N, ``dim``) features.

    A ViT (its features grow with ``avgpool``): ``cls`` (the CLS tokens) or ``cls+avgpool`` (all columns, the
    mean patch token last), both with ``avgpool=auto``. Swin: ``pooled``. An encoder without ``probe_dim``:
    ``features``."""
    probe_dim = getattr(encoder, "probe_dim", None)
    if probe_dim is None:
        return [("features", dim)]
    extra = probe_dim(cfg.n_last, True) - probe_dim(cfg.n_last, False)
    if extra == 0:
        return [("pooled", dim)]
    if cfg.avgpool == "auto":
        return [("cls", dim - extra), ("cls+avgpool", dim)]
    return [("cls+avgpool" if cfg.avgpool else "cls", dim)]


def choose_features(sets: list[tuple[str, int]], fit: Callable[[int], object],
                    val_score: Callable[[object, int], float]) -> tuple[str, int, object, dict]:
    """Fit once per feature set and keep the best validation score (ties and no score: the first).

    Returns (name, columns, fitted, {name: validation score})."""
    best, scores = None, {}
    for name, cols in sets:
        fitted = fit(cols)
        score = val_score(fitted, cols) if len(sets) > 1 else float("nan")
        scores[name] = score
        if best is None or (math.isfinite(score) and not score <= best[3]):
            best = (name, cols, fitted, score if math.isfinite(score) else -math.inf)
    return best[0], best[1], best[2], scores


def _table(report: dict) -> str:
    """The printed summary: one row per method (k-NN, linear, then the classical baseline's models)."""
    head = (f"{'method':<13}{'accuracy':>10}{'macro-F1':>10}{'kappa':>8}   "
            f"{'subject macro-F1':>18}{'subject kappa':>18}")
    classical = report.get("classical", {})
    rows = [("k-NN", report["knn"]), ("linear", report["linear"])]
    if "linear_few" in report:
        rows.append((f"linear {report['linear_few']['fraction']:.0%}", report["linear_few"]))
    rows += [(CLASSICAL_MODELS[m], classical[m]) for m in classical.get("models", [])]
    lines = [head]
    for name, r in rows:
        p, s = r["pooled"], r["subject_summary"]
        lines.append(f"{name:<13}{p['accuracy']:>10.3f}{p['macro_f1']:>10.3f}{p['kappa']:>8.3f}   "
                     f"{format_mean_sd(s['macro_f1']):>18}{format_mean_sd(s['kappa']):>18}")
    for sel, ksel in zip(report["linear"]["selection"], report["knn"]["selection"]):
        lines.append(f"linear probe {sel['split']}: {sel['features']}, lr={sel['lr']:g} "
                     f"weight_decay={sel['weight_decay']:g} ({sel['selected_on']} macro-F1 {sel['score']:.3f}); "
                     f"k-NN: {ksel['features']}")
    if classical.get("enabled"):
        f = classical["features"]
        chosen = ", ".join(f"{sel['C']:g}" for sel in classical.get("logreg", {}).get("selection", []))
        lines.append(f"{' and '.join(CLASSICAL_MODELS[m] for m in classical['models'])}: {f['count']} hand-crafted "
                     f"features per window, on the same splits{f' (LR C per split: {chosen})' if chosen else ''}; "
                     "classical.enabled=false: off")
    return "\n".join(lines)


# -- the recipe ----------------------------------------------------------------------------------


def _load(cfg: ProbeConfig, encoder: torch.nn.Module | None, meta: dict | None):
    """(store, encoder, meta, checkpoint path or None): the checkpoint's encoder unless one is given;
    the store checked against the encoder's meta and for labels."""
    if not cfg.store or not cfg.output:
        raise WearspecError("probe: both store=… (labelled window store) and output=… (report folder) are required")
    store = WindowStore(cfg.store)
    store.verify()  # checksums and NaN/Inf, once, before any read
    ckpt = None
    if encoder is None:
        if not cfg.checkpoint:
            raise WearspecError("probe: checkpoint=… is required (a pretrain checkpoint file or output folder)")
        from wearspec.models.encoder import encoder_from_checkpoint

        ckpt = resolve_checkpoint(cfg.checkpoint)
        encoder, meta = encoder_from_checkpoint(ckpt, which=cfg.which)
    if meta:
        check_store_matches(store, meta, str(ckpt or cfg.checkpoint or "the given encoder"))
    if not store.has_labels:
        raise WearspecError(f"{store.path}: the store has no labels; the probe needs a labelled store "
                            "(prepare it from a labelled dataset)")
    return store, encoder, meta, ckpt


def _encoder_features(cfg: ProbeConfig, store: WindowStore, encoder: torch.nn.Module, meta: dict | None,
                      needed: np.ndarray, device: torch.device, verbose: bool):
    """Features (len(needed), D) and labels of the windows ``needed`` (sorted store indices), from
    ``<output>/features/`` when cached; returns (feats, labels, cache file)."""
    encoder.to(device)
    avgpool = cfg.avgpool is not False  # "auto" extracts both and lets validation choose per split
    # the weights, and what they do not hold: the architecture and front end settings, and the library versions
    import timm

    key = cache_key(encoder=hash_module(encoder), architecture=repr(encoder), meta=meta, which=cfg.which,
                    n_last=cfg.n_last, avgpool=avgpool, store=_store_identity(store), indices=hash_array(needed),
                    versions=f"torch {torch.__version__}, timm {timm.__version__}")
    fn = functools.partial(encoder.probe_features, n_last=cfg.n_last, avgpool=avgpool)
    cache = FeatureCache(Path(cfg.output) / "features")
    (feats, labels, _), hit = cache.get_or_compute(
        key, lambda: extract_features(fn, store, needed, cfg.batch_size, device))
    if verbose:
        print(f"features: {feats.shape[0]} windows × {feats.shape[1]} dims "
              f"({'cached' if hit else 'computed'}: {cache.path(key)})")
    return feats, labels, cache.path(key)


def few_label_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of ``fraction`` of ``labels``' windows, drawn per class (at least one of each), seeded."""
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), max(1, round(fraction * np.sum(labels == c))), replace=False)
              for c in np.unique(labels)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _fit_linear(cfg: ProbeConfig, sets, feats, labels, tr, va, n_classes, device):
    """The linear probe on training rows ``tr``, its feature set and hyper-parameters chosen on ``va``."""
    return choose_features(
        sets, lambda cols: fit_linear_probe(feats[tr, :cols], labels[tr], feats[va, :cols], labels[va],
                                            n_classes, cfg.linear, seed=cfg.seed, device=device),
        lambda p, cols: p.val_macro_f1 if p.selected_on == "val" else float("nan"))


def _probe_split(cfg: ProbeConfig, sp: Split, rows: Callable[[np.ndarray], np.ndarray], feats: np.ndarray,
                 labels: np.ndarray, sets: list[tuple[str, int]], n_classes: int, device: torch.device) -> dict:
    """k-NN and linear probe of one split: selection on its validation rows, test rows last.

    ``rows`` maps store indices to rows of ``feats``/``labels``. Returns {"knn", "linear": test
    predictions, "knn_selection", "linear_selection": the choices made}."""
    tr, va = rows(sp.train), rows(sp.val)

    def knn(cols: int, query: np.ndarray) -> np.ndarray:
        return knn_predict(feats[tr, :cols], labels[tr], feats[query, :cols], cfg.knn_k, cfg.knn_temperature,
                           n_classes, device=device)[0]

    lin_set, lin_cols, probe, lin_scores = _fit_linear(cfg, sets, feats, labels, tr, va, n_classes, device)
    few = None
    if cfg.few_labels:
        few = _fit_linear(cfg, sets, feats, labels, tr[few_label_rows(labels[tr], cfg.few_labels, cfg.seed)], va,
                          n_classes, device)
    knn_set, knn_cols, _, knn_scores = choose_features(
        sets, lambda cols: None, lambda _, cols: macro_f1(labels[va], knn(cols, va)) if va.size else float("nan"))
    te = rows(sp.test)  # test windows are first touched here, after model selection
    several = len(sets) > 1
    return {
        "knn": knn(knn_cols, te),
        "linear": probe.predict(feats[te, :lin_cols])[0],
        "linear_few": few[2].predict(feats[te, :few[1]])[0] if few else None,
        "linear_selection": {"split": sp.name, "features": lin_set, **probe.selection(),
                             **({"features_val_macro_f1": lin_scores} if several else {})},
        "knn_selection": {"split": sp.name, "features": knn_set,
                          **({"features_val_macro_f1": knn_scores} if several else {})},
    }


def _write_outputs(out: Path, report: dict, label_names: list[str], verbose: bool) -> None:
    """Figures of the k-NN and the linear probe, then report.json last (each write atomic)."""
    for method, name in (("knn", "k-NN"), ("linear", "linear probe")):
        r = report[method]
        plot_confusion(r["confusion_matrix"], label_names, out / f"confusion_{method}.png",
                       title=f"{name}: {r['n']} test windows, {r['n_subjects']} subjects")
        plot_per_subject(r["per_subject"], out / f"per_subject_{method}.png", metric="macro_f1",
                         title=f"{name}: macro-F1 per test subject")
    write_json(out / "report.json", report)
    if verbose:
        print(_table(report))
        print(f"report: {out / 'report.json'}")


def run_probe(cfg: ProbeConfig, encoder: torch.nn.Module | None = None, meta: dict | None = None,
              *, verbose: bool = True) -> dict:
    """Run the probe recipe (module docstring); returns the report written to ``<output>/report.json``.

    ``encoder`` (with a ``probe_features(x_raw (B, C, T), n_last, avgpool) -> (B, D)`` method) and its
    ``meta`` may be given instead of ``cfg.checkpoint``; without ``meta`` the store check is skipped.
    """
    cfg.validate()
    store, encoder, meta, ckpt = _load(cfg, encoder, meta)
    torch.manual_seed(cfg.seed)  # the probe's own draws (the `random` encoder has its own fixed seed)
    splits = make_splits(store, np.flatnonzero(store.labels >= 0), cfg.split)
    needed = np.unique(np.concatenate([np.concatenate([s.train, s.val, s.test]) for s in splits]))
    device = resolve_device(cfg.device)
    feats, labels, cache_file = _encoder_features(cfg, store, encoder, meta, needed, device, verbose)
    sets = feature_sets(cfg, encoder, feats.shape[1])
    results = [_probe_split(cfg, sp, functools.partial(np.searchsorted, needed), feats, labels, sets,
                            len(store.label_names), device) for sp in splits]
    classical = classical_baseline(store, splits, cfg.classical, seed=cfg.seed, verbose=verbose)

    def pooled(y, pred, subj) -> dict:
        return classification_report(y, pred, subj, store.label_names, store.subject_names)

    fold_reports = []
    for i, (sp, r) in enumerate(zip(splits, results)):
        y, subj = labels[np.searchsorted(needed, sp.test)], store.subjects[sp.test]
        fold = {**sp.describe(store.subject_names), **{m: pooled(y, r[m], subj)["pooled"] for m in ("knn", "linear")}}
        if classical["enabled"]:
            fold["classical"] = {m: classical["splits"][i][m] for m in classical["models"]}
        fold_reports.append(fold)
    ti = np.concatenate([sp.test for sp in splits])
    y_test, s_test = store.labels[ti], store.subjects[ti]
    knn_report = pooled(y_test, np.concatenate([r["knn"] for r in results]), s_test)
    lin_report = pooled(y_test, np.concatenate([r["linear"] for r in results]), s_test)
    knn_report.update(k=cfg.knn_k, temperature=cfg.knn_temperature, bank="train",
                      selection=[r["knn_selection"] for r in results])
    lin_report["selection"] = [r["linear_selection"] for r in results]
    few_report = None
    if cfg.few_labels:
        few_report = {**pooled(y_test, np.concatenate([r["linear_few"] for r in results]), s_test),
                      "fraction": cfg.few_labels}
    report = jsonable({
        "format": "wearspec-probe-report",
        "version": 1,
        "checkpoint": str(ckpt) if ckpt else (cfg.checkpoint or None),
        "store": str(store.path),
        "which": cfg.which,
        "encoder": meta or {},
        "features": {"windows": int(feats.shape[0]), "dim": int(feats.shape[1]), "n_last": cfg.n_last,
                     "avgpool": cfg.avgpool, "sets": dict(sets), "cache": str(cache_file)},
        "labels": store.label_names,
        "metrics": list(METRICS),
        "splits": fold_reports,
        "knn": knn_report,
        "linear": lin_report,
        **({"linear_few": few_report} if few_report else {}),
        **({"classical": classical} if classical["enabled"] else {}),
        "config": to_dict(cfg),
    })
    _write_outputs(Path(cfg.output), report, store.label_names, verbose)
    return report
