"""The fine-tuned classifier: raw windows (B, C, T) → :class:`SpectrogramFrontend` → model → logits (B, K).

The model is a :class:`~wearspec.models.students.Student` (``kind="student"``; its class and distillation
heads fused per ``head_fusion``) or the CNN :class:`~wearspec.models.cnn.ResNetTeacher` (``kind="teacher"``).
This is what ``wearspec export`` puts into the ONNX graph, so it holds nothing but the front end and the model.

A classifier checkpoint (``best.pt`` of ``wearspec finetune``; every full-state fine-tuning checkpoint has
the same two blocks) is a wearspec checkpoint (:mod:`wearspec.utils.checkpoint`; safe ``weights_only`` load)::

    {"format": "wearspec-checkpoint", "version": 1, "stage": "finetune",
     "classifier": classifier_meta(...),        # plain values only, see classifier_meta
     "state_dict": classifier.state_dict(),     # "frontend.*" (normalisation) + "model.*"
     ...extra}

:func:`load_classifier` rebuilds the model from the ``"classifier"`` block alone: a teacher-stem student's
frozen stem weights are part of its state dict, and the block records the stem's CNN settings
(``teacher_cnn``), so no teacher checkpoint is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wearspec.config import from_dict, to_dict
from wearspec.data.frontend import SpectrogramFrontend
from wearspec.errors import WearspecError
from wearspec.models.cnn import CNNConfig, ResNetTeacher, build_teacher
from wearspec.models.encoder import state_mismatch
from wearspec.models.students import Student, StudentConfig, StudentOutput, build_student
from wearspec.utils.checkpoint import FORMAT, VERSION, load_checkpoint, save_torch

KINDS = ("student", "teacher")
META_KEYS = ("kind", "model", "teacher_cnn", "frontend", "in_chans", "input_size", "num_classes", "label_names",
             "channels", "rate", "window", "hop")
BUILD_SEED = 0  # weights of a rebuilt model before its state dict is loaded (never touches the global RNG)


class Classifier(nn.Module):
    """raw windows (B, C, T) → ``frontend`` (B, C, F, N) → ``model`` → logits (B, K).

    ``model``: a :class:`Student` (logits = its heads fused per ``cfg.head_fusion``) or a
    :class:`ResNetTeacher`. ``kind`` is ``"student"`` or ``"teacher"`` accordingly.
    """

    def __init__(self, frontend: SpectrogramFrontend, model: Student | ResNetTeacher):
        super().__init__()
        if not isinstance(model, (Student, ResNetTeacher)):
            raise WearspecError(f"classifier: expected a Student or a ResNetTeacher, got {type(model).__name__}")
        self.frontend = frontend
        self.model = model
        self.kind = "student" if isinstance(model, Student) else "teacher"

    def heads(self, spec: Tensor) -> StudentOutput:
        """Spectrograms (B, C, F, N) → :class:`StudentOutput` (a teacher: its logits as ``cls``, no ``dist``)."""
        if self.kind == "student":
            return self.model(spec)
        return StudentOutput(cls=self.model(spec), dist=None)

    def logits_from_spec(self, spec: Tensor) -> Tensor:
        """Spectrograms (B, C, F, N) → logits (B, K) (student heads fused)."""
        return self.model.predict_logits(spec) if self.kind == "student" else self.model(spec)

    def forward(self, x_raw: Tensor) -> Tensor:
        """Raw windows (B, C, T) → logits (B, K)."""
        return self.logits_from_spec(self.frontend(x_raw))


def classifier_meta(kind: str, model_config: StudentConfig | CNNConfig, frontend_config: dict[str, Any],
                    in_chans: int, input_size: tuple[int, int] | list[int], num_classes: int,
                    label_names: list[str], channels: list[str], rate: float, window: int, hop: int,
                    teacher_cnn: CNNConfig | None = None) -> dict[str, Any]:
    """The checkpoint's ``"classifier"`` block (plain values only)::

        {"kind": "student" | "teacher", "model": to_dict(StudentConfig | CNNConfig),
         "teacher_cnn": to_dict(CNNConfig) | None,   # the frozen stem's CNN (teacher-stem students)
         "frontend": frontend.config(), "in_chans": C, "input_size": [F, N], "num_classes": K,
         "label_names": [...], "channels": [...], "rate": Hz, "window": samples, "hop": samples}

    ``hop`` is the store's window hop (samples between windows), the step of a streaming deployment.
    """
    if kind not in KINDS:
        raise WearspecError(f"classifier meta: kind must be student or teacher, got {kind!r}")
    expected = StudentConfig if kind == "student" else CNNConfig
    if not isinstance(model_config, expected):
        raise WearspecError(f"classifier meta: a {kind} needs a {expected.__name__}, got {type(model_config).__name__}")
    if kind == "student" and model_config.teacher_stem and teacher_cnn is None:
        raise WearspecError("classifier meta: a teacher-stem student needs teacher_cnn (the stem's CNN settings)")
    if len(label_names) != num_classes:
        raise WearspecError(f"classifier meta: {len(label_names)} label names for {num_classes} classes")
    return {"kind": kind, "model": to_dict(model_config),
            "teacher_cnn": to_dict(teacher_cnn) if teacher_cnn is not None else None,
            "frontend": dict(frontend_config), "in_chans": int(in_chans),
            "input_size": [int(input_size[0]), int(input_size[1])], "num_classes": int(num_classes),
            "label_names": [str(n) for n in label_names], "channels": [str(c) for c in channels],
            "rate": float(rate), "window": int(window), "hop": int(hop)}


def build_classifier(meta: dict[str, Any], seed: int | None = BUILD_SEED) -> Classifier:
    """A :class:`Classifier` of the architecture a ``"classifier"`` block describes, with an unfitted front
    end and freshly initialised weights (``seed``; the global RNG is left untouched). Load a state dict
    afterwards. Raises :class:`WearspecError` (without a file name) on a malformed block."""
    if not isinstance(meta, dict):
        raise WearspecError(f"'classifier' block: expected a mapping, got {type(meta).__name__}")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise WearspecError(f"'classifier' block: missing key {missing[0]!r}")
    kind, size = meta["kind"], tuple(meta["input_size"])
    if kind not in KINDS:
        raise WearspecError(f"'classifier' block: kind must be student or teacher, got {kind!r}")
    try:
        frontend = SpectrogramFrontend.from_config(meta["frontend"])
        c, k = int(meta["in_chans"]), int(meta["num_classes"])
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            if kind == "teacher":
                model = build_teacher(from_dict(CNNConfig, meta["model"], prefix="model."), c, k, size)
            else:
                cfg = from_dict(StudentConfig, meta["model"], prefix="model.")
                stem = None
                if cfg.teacher_stem:
                    if not isinstance(meta["teacher_cnn"], dict):
                        raise WearspecError("'classifier' block: a teacher-stem student needs 'teacher_cnn'")
                    stem = build_teacher(from_dict(CNNConfig, meta["teacher_cnn"], prefix="teacher_cnn."), c, k, size)
                model = build_student(cfg, c, size, k, teacher=stem)
    except WearspecError as e:
        raise WearspecError(f"'classifier' block: {e}") from None
    except (TypeError, ValueError, KeyError) as e:
        raise WearspecError(f"'classifier' block describes no buildable model ({type(e).__name__}: {e})") from None
    return Classifier(frontend, model)


def save_classifier(path: str | os.PathLike, classifier: Classifier, meta: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``classifier`` as a classifier checkpoint at ``path`` (atomic: temporary name, then rename).
    ``extra``: more plain values to store (e.g. ``{"epoch": 7, "val_macro_f1": 0.81}``); it cannot replace
    the reserved keys."""
    extra = dict(extra or {})
    clash = sorted(set(extra) & {"format", "version", "stage", "classifier", "state_dict"})
    if clash:
        raise WearspecError(f"save_classifier: extra may not set reserved key {clash[0]!r}")
    state = {"format": FORMAT, "version": VERSION, "stage": "finetune", "classifier": meta,
             "state_dict": {k: v.detach().cpu() for k, v in classifier.state_dict().items()}, **extra}
    return save_torch(state, path)  # atomic, with its checksum beside it


def load_classifier(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a classifier from a classifier checkpoint (a file, or a stage folder holding ``best.pt``)
    → (classifier in eval mode on ``map_location``, its ``"classifier"`` block). Every problem is a
    one-line :class:`WearspecError` naming the file."""
    path = classifier_file(path)
    ckpt = load_checkpoint(path, map_location=map_location)  # format/version checks, errors name the file
    meta = ckpt.get("classifier")
    if not isinstance(meta, dict):
        raise WearspecError(f"{path}: not a classifier checkpoint (stage {ckpt.get('stage')!r}, no 'classifier' "
                            "block); expected a `wearspec finetune` best.pt")
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise WearspecError(f"{path}: classifier checkpoint without 'state_dict' weights")
    try:
        classifier = build_classifier(meta)
    except WearspecError as e:
        raise WearspecError(f"{path}: {e}") from None
    problem = state_mismatch(classifier, state)
    if problem:
        raise WearspecError(f"{path}: 'state_dict' does not fit the model described in 'classifier': {problem}")
    classifier.load_state_dict(state)
    return classifier.to(map_location).eval(), meta


def classifier_file(path: str | os.PathLike) -> Path:
    """A classifier checkpoint file: ``path`` itself, or the ``best.pt`` of a stage folder."""
    path = Path(path)
    return path / "best.pt" if path.is_dir() and (path / "best.pt").is_file() else path


def trained_subjects(path: str | os.PathLike) -> dict[str, list[str]] | None:
    """The subjects a classifier checkpoint was trained and validated on, ``{"train": [...], "val": [...]}``
    (names; ``wearspec finetune`` records them in ``best.pt``), or None for a checkpoint without the record."""
    subjects = load_checkpoint(classifier_file(path)).get("subjects")
    if not isinstance(subjects, dict):
        return None
    return {part: [str(s) for s in subjects.get(part, [])] for part in ("train", "val")}
