"""``wearspec finetune``: DeSepTr / DeiT fine-tuning — a CNN teacher, then a transformer student distilled from it.

Read top to bottom, :func:`run_finetune`:

1. checks the inputs before any training: a labelled store; the pretrain checkpoint of
   ``student.init_checkpoint`` (its encoder must fit the store and the student); a given
   ``teacher_checkpoint`` (labels, channels, rate and window of the store);
2. builds the subject-wise split(s) (holdout, k-fold, leave-one-subject-out or predefined); validation
   subjects come from the training subjects and only select epochs; ``label_fraction`` keeps a stratified,
   seeded fraction of the training windows (data-efficiency curves);
3. per fold (``<output>/<fold>/``, fold ``holdout``, ``fold1of5``, …): the front end — from the pretrain
   checkpoint (the SSL backbone only makes sense on the spectrograms it was trained on), else from the
   given teacher, else fitted on the training windows (``frontend.pt``); then the stages:
   ``teacher/`` (ResNet-18, label smoothing, class weights) and ``student/`` (ViT / Swin / SepTr / CNN with
   the frozen teacher's stem and distillation targets), each trained by
   :func:`~wearspec.finetune.trainer.train_stage` (best epoch on validation macro-F1, early stopping,
   full-state checkpoints, exact resume) and evaluated once on the test subjects: ``report.json``,
   ``test_predictions.npz``, ``confusion.png``, ``curves.png``;
4. pools the test predictions of all folds (every subject tested once in k-fold / LOSO) into the top-level
   ``report.json`` with ``confusion_<stage>.png`` and ``per_subject_<stage>.png``, beside the classical
   baseline (:mod:`wearspec.evaluate.classical`) fitted on the same training windows of the same splits
   (``classical.enabled=false``: off).

A stage whose ``report.json`` exists is finished and skipped on a re-run (its settings must match); an
unfinished one resumes from its newest checkpoint. ``runtime.max_steps`` stops the running stage with a
checkpoint, and the run there.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wearspec.config import from_dict, to_dict, to_yaml
from wearspec.data.augment import AugmentConfig
from wearspec.data.frontend import FrontendConfig, SpectrogramFrontend, build_frontend
from wearspec.data.splits import Split, SplitConfig, make_splits
from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError
from wearspec.evaluate.classical import MODELS as CLASSICAL_MODELS
from wearspec.evaluate.classical import ClassicalConfig, classical_baseline
from wearspec.evaluate.metrics import classification_report
from wearspec.evaluate.plots import plot_confusion, plot_per_subject
from wearspec.evaluate.probe import check_store_matches
from wearspec.utils.io import jsonable
from wearspec.finetune.losses import KINDS, DistillationLoss, class_weights
from wearspec.finetune.trainer import LoopConfig, Stage, check_same_run, evaluate_stage, train_stage
from wearspec.models.classifier import Classifier, classifier_meta, load_classifier, trained_subjects
from wearspec.models.cnn import CNNConfig, build_teacher
from wearspec.models.students import StudentConfig, build_student, init_from_pretrain
from wearspec.training.runtime import RuntimeConfig
from wearspec.utils import distributed as du
from wearspec.utils.checkpoint import latest_checkpoint, load_checkpoint, load_torch, save_torch
from wearspec.utils.io import write_json, write_text
from wearspec.utils.seed import seed_everything

STAGES = ("teacher", "student")


@dataclass
class TeacherConfig(LoopConfig):
    """The CNN teacher (DeSepTr: ResNet-18 with label smoothing 0.1, class weights, patience 10)."""

    lr: float = 1e-3
    label_smoothing: float = 0.1
    class_weights: str = "balanced"
    cnn: CNNConfig = field(default_factory=CNNConfig)

    def validate(self) -> None:
        _prefixed("teacher", super().validate)


@dataclass
class DistillConfig:
    """DeiT distillation: loss = (1 − alpha)·CE(y, cls head) + alpha·D(teacher, dist head)."""

    kind: str = "hard"  # hard: CE(dist, argmax teacher) (DeiT's best, DeSepTr's); soft: KL at temperature tau; none
    alpha: float = 0.5
    tau: float = 1.0  # soft only

    def validate(self) -> None:
        if self.kind not in KINDS or not 0.0 <= self.alpha <= 1.0 or not self.tau > 0:
            raise WearspecError(f"distill: expected kind hard, soft or none, alpha in [0, 1] and tau > 0, got "
                                f"{self.kind!r}, {self.alpha}, {self.tau}")


@dataclass
class StudentStageConfig(LoopConfig):
    """The transformer student (default DeSepTr: SepTr on the frozen teacher's stem, hard distillation)."""

    model: StudentConfig = field(default_factory=lambda: StudentConfig(arch="septr", teacher_stem=True))
    layer_decay: float = 1.0  # layer-wise LR decay (e.g. 0.75 with an SSL init); 1 = off
    freeze_backbone_epochs: int = 0  # train only the heads for the first epochs (SSL init)
    init_checkpoint: str = ""  # `wearspec pretrain` checkpoint or run folder (vit / swin students)
    init_which: str = "teacher"  # which pretrained network: the EMA teacher (DINO's choice) or the student
    distill: DistillConfig = field(default_factory=DistillConfig)

    def validate(self) -> None:
        _prefixed("student", super().validate)
        if not 0.0 < self.layer_decay <= 1.0 or self.freeze_backbone_epochs < 0:
            raise WearspecError(f"student.layer_decay / freeze_backbone_epochs: expected (0, 1] and ≥ 0, got "
                                f"{self.layer_decay}, {self.freeze_backbone_epochs}")
        if self.init_which not in ("teacher", "student"):
            raise WearspecError(f"student.init_which: expected teacher or student, got {self.init_which!r}")


def _prefixed(section: str, validate) -> None:
    try:
        validate()
    except WearspecError as e:
        raise WearspecError(f"{section}.{e}") from None


@dataclass
class FinetuneConfig:
    """``wearspec finetune``: CNN teacher then distilled transformer student, evaluated subject-wise."""

    store: str = ""  # labelled window store
    output: str = "runs/finetune"
    split: SplitConfig = field(default_factory=SplitConfig)
    label_fraction: float = 1.0  # fraction of the training windows used (stratified by class, seed split.seed)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)  # ignored when a checkpoint brings one
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(cutmix_p=0.5))
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentStageConfig = field(default_factory=StudentStageConfig)
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    teacher_checkpoint: str = ""  # an existing teacher (best.pt) instead of the teacher stage
    runtime: RuntimeConfig = field(default_factory=lambda: RuntimeConfig(keep_last=2))  # per stage
    # hand-crafted features + logistic regression / random forest on the same splits (classical.enabled=false: off)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)

    def validate(self) -> None:
        if not self.stages or any(s not in STAGES for s in self.stages) or len(set(self.stages)) != len(self.stages):
            raise WearspecError(f"stages: expected a non-empty list of teacher and/or student, got {self.stages!r}")
        if not 0.0 < self.label_fraction <= 1.0:
            raise WearspecError(f"label_fraction: expected a fraction in (0, 1], got {self.label_fraction}")
        if "teacher" in self.stages and self.teacher_checkpoint:
            raise WearspecError("teacher_checkpoint: given while stages includes 'teacher'; drop one (a given "
                                "teacher replaces the teacher stage)")
        has_teacher = "teacher" in self.stages or bool(self.teacher_checkpoint)
        s = self.student
        if "student" in self.stages and not has_teacher:
            if s.model.teacher_stem:
                raise WearspecError("student.model.teacher_stem: needs a teacher (add 'teacher' to stages or set "
                                    "teacher_checkpoint)")
            if s.distill.kind != "none":
                raise WearspecError(f"student.distill.kind={s.distill.kind}: needs a teacher (add 'teacher' to "
                                    "stages, set teacher_checkpoint, or use student.distill.kind=none)")
        if s.init_checkpoint and s.model.arch not in ("vit", "swin"):
            raise WearspecError(f"student.init_checkpoint: only vit and swin students load pretrained backbones, "
                                f"not {s.model.arch!r}")
        self.runtime.validate()
        self.classical.validate()
        if self.runtime.knn_every:
            raise WearspecError("runtime.knn_every: the online k-NN check is a pretraining setting; fine-tuning "
                                "validates every epoch on the validation subjects (leave it at 0)")


# -- components ------------------------------------------------------------------------------------


def label_subset(labels: np.ndarray, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified, seeded subset of the store windows ``indices``: of each class's n_c windows
    ``max(1, round(fraction·n_c))`` drawn at random (``labels`` are the store's per-window labels);
    sorted store indices. ``fraction`` 1 returns ``indices`` unchanged."""
    if fraction >= 1.0:
        return indices
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels[indices]).tolist():
        members = indices[labels[indices] == c]
        keep.append(rng.choice(members, max(1, int(round(fraction * len(members)))), replace=False))
    return np.sort(np.concatenate(keep))


def _pretrain_source(cfg: FinetuneConfig, store: WindowStore) -> tuple[Path, dict] | None:
    """The pretrain checkpoint of ``student.init_checkpoint`` (file or run folder) → (file, its dict), after
    checking that its encoder fits the store and, with a throwaway student, the student's architecture. Its
    front end serves the whole run (also a teacher trained in a run without the student stage)."""
    if not cfg.student.init_checkpoint:
        return None
    path = Path(cfg.student.init_checkpoint)
    if path.is_dir():
        path = latest_checkpoint(path) or latest_checkpoint(path / "checkpoints") or path
    ckpt = load_checkpoint(path)  # errors name the file
    meta = ckpt.get("encoder")
    if not isinstance(meta, dict):
        raise WearspecError(f"{path}: no 'encoder' block; student.init_checkpoint expects a `wearspec pretrain` "
                            "checkpoint")
    check_store_matches(store, meta, str(path))
    frontend = _pretrained_frontend(path, ckpt, cfg.student.init_which)
    size = frontend.output_shape(store.n_channels, store.window)[1:]
    with torch.random.fork_rng(devices=[]):  # fail now rather than after the teacher stage
        stem = build_teacher(cfg.teacher.cnn, store.n_channels, len(store.label_names), size)
        student = build_student(cfg.student.model, store.n_channels, size, len(store.label_names),
                                teacher=stem if cfg.student.model.teacher_stem else None)
        init_from_pretrain(student, path, which=cfg.student.init_which)
    return path, ckpt


def _pretrained_frontend(path: Path, ckpt: dict, which: str) -> SpectrogramFrontend:
    state = ckpt.get(which)
    if not isinstance(state, dict):
        raise WearspecError(f"{path}: no '{which}' weights in this checkpoint")
    try:
        frontend = SpectrogramFrontend.from_config(ckpt["encoder"]["frontend"])
        frontend.load_state_dict({k[len("frontend."):]: v for k, v in state.items() if k.startswith("frontend.")})
    except (WearspecError, KeyError, TypeError, RuntimeError) as e:
        raise WearspecError(f"{path}: no usable front end in the checkpoint ({str(e).splitlines()[0]})") from None
    return frontend


def _given_teacher(cfg: FinetuneConfig, store: WindowStore) -> tuple[Classifier, dict, str] | None:
    """The classifier of ``teacher_checkpoint``, checked against the store: labels (names and order),
    channels, rate, window; a teacher-stem student needs a CNN teacher."""
    if not cfg.teacher_checkpoint:
        return None
    classifier, meta = load_classifier(cfg.teacher_checkpoint)
    name = cfg.teacher_checkpoint
    theirs, ours = list(meta["label_names"]), list(store.label_names)
    if theirs != ours:
        how = "the same labels in a different order" if sorted(theirs) == sorted(ours) else "other labels"
        raise WearspecError(f"{name}: the teacher was trained on {how} than the store {store.path} "
                            f"(teacher {theirs}, store {ours})")
    check_store_matches(store, meta, name)
    if cfg.student.model.teacher_stem and meta["kind"] != "teacher":
        raise WearspecError(f"{name}: a {meta['kind']} checkpoint; student.model.teacher_stem needs the CNN teacher "
                            "(teacher/best.pt of a finetune run)")
    return classifier, meta, name


def _check_teacher_subjects(name: str, splits: list, store: WindowStore) -> None:
    """Refuse a given teacher that was trained or validated on a test subject of any split (its targets would
    carry those subjects into the student); warn when its checkpoint does not say which subjects it saw."""
    seen = trained_subjects(name)
    if seen is None:
        warnings.warn(f"{name}: the checkpoint does not record the subjects it was trained on, so it cannot be "
                      "checked against the test subjects; make sure it never saw them", stacklevel=2)
        return
    seen_set = set(seen["train"]) | set(seen["val"])
    for sp in splits:
        both = sorted(seen_set & set(sp.describe(store.subject_names)["subjects"]["test"]))
        if both:
            raise WearspecError(f"{name}: the teacher was trained or validated on test subjects of split {sp.name} "
                                f"({', '.join(both[:5])}{'…' if len(both) > 5 else ''}); train the teacher here "
                                "(stages=[teacher, student]) or give one trained without them")


def _fold_frontend(cfg: FinetuneConfig, store: WindowStore, train: np.ndarray, fold: Path, pre, given,
                   dist: du.DistInfo) -> SpectrogramFrontend:
    """The fold's front end: the pretrain checkpoint's, else the given teacher's, else fitted on the training
    windows by rank 0 (saved as ``frontend.pt``, reused on re-runs) and broadcast."""
    if pre is not None:
        frontend = _pretrained_frontend(pre[0], pre[1], cfg.student.init_which)
        if given is not None and not _same_frontend(frontend, given[0].frontend):
            raise WearspecError(f"{given[2]}: the teacher was trained on other spectrograms (front end) than the "
                                f"pretrain checkpoint {pre[0]}; train the teacher here instead")
        return frontend
    if given is not None:
        return copy.deepcopy(given[0].frontend)
    path, box, settings = fold / "frontend.pt", None, {**to_dict(cfg.frontend), "seed": cfg.runtime.seed}
    if dist.is_main:
        saved = load_torch(path) if path.is_file() else {}  # checksum checked; errors name the file
        if isinstance(saved, dict) and saved.get("settings") == settings:
            box = (saved["config"], saved["state"])
        else:
            frontend = build_frontend(cfg.frontend, store.rate, store.window, store.channels)
            pick = np.random.default_rng(cfg.runtime.seed).permutation(len(train))[: cfg.frontend.fit_windows]
            frontend.fit(torch.from_numpy(store.read_batch(np.sort(train[pick]))))
            box = (frontend.config(), frontend.state_dict())
            save_torch({"settings": settings, "config": box[0], "state": box[1]}, path)
    config, state = du.broadcast_object(box)
    frontend = SpectrogramFrontend.from_config(config)
    frontend.load_state_dict(state)
    return frontend


def _same_frontend(a: SpectrogramFrontend, b: SpectrogramFrontend) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return a.config() == b.config() and sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _stage(name: str, fold: Path, cfg: FinetuneConfig, store: WindowStore, sp: Split, train: np.ndarray,
           config: dict, build, dist: du.DistInfo) -> dict:
    """Skip a finished stage, else build its classifier (``build() -> (Classifier, meta, loss, teacher,
    extra)``, seeded), train or resume it and evaluate it on the test subjects (rank 0)."""
    sdir = fold / name
    if (sdir / "report.json").is_file():
        check_same_run(sdir, config)
        return {**json.loads((sdir / "report.json").read_text())["training"], "skipped": True}
    seed_everything(cfg.runtime.seed, dist.rank)  # the same initial weights in a fresh or resumed process
    classifier, meta, loss, teacher, extra = build()
    section = cfg.teacher if name == "teacher" else cfg.student
    # a copy per stage: a time budget (runtime.budget_min, per stage) fixes each stage's own length
    result = train_stage(Stage(
        name=name, out=sdir, classifier=classifier, meta=meta, loss=loss, store=store, train_idx=train,
        val_idx=sp.val, loop=section, runtime=dataclasses.replace(cfg.runtime), augment=cfg.augment, config=config, teacher=teacher,
        layer_decay=getattr(section, "layer_decay", 1.0),
        freeze_backbone_epochs=getattr(section, "freeze_backbone_epochs", 0)), dist)
    if result["finished"] and dist.is_main:
        evaluate_stage(sdir, name, classifier, store, sp, result, extra, dist.device)
    du.barrier()
    return {**result, "skipped": False}


# -- the recipe ------------------------------------------------------------------------------------


def run_finetune(cfg: FinetuneConfig) -> dict:
    """Run the recipe (module docstring). Returns ``{"finished", "output", "report" (path or None),
    "stopped" (fold/stage/step of an interrupted run, or None), "folds": [{"name", "windows", <stage>:
    training summary + "test" pooled metrics}], "stages": {<stage>: pooled test metrics over folds}}``."""
    cfg.validate()
    if not cfg.store:
        raise WearspecError("store: the labelled window store to fine-tune on is required (store=PATH)")
    dist = du.init_distributed(cfg.runtime.device)
    summary = _run(cfg, dist)
    du.barrier()
    du.cleanup()
    return summary


def _run(cfg: FinetuneConfig, dist: du.DistInfo) -> dict:
    out, store = Path(cfg.output), WindowStore(cfg.store)
    store.verify()  # checksums and NaN/Inf, once, before any read

    # 1. inputs, checked before any training
    if not store.has_labels:
        raise WearspecError(f"{store.path}: the store has no labels; fine-tuning needs a labelled store "
                            "(prepare it from a labelled dataset)")
    pre = _pretrain_source(cfg, store)
    given = _given_teacher(cfg, store)

    # 2. subject-wise splits over the labelled windows; a given teacher must not have seen any test subject
    splits = make_splits(store, np.flatnonzero(store.labels >= 0), cfg.split)
    if given is not None:
        _check_teacher_subjects(given[2], splits, store)
    if dist.is_main:
        write_text(out / "config.yaml", to_yaml(cfg))
    common = {"store": str(store.path), "split": to_dict(cfg.split), "label_fraction": cfg.label_fraction,
              "frontend": to_dict(cfg.frontend), "augment": to_dict(cfg.augment),
              "frontend_from": cfg.student.init_checkpoint or cfg.teacher_checkpoint or "fitted"}

    # 3. per fold: front end, teacher, student
    folds = []
    for sp in splits:
        record: dict[str, Any] = {"name": sp.name}
        folds.append(record)
        stopped = _fold(cfg, store, sp, common, pre, given, record, dist)
        if stopped is not None:
            return _summary(out, folds, None, stopped)

    # 4. pooled over folds: every test subject once
    report = _pool(out, cfg, store, splits, folds) if dist.is_main else None
    return _summary(out, folds, report, None)


def _fold(cfg: FinetuneConfig, store: WindowStore, sp: Split, common: dict, pre, given, record: dict,
          dist: du.DistInfo) -> dict | None:
    """One fold's stages into ``record`` (teacher, then student); returns where an interrupted stage stopped
    (``{"fold", "stage", **its training summary}``), None when the fold is finished."""
    fold, C, K, names = Path(cfg.output) / sp.name, store.n_channels, len(store.label_names), store.label_names
    train = label_subset(store.labels, sp.train, cfg.label_fraction, cfg.split.seed)
    class_weights(store.labels[train], K, "none", names, where=f"the training subjects of split {sp.name}")
    frontend = _fold_frontend(cfg, store, train, fold, pre, given, dist)
    size = frontend.output_shape(C, store.window)[1:]
    record["windows"] = {"train": len(train), "val": len(sp.val), "test": len(sp.test)}

    def meta_of(kind, model_cfg, teacher_cnn=None):
        return classifier_meta(kind, model_cfg, frontend.config(), C, size, K, names, store.channels,
                               store.rate, store.window, store.hop, teacher_cnn=teacher_cnn)

    def loss_of(section, kind="none", alpha=0.5, tau=1.0):
        w = class_weights(store.labels[train], K, section.class_weights, names, where=f"split {sp.name}")
        return DistillationLoss(kind, alpha, tau, section.label_smoothing,
                                None if section.class_weights == "none" else w)

    teacher = given[:2] if given is not None else None
    if "teacher" in cfg.stages:
        def build_teacher_stage():
            model = Classifier(copy.deepcopy(frontend), build_teacher(cfg.teacher.cnn, C, K, size))
            return model, meta_of("teacher", cfg.teacher.cnn), loss_of(cfg.teacher), None, {}

        record["teacher"] = _stage("teacher", fold, cfg, store, sp, train, {**common, "teacher": to_dict(
            cfg.teacher)}, build_teacher_stage, dist)
        if not record["teacher"]["finished"]:
            return {"fold": sp.name, "stage": "teacher", **record["teacher"]}
        teacher = load_classifier(fold / "teacher" / "best.pt")

    if "student" in cfg.stages:
        s = cfg.student
        teacher_cfg = to_dict(cfg.teacher) if "teacher" in cfg.stages else {"checkpoint": cfg.teacher_checkpoint}

        def build_student_stage():
            t_model = teacher[0].model if teacher is not None else None
            model = build_student(s.model, C, size, K, teacher=t_model if s.model.teacher_stem else None)
            extra = {}
            if pre is not None:
                extra["init"] = {"checkpoint": str(pre[0]), "which": s.init_which,
                                 **init_from_pretrain(model, pre[0], which=s.init_which)}
                if dist.is_main:
                    print(f"student: backbone from {pre[0]} ({extra['init']['loaded']} tensors)", file=sys.stderr)
            stem_cnn = from_dict(CNNConfig, teacher[1]["model"], prefix="teacher.") if s.model.teacher_stem else None
            loss = loss_of(s, s.distill.kind, s.distill.alpha, s.distill.tau)
            return (Classifier(copy.deepcopy(frontend), model), meta_of("student", s.model, stem_cnn), loss,
                    teacher[0] if teacher is not None and loss.needs_teacher else None, extra)

        record["student"] = _stage("student", fold, cfg, store, sp, train,
                                   {**common, "teacher": teacher_cfg, "student": to_dict(cfg.student)},
                                   build_student_stage, dist)
        if not record["student"]["finished"]:
            return {"fold": sp.name, "stage": "student", **record["student"]}
    return None


def _pool(out: Path, cfg: FinetuneConfig, store: WindowStore, splits: list[Split], folds: list[dict]) -> dict:
    """The top-level report: each stage's test predictions of all folds pooled; figures; report.json last."""
    stages = {}
    for name in (s for s in STAGES if s in cfg.stages):
        parts = [np.load(out / sp.name / name / "test_predictions.npz") for sp in splits]
        y, pred, subj = (np.concatenate([p[k] for p in parts]) for k in ("label", "pred", "subject"))
        rep = classification_report(y, pred, subj, store.label_names, store.subject_names)
        stages[name] = rep
        for fold, p in zip(folds, parts):
            fold[name]["test"] = classification_report(p["label"], p["pred"], p["subject"], store.label_names,
                                                       store.subject_names)["pooled"]
        plot_confusion(rep["confusion_matrix"], store.label_names, out / f"confusion_{name}.png",
                       title=f"{name}: {rep['n']} test windows, {rep['n_subjects']} subjects")
        plot_per_subject(rep["per_subject"], out / f"per_subject_{name}.png", title=f"{name}: macro-F1 per subject")
    # the classical baseline on the same splits and the same (label_fraction) training windows
    classical = classical_baseline(store, [replace(sp, train=label_subset(store.labels, sp.train, cfg.label_fraction,
                                                                          cfg.split.seed)) for sp in splits],
                                   cfg.classical, seed=cfg.runtime.seed)
    report = jsonable({"format": "wearspec-finetune-report", "version": 1, "store": str(store.path),
                        "labels": store.label_names, "stages": stages,
                        **({"classical": classical} if classical["enabled"] else {}),
                        "folds": [{**sp.describe(store.subject_names), **f} for sp, f in zip(splits, folds)],
                        "config": to_dict(cfg)})
    write_json(out / "report.json", report)
    rows = {**stages, **{CLASSICAL_MODELS[m]: classical[m] for m in classical.get("models", [])}}
    for name, rep in rows.items():
        s = rep["subject_summary"]
        print(f"{name}: accuracy {rep['pooled']['accuracy']:.3f}, macro-F1 {rep['pooled']['macro_f1']:.3f}, "
              f"kappa {rep['pooled']['kappa']:.3f}; per subject macro-F1 {s['macro_f1']['mean']:.3f} ± "
              f"{s['macro_f1']['sd']:.3f} (n={s['macro_f1']['n']})", file=sys.stderr)
    return report


def _summary(out: Path, folds: list[dict], report: dict | None, stopped: dict | None) -> dict:
    return {"finished": stopped is None, "output": str(out),
            "report": str(out / "report.json") if report is not None else None, "stopped": stopped,
            "folds": jsonable(folds),
            "stages": {k: {**v["pooled"], "subject_summary": v["subject_summary"]}
                       for k, v in (report or {}).get("stages", {}).items()}}
