"""Subject-wise splits: train/val/test, k-fold and leave-one-subject-out.

Windows of one subject never fall in two parts of a split. Every function takes the per-window
subject codes of a store (``store.subjects``) and returns :class:`Split` objects holding window
indices; validation subjects are drawn from the training subjects of each fold, so model selection
never looks at test subjects.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from wearspec.errors import WearspecError

if TYPE_CHECKING:
    from wearspec.data.store import WindowStore

SPLIT_MODES = ("holdout", "kfold", "loso", "predefined")


@dataclass
class Split:
    """Window indices of one split, and the subject codes in each part."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    subjects: dict[str, list[int]] = field(default_factory=dict)
    name: str = "split"

    def describe(self, subject_names: list[str] | None = None) -> dict:
        def names(codes):
            return [subject_names[c] for c in codes] if subject_names else codes

        return {
            "name": self.name,
            "windows": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "subjects": {k: names(v) for k, v in self.subjects.items()},
        }


def _indices(subjects: np.ndarray, codes) -> np.ndarray:
    return np.flatnonzero(np.isin(subjects, np.asarray(list(codes), dtype=subjects.dtype)))


def _make(subjects: np.ndarray, train, val, test, name: str) -> Split:
    parts = {"train": sorted(int(c) for c in train), "val": sorted(int(c) for c in val),
             "test": sorted(int(c) for c in test)}
    return Split(
        train=_indices(subjects, parts["train"]),
        val=_indices(subjects, parts["val"]),
        test=_indices(subjects, parts["test"]),
        subjects=parts,
        name=name,
    )


def _n_of(fraction: float, total: int, what: str) -> int:
    if not 0.0 <= fraction < 1.0:
        raise WearspecError(f"split.{what}: expected a fraction in [0, 1), got {fraction}")
    return int(round(fraction * total)) if fraction > 0 else 0


def _codes(subject_names: list[str] | None, names: list[str] | None, present: np.ndarray, what: str):
    if not names:
        return None
    if subject_names is None:
        raise WearspecError(f"split.{what}: subject names need the store's subject list")
    lookup = {n: i for i, n in enumerate(subject_names)}
    missing = [n for n in names if n not in lookup]
    if missing:
        raise WearspecError(f"split.{what}: unknown subject {missing[0]!r} (store has {', '.join(subject_names[:10])}…)")
    return [lookup[n] for n in names if lookup[n] in present]


def subject_split(
    subjects: np.ndarray,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.25,
    seed: int = 0,
    val_subjects: list[str] | None = None,
    test_subjects: list[str] | None = None,
    subject_names: list[str] | None = None,
) -> Split:
    """One train/val/test split by subject: ``test_fraction`` and ``val_fraction`` of all the subjects, or
    explicit subject names (a subject named in both lists is an error)."""
    present = np.unique(subjects)
    rng = np.random.default_rng(seed)
    order = rng.permutation(present)
    test = _codes(subject_names, test_subjects, present, "test_subjects")
    if test is None:
        test = list(order[: _n_of(test_fraction, len(present), "test_fraction")])
    rest = [c for c in order if c not in set(test)]
    val = _codes(subject_names, val_subjects, present, "val_subjects")
    if val is not None and set(val) & set(test):
        both = sorted(subject_names[c] for c in set(val) & set(test))  # names given, so subject_names too
        raise WearspecError(f"split.val_subjects: {both} are test subjects too; model selection must never see a "
                            "test subject")
    if val is None:
        val = rest[: _n_of(val_fraction, len(present), "val_fraction")]
    train = [c for c in rest if c not in set(val)]
    if not train:
        raise WearspecError(f"split: no training subjects left ({len(present)} subjects in the store)")
    return _make(subjects, train, val, test, "holdout")


def kfold(subjects: np.ndarray, k: int, *, val_fraction: float = 0.15, seed: int = 0) -> list[Split]:
    """k folds over subjects; each fold's validation subjects come from its training subjects."""
    present = np.unique(subjects)
    if not 2 <= k <= len(present):
        raise WearspecError(f"split.k: expected 2..{len(present)} (number of subjects), got {k}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(present)
    folds = np.array_split(order, k)
    out = []
    for i, test in enumerate(folds):
        rest = np.concatenate([f for j, f in enumerate(folds) if j != i])
        n_val = _n_of(val_fraction, len(rest), "val_fraction")
        val = rng.permutation(rest)[:n_val]
        train = [c for c in rest if c not in set(val.tolist())]
        out.append(_make(subjects, train, val, test, f"fold{i + 1}of{k}"))
    return out


def leave_one_subject_out(subjects: np.ndarray, *, val_fraction: float = 0.15, seed: int = 0) -> list[Split]:
    """One split per subject: that subject is the test set."""
    present = np.unique(subjects)
    if len(present) < 2:
        raise WearspecError("split: leave-one-subject-out needs at least 2 subjects")
    return kfold(subjects, len(present), val_fraction=val_fraction, seed=seed)


def predefined_split(splits: np.ndarray) -> Split:
    """The dataset's own split column (``store.splits``: 0 train, 1 val, 2 test)."""
    if (splits < 0).all():
        raise WearspecError("split: the store has no predefined split (its reader did not set one)")
    idx = {name: np.flatnonzero(splits == code) for code, name in enumerate(("train", "val", "test"))}
    return Split(train=idx["train"], val=idx["val"], test=idx["test"], name="predefined")


@dataclass
class SplitConfig:
    """Subject-wise evaluation split.

    holdout: one train/val/test split by subject, ``test_fraction`` and ``val_fraction`` of all the
    subjects (or the named ``test_subjects`` / ``val_subjects``); kfold: ``k`` folds over subjects, each
    fold's validation subjects ``val_fraction`` of its training subjects; loso: leave one subject out (as
    kfold); predefined: the dataset's own split column (a warning when a subject falls in two parts).
    Validation subjects are used for model selection only.
    """

    mode: str = "holdout"
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    k: int = 5
    seed: int = 0
    test_subjects: list[str] = field(default_factory=list)
    val_subjects: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.mode not in SPLIT_MODES:
            raise WearspecError(f"split.mode: expected one of {', '.join(SPLIT_MODES)}, got {self.mode!r}")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise WearspecError(f"split.{name}: expected a fraction in [0, 1), got {v}")
        if self.k < 2:
            raise WearspecError(f"split.k: expected at least 2 folds, got {self.k}")
        if not 0 <= self.seed < 2**32:
            raise WearspecError(f"split.seed: expected an integer in [0, 4294967295], got {self.seed}")
        if self.mode != "holdout" and (self.test_subjects or self.val_subjects):
            raise WearspecError(
                f"split.test_subjects/val_subjects: only used with split.mode=holdout (mode is {self.mode})")


def make_splits(store: "WindowStore", windows: np.ndarray, cfg: SplitConfig) -> list[Split]:
    """Subject-wise split(s) of the store windows ``windows``; returned indices are store indices."""
    subjects = store.subjects[windows]
    if cfg.mode == "holdout":
        splits = [subject_split(subjects, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                seed=cfg.seed, test_subjects=cfg.test_subjects or None,
                                val_subjects=cfg.val_subjects or None, subject_names=store.subject_names)]
    elif cfg.mode == "kfold":
        splits = kfold(subjects, cfg.k, val_fraction=cfg.val_fraction, seed=cfg.seed)
    elif cfg.mode == "loso":
        splits = leave_one_subject_out(subjects, val_fraction=cfg.val_fraction, seed=cfg.seed)
    else:
        splits = [predefined_split(store.splits[windows])]
    out = []
    for sp in splits:
        parts = {k: windows[getattr(sp, k)] for k in ("train", "val", "test")}
        subj = sp.subjects or {k: np.unique(store.subjects[v]).tolist() for k, v in parts.items()}
        shared = sorted((set(subj["train"]) & set(subj["test"])) | (set(subj["val"]) & set(subj["test"])))
        if shared:  # only a dataset's own split can do this (the others are subject-wise by construction)
            names = [store.subject_names[c] for c in shared[:5]]
            warnings.warn(f"split {sp.name}: {len(shared)} subject(s) have windows in the test part and in the "
                          f"training or validation part ({names}…): the test is not subject-wise", stacklevel=2)
        if parts["test"].size == 0:
            raise WearspecError(f"split {sp.name}: no test windows (split.mode={cfg.mode}, "
                                f"test_fraction={cfg.test_fraction}); the evaluation needs test subjects")
        out.append(Split(parts["train"], parts["val"], parts["test"], subjects=subj, name=sp.name))
    return out
