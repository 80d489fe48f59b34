"""Classification metrics in numpy: accuracy, macro-F1, Cohen's κ, confusion matrix, per-subject report.

Labels are integer class codes (``0 … n_classes-1``), as stored in a window store.

Conventions (the HAR literature is not uniform; these are ours, and every report follows them):

* **Macro-F1** averages the per-class F1 ``2·TP / (2·TP + FP + FN)`` over the classes present in
  ``y_true ∪ y_pred`` (scikit-learn's default label set), or over a given ``labels`` set. A class
  with no support *and* no predictions (possible only with a given ``labels`` set) has an undefined
  F1 and is left out of the average rather than counted as 0 or 1. A class that is predicted but
  never true (or true but never predicted) has F1 = 0 and *is* averaged.
* **Cohen's κ** = ``(p_o − p_e) / (1 − p_e)``, computed from integer counts so that the degenerate
  case is exact. When ``p_e = 1`` (every label and every prediction is the same single class) the
  ratio is 0/0; we define κ = 1.0 if the agreement is perfect and 0.0 otherwise (scikit-learn
  returns NaN; a NaN would poison a mean over subjects, and "one class, all correct" is a perfect
  classifier for that subject).
* **Per subject**: metrics computed on each test subject's windows alone, then summarised as mean ± SD
  over subjects with the sample SD (``ddof = 1``); the SD of a single subject is 0.
* Metrics of an empty input are NaN.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _as_labels(y: Any, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class codes, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.mod(a, 1) == 0):
            raise ValueError(f"{name}: expected integer class codes")
    return a.astype(np.int64, copy=False)


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    return t, p


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of correct predictions (NaN for empty input)."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p)) if t.size else float("nan")


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts; rows are true classes, columns predicted classes."""
    t, p = _pair(y_true, y_pred)
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{name}: class codes must lie in 0..{n_classes - 1}, got {a.min()}..{a.max()}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_f1(y_true: Any, y_pred: Any, labels: Sequence[int] | None = None) -> dict[int, float]:
    """F1 of each class in ``labels`` (default: ``y_true ∪ y_pred``).

    A class with no support and no predictions maps to NaN (undefined F1).
    """
    t, p = _pair(y_true, y_pred)
    classes = np.union1d(t, p) if labels is None else np.asarray(list(labels), dtype=np.int64)
    out: dict[int, float] = {}
    for c in classes.tolist():
        tp = int(np.sum((t == c) & (p == c)))
        fp = int(np.sum((t != c) & (p == c)))
        fn = int(np.sum((t == c) & (p != c)))
        denom = 2 * tp + fp + fn
        out[int(c)] = 2 * tp / denom if denom else float("nan")
    return out


def macro_f1(y_true: Any, y_pred: Any, labels: Sequence[int] | None = None) -> float:
    """Unweighted mean of per-class F1 (see the module docstring for the label set). NaN if empty."""
    values = [v for v in per_class_f1(y_true, y_pred, labels).values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def cohen_kappa(y_true: Any, y_pred: Any) -> float:
    """Cohen's κ; 1.0/0.0 when chance agreement is 1 (see the module docstring). NaN if empty."""
    t, p = _pair(y_true, y_pred)
    n = t.size
    if n == 0:
        return float("nan")
    classes, inv = np.unique(np.concatenate([t, p]), return_inverse=True)
    k = classes.size
    ti, pi = inv[:n], inv[n:]
    agree = int(np.sum(ti == pi))
    rows = np.bincount(ti, minlength=k).astype(np.int64)
    cols = np.bincount(pi, minlength=k).astype(np.int64)
    # κ = (n·agree − Σ r·c) / (n² − Σ r·c): exact integer arithmetic for the degenerate test
    chance = int(np.sum(rows * cols))
    denom = n * n - chance
    if denom == 0:
        return 1.0 if agree == n else 0.0
    return float((n * agree - chance) / denom)


def mean_sd(values: Sequence[float]) -> dict:
    """``{"mean", "sd", "n"}`` of finite values; sample SD (ddof=1), 0 for a single value."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    sd = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(np.mean(v)), "sd": sd, "n": int(v.size)}


def _scores(t: np.ndarray, p: np.ndarray) -> dict:
    return {"n": int(t.size), "accuracy": accuracy(t, p), "macro_f1": macro_f1(t, p), "kappa": cohen_kappa(t, p)}


METRICS = ("accuracy", "macro_f1", "kappa")


def classification_report(
    y_true: Any,
    y_pred: Any,
    subjects: Any,
    label_names: Sequence[str],
    subject_names: Sequence[str] | None = None,
) -> dict:
    """Pooled and per-subject metrics, per-class F1 and the confusion matrix, as a JSON-ready dict.

    ``subjects`` holds one subject per prediction (codes or names; codes are turned into names with
    ``subject_names`` when given). Returns::

        {"n": windows, "n_subjects": S, "labels": label_names,
         "pooled": {"n", "accuracy", "macro_f1", "kappa"},
         "per_subject": {subject: {"n", "accuracy", "macro_f1", "kappa"}},
         "subject_summary": {metric: {"mean", "sd", "n"}},          # over subjects, sd with ddof=1
         "per_class": {label: {"f1", "precision", "recall", "support", "predicted"}},
         "confusion_matrix": [[count, ...], ...]}                 # rows true, columns predicted

    Per-class values of a class with no support and no predictions are ``None`` (JSON null);
    precision of a never-predicted class and recall of an absent class are ``None`` too.
    """
    t, p = _pair(y_true, y_pred)
    s = np.asarray(subjects)
    if s.shape != t.shape:
        raise ValueError(f"subjects: expected {t.size} entries, got {s.size}")
    n_classes = len(label_names)
    cm = confusion_matrix(t, p, n_classes)
    per_subject: dict[str, dict] = {}
    for code in np.unique(s).tolist():
        m = s == code
        name = subject_names[code] if subject_names is not None and isinstance(code, int) else str(code)
        per_subject[name] = _scores(t[m], p[m])
    summary = {k: mean_sd([v[k] for v in per_subject.values()]) for k in METRICS}
    f1 = per_class_f1(t, p, labels=range(n_classes))
    per_class = {}
    for c, name in enumerate(label_names):
        support, predicted, tp = int(cm[c].sum()), int(cm[:, c].sum()), int(cm[c, c])
        per_class[str(name)] = {
            "f1": None if np.isnan(f1[c]) else float(f1[c]),
            "precision": tp / predicted if predicted else None,
            "recall": tp / support if support else None,
            "support": support,
            "predicted": predicted,
        }
    return {
        "n": int(t.size),
        "n_subjects": len(per_subject),
        "labels": [str(n) for n in label_names],
        "pooled": _scores(t, p),
        "per_subject": per_subject,
        "subject_summary": summary,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def format_mean_sd(summary: dict, digits: int = 3) -> str:
    """``'0.812 ± 0.041'`` from a :func:`mean_sd` dict."""
    return f"{summary['mean']:.{digits}f} ± {summary['sd']:.{digits}f}"
