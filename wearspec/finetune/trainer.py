"""One supervised stage of ``wearspec finetune`` (the teacher or the student) on the training harness.

:func:`train_stage` trains one :class:`~wearspec.models.classifier.Classifier` on a :class:`Stage` (data,
loss, hyper-parameters) and keeps the stage folder::

    <stage>/config.yaml        this stage's experiment settings (a resumed or finished stage must match)
    <stage>/metrics.jsonl      per step: loss, lr, grad_norm, windows/s; per epoch: validation metrics
    <stage>/checkpoints/       full state (atomic, keep-last-k; the newest is resumed automatically)
    <stage>/best.pt            the classifier of the best validation epoch (load_classifier)

Per step (as pretraining does, batched on the device): sensor augmentations → front end → spectrogram
augmentations (cut-mix also mixes the one-hot labels into soft labels) → model heads; the frozen teacher, if
any, sees the same augmented spectrograms. AdamW with parameter groups (no decay on biases, norms and the
model's ``no_weight_decay`` names; layer-wise LR decay through ``layer_id`` when ``layer_decay`` < 1),
linear warm-up then cosine LR per step, global gradient-norm clipping, bf16/fp16 autocast (fp16 with a
GradScaler; ``runtime.amp=auto`` picks bf16 where it is native), DDP under torchrun, optional frozen
backbone for the first epochs. After every epoch a validation pass on the validation subjects gives the
macro-F1 that selects ``best.pt`` and drives early stopping (``patience`` epochs without improvement). Model
selection never sees the test subjects.

The loop, resume, checkpoints and the optimiser step are :mod:`wearspec.training.harness`'s; this module
holds the stage's own part of a step (:func:`_stage_hooks`) and its epoch end (:func:`_end_epoch`). Exact
resume: the checkpoint holds the model, optimizer, scaler, sampler position, early-stopping state and the RNG
states of every rank (global torch RNG for dropout / drop-path, the private augmentation generator);
DataLoaders draw from a private per-epoch generator. On CPU a resumed stage ends with the same weights, bit
for bit, as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from wearspec.config import check_range, saved_config_difference, to_dict
from wearspec.data.augment import AugmentConfig, CutMix, build_sensor_augment, build_spec_augment
from wearspec.data.splits import Split
from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError
from wearspec.evaluate.metrics import accuracy, classification_report, macro_f1
from wearspec.evaluate.plots import plot_confusion, plot_training_curves
from wearspec.finetune.losses import WEIGHT_MODES, DistillationLoss
from wearspec.models.classifier import Classifier, save_classifier
from wearspec.models.students import StudentOutput
from wearspec.training.harness import LoopSpec, StepHooks, Trainer
from wearspec.training.runtime import RuntimeConfig, wrap
from wearspec.training.schedules import cosine_schedule, param_groups
from wearspec.utils import distributed as du
from wearspec.utils.checkpoint import load_checkpoint
from wearspec.utils.io import atomic_path, jsonable, write_json
from wearspec.utils.logging import RunLogger, read_metrics


@dataclass
class LoopConfig:
    """Optimisation and label loss of one stage (the teacher and student sections extend it)."""

    epochs: int = 30  # upper bound; early stopping usually ends the stage sooner
    batch_size: int = 64  # per rank
    lr: float = 5e-4  # peak LR after the warm-up (used as given: not scaled with the batch)
    min_lr: float = 1e-6  # end of the cosine decay
    weight_decay: float = 0.05  # AdamW; none on biases, norms, position embeddings and tokens
    warmup_epochs: int = 2  # linear LR warm-up from 0
    clip_grad: float = 1.0  # global gradient-norm clip (0 = off)
    patience: int = 10  # stop after this many epochs without a better validation macro-F1 (0 = never)
    label_smoothing: float = 0.0  # of the label cross-entropy
    class_weights: str = "none"  # balanced (inverse class frequency, mean 1) | none

    def validate(self) -> None:
        check_range("epochs", self.epochs, 1)
        check_range("batch_size", self.batch_size, 1)
        for key in ("lr", "min_lr", "weight_decay", "warmup_epochs"):
            check_range(key, getattr(self, key), 0)
        check_range("clip_grad", self.clip_grad, 0, note="0 = off")
        check_range("patience", self.patience, 0, note="0 = never stop early")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise WearspecError(f"label_smoothing: expected a number in [0, 1), got {self.label_smoothing}")
        if self.class_weights not in WEIGHT_MODES:
            raise WearspecError(f"class_weights: expected balanced or none, got {self.class_weights!r}")


@dataclass
class Stage:
    """Everything one stage trains with. ``config`` holds the stage's experiment settings as plain values
    (saved as ``config.yaml`` and compared on resume); ``teacher`` (frozen) gives distillation targets."""

    name: str  # "teacher" | "student"
    out: Path
    classifier: Classifier
    meta: dict[str, Any]  # classifier_meta(...) of ``classifier``
    loss: DistillationLoss
    store: WindowStore
    train_idx: np.ndarray  # store indices of the (labelled) training windows
    val_idx: np.ndarray  # store indices of the validation windows (may be empty: last epoch kept)
    loop: LoopConfig
    runtime: RuntimeConfig
    augment: AugmentConfig
    config: dict[str, Any]
    teacher: Classifier | None = None
    layer_decay: float = 1.0
    freeze_backbone_epochs: int = 0


class _Heads(nn.Module):
    """Spectrograms → (cls, dist) of a classifier: the module DDP wraps (DDP only hooks ``forward``)."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, spec: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.classifier.heads(spec)
        return out.cls, out.dist


def check_same_run(out: Path, config: dict[str, Any]) -> None:
    """A resumed (or skipped, finished) stage must be the same experiment as the saved ``config.yaml`` (its
    ``runtime`` section, where a budget records the length it chose, may differ)."""
    diff = saved_config_difference(out / "config.yaml", config, ignore=("runtime",))
    if diff is not None:
        raise WearspecError(f"{out / 'config.yaml'}: this stage was run with different '{diff[0]}' settings "
                            f"({diff[1]}); resume it with the same config or choose another output folder")


@torch.no_grad()
def predict(classifier: Classifier, store: WindowStore, indices: np.ndarray, batch_size: int = 256,
            device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None) -> np.ndarray:
    """Logits (n, K) float32 of the windows ``indices`` (eval mode; the training mode is restored)."""
    was_training = classifier.training
    classifier.eval()
    dev = torch.device(device)
    out = []
    for a in range(0, len(indices), batch_size):
        x = torch.from_numpy(store.read_batch(indices[a:a + batch_size])).to(dev)
        with torch.autocast(dev.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            out.append(classifier(x).float().cpu())
    classifier.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, classifier.model.num_classes), dtype=np.float32)


def _validate(classifier: Classifier, store: WindowStore, val_idx: np.ndarray, batch_size: int, dist: du.DistInfo,
              amp_dtype) -> dict[str, float] | None:
    """Validation metrics on every rank alike: each rank predicts its share, the shares are gathered."""
    if len(val_idx) == 0:
        return None
    mine = predict(classifier, store, val_idx[dist.rank::dist.world_size], batch_size, dist.device, amp_dtype)
    shares = du.all_gather_objects(mine)
    logits = np.zeros((len(val_idx), shares[0].shape[1]), dtype=np.float32)
    for r, share in enumerate(shares):
        logits[r::dist.world_size] = share
    y = store.labels[val_idx].astype(np.int64)
    pred = logits.argmax(1)
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)).item()
    return {"val_macro_f1": macro_f1(y, pred), "val_accuracy": accuracy(y, pred), "val_loss": loss}


def evaluate_stage(out: Path, name: str, classifier: Classifier, store: WindowStore, split: Split,
                   training: dict[str, Any], extra: dict[str, Any], device: torch.device | str = "cpu") -> dict:
    """Evaluate a trained stage once on its split's test subjects → ``<out>/test_predictions.npz`` (index,
    label, pred, subject, logits), ``confusion.png``, ``curves.png`` and, last, ``report.json``:
    ``{"stage", "split", "checkpoint", "training", **extra, "test": classification_report(...)}``."""
    logits = predict(classifier, store, split.test, 256, device)
    y, pred, subj = store.labels[split.test], logits.argmax(1), store.subjects[split.test]
    rep = classification_report(y, pred, subj, store.label_names, store.subject_names)
    with atomic_path(out / "test_predictions.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, index=split.test, label=y, pred=pred, subject=subj, logits=logits)
    plot_confusion(rep["confusion_matrix"], store.label_names, out / "confusion.png",
                   title=f"{name} ({split.name}): {rep['n']} test windows, {rep['n_subjects']} subjects")
    plot_training_curves(read_metrics(out / "metrics.jsonl"), out / "curves.png",
                         keys=("loss", "val_macro_f1", "val_loss", "lr"), title=f"{name} ({split.name})")
    report = jsonable({"format": "wearspec-finetune-stage-report", "version": 1, "stage": name,
                        "split": split.describe(store.subject_names), "checkpoint": str(out / "best.pt"),
                        "training": training, **extra, "test": rep})
    write_json(out / "report.json", report)
    return report


def train_stage(st: Stage, dist: du.DistInfo) -> dict[str, Any]:
    """Train (or resume) one stage; see the module docstring. Returns ``{"finished", "step", "total_steps",
    "epochs_run", "best_epoch", "best_val_macro_f1", "stopped_early", "resumed_from", "amp"}``. A finished stage
    leaves ``st.classifier`` holding the weights of ``best.pt``, in eval mode."""
    lp, rt, dev, out = st.loop, st.runtime, dist.device, Path(st.out)
    model = st.classifier.to(dev)
    net, student = model.model, model.kind == "student"
    if st.freeze_backbone_epochs and not student:
        raise WearspecError(f"{st.name}: freeze_backbone_epochs needs a student model")
    tr = Trainer(LoopSpec(st.name, st.name, out, rt, dist, st.store, st.train_idx, lp.batch_size, lp.epochs,
                          lp.clip_grad, what="training windows"))

    # -- optimiser: groups over every trainable parameter (the frozen teacher stem is left out) -------
    if student:
        net.set_backbone_trainable(True)
    decay = st.layer_decay < 1.0
    groups = param_groups(net, lp.weight_decay, layer_decay=st.layer_decay if decay else None,
                          layer_id_fn=net.layer_id if decay else None)
    spe = tr.steps_per_epoch
    tr.set_optimizer(torch.optim.AdamW(groups), lambda: {  # the LR is not scaled with the batch
        "lr": cosine_schedule(lp.lr, lp.min_lr, tr.total, min(tr.total, lp.warmup_epochs * spe)),
        "wd": np.full(tr.total, float(lp.weight_decay))})
    loss_fn = st.loss.to(dev)
    teacher = st.teacher.to(dev).eval().requires_grad_(False) if st.teacher is not None else None
    if loss_fn.needs_teacher and teacher is None:
        raise WearspecError(f"{st.name}: distillation kind {loss_fn.kind!r} needs a teacher")

    # -- resume or start -------------------------------------------------------------------------
    early = {"best_score": -math.inf, "best_epoch": -1, "bad_epochs": 0, "stopped": False}
    state = tr.resume(lambda: check_same_run(out, st.config))
    if state is not None:
        model.load_state_dict(state["state_dict"])
        early.update(state["early_stopping"])
    no_val = "; no validation subjects: no early stopping, best.pt is the last epoch" if not len(st.val_idx) else ""
    log = tr.start(st.config, lambda: yaml.safe_dump({**st.config, "runtime": to_dict(rt)}, sort_keys=False),
                   f"{st.name}: {len(tr.dataset)} training windows, {len(st.val_idx)} validation windows, "
                   f"{dist.world_size} rank(s) × batch {lp.batch_size}, {spe} steps/epoch, up to {tr.total} steps"
                   + no_val, [model])

    # -- the loop ----------------------------------------------------------------------------------
    model.train()
    step = tr.fit(_stage_hooks(st, tr, model, teacher, early, log))

    # -- finish: the best weights stay in the classifier ------------------------------------------------
    finished = bool(early["stopped"]) or step >= tr.total
    if finished:
        du.barrier()
        model.load_state_dict(load_checkpoint(out / "best.pt", map_location="cpu")["state_dict"])
        model.eval()
    log.close()
    best = early["best_score"]
    return {"finished": finished, "step": step, "total_steps": tr.total, "epochs_run": -(-step // spe),
            "best_epoch": int(early["best_epoch"]), "best_val_macro_f1": None if best == -math.inf else float(best),
            "stopped_early": bool(early["stopped"]),
            "resumed_from": tr.resumed_from.name if tr.resumed_from else None, "amp": tr.amp}


def _stage_hooks(st: Stage, tr: Trainer, model: Classifier, teacher: Classifier | None, early: dict,
                 log: RunLogger) -> StepHooks:
    """A stage's part of a step: sensor augmentations → front end → spectrogram augmentations (cut-mix also mixes
    the one-hot labels) → heads (and the frozen teacher on the same spectrograms) → distillation loss; the
    backbone frozen for the first epochs; validation, best.pt and early stopping at each epoch's end."""
    net, dev, gen = model.model, tr.device, tr.generator
    sensor_aug, spec_aug = build_sensor_augment(st.augment, channels=st.store.channels), build_spec_augment(st.augment)
    mixes, num_classes = any(isinstance(t, CutMix) for t in spec_aug.transforms), int(st.meta["num_classes"])
    heads = _Heads(model)
    phase: dict[str, Any] = {"frozen": None, "fwd": heads}

    def set_phase(epoch: int) -> None:
        """Freeze the backbone during the first ``freeze_backbone_epochs``; (re)wrap for DDP / compile, since
        DDP registers the trainable parameters when it is built."""
        frozen = epoch < st.freeze_backbone_epochs
        if frozen == phase["frozen"]:
            return
        if model.kind == "student":
            net.set_backbone_trainable(not frozen)
        phase.update(frozen=frozen, fwd=wrap(heads, tr.spec.dist.distributed, st.runtime.compile))

    def inputs(batch: dict) -> tuple[Tensor, Tensor]:
        x, y = batch["x"].to(dev, non_blocking=True), batch["label"].to(dev, non_blocking=True)
        with torch.no_grad():
            spec = model.frontend(sensor_aug(x, gen))
            if mixes:
                return spec_aug.forward_with_labels(spec, F.one_hot(y, num_classes).float(), gen)
            return spec_aug(spec, gen), y

    def loss(batch: tuple[Tensor, Tensor], step: int, epoch: int) -> tuple[Tensor, None]:
        spec, target = batch
        cls, dist_logits = phase["fwd"](spec)
        t_logits = None
        if st.loss.needs_teacher:
            with torch.no_grad():
                t_logits = teacher.logits_from_spec(spec)
        return st.loss(StudentOutput(cls, dist_logits), target, t_logits), None

    def state(at: int) -> dict:
        return {"stage": "finetune", "part": st.name, "config": st.config, "classifier": st.meta,
                "state_dict": model.state_dict(), "early_stopping": dict(early)}

    return StepHooks(inputs=inputs, loss=loss, clipped=net.parameters, state=state, replicas=model,
                     metrics=lambda i, aux: {"backbone_frozen": bool(phase["frozen"])}, epoch_start=set_phase,
                     epoch_end=lambda epoch, at: _end_epoch(st, tr, model, early, log, epoch, at),
                     stopped=lambda: bool(early["stopped"]))


def _end_epoch(st: Stage, tr: Trainer, model: Classifier, early: dict, log: RunLogger, epoch: int, at: int) -> None:
    """Validation, best.pt (with the subjects it was trained and validated on), early stopping (identical
    decisions on every rank)."""
    lp, dist = st.loop, tr.spec.dist
    val = _validate(model, st.store, st.val_idx, max(lp.batch_size, 256), dist, tr.amp_dtype)
    score = val["val_macro_f1"] if val is not None else None
    improved = score is None or score > early["best_score"]
    if improved:
        early.update(best_score=score if score is not None else -math.inf, best_epoch=epoch, bad_epochs=0)
        if dist.is_main:
            names = st.store.subject_names
            trained_on = {part: sorted({names[c] for c in np.unique(st.store.subjects[idx])})
                          for part, idx in (("train", st.train_idx), ("val", st.val_idx))}
            save_classifier(Path(st.out) / "best.pt", model, st.meta, {"part": st.name, "epoch": epoch, "step": at,
                                                                       "val_macro_f1": score, "subjects": trained_on})
    else:
        early["bad_epochs"] += 1
        early["stopped"] = bool(lp.patience) and early["bad_epochs"] >= lp.patience
    if dist.is_main:
        best = early["best_score"]
        log.log(at, epoch=epoch, **(val or {}), best_epoch=early["best_epoch"],
                best_val_macro_f1=best if math.isfinite(best) else None, early_stop=early["stopped"])
        if early["stopped"]:
            log.info(f"{st.name}: early stop after epoch {epoch}: no better validation macro-F1 for "
                     f"{lp.patience} epochs (best {early['best_score']:.4f} at epoch {early['best_epoch']})")
    du.barrier()
