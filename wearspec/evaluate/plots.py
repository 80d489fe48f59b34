"""Report figures (matplotlib, Agg, no pyplot state): confusion matrix, per-subject bars, training curves.

Every function writes a PNG atomically (temporary name, then rename) and returns its path.
Figures are built on ``matplotlib.figure.Figure`` directly, so they work in worker threads and
never open a window.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from wearspec.utils.io import atomic_path


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def plot_confusion(
    cm: Any,
    label_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
) -> Path:
    """Confusion matrix (rows true, columns predicted): colours are row-normalised (recall per
    class), cells show the counts."""
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    size = max(4.0, 0.55 * n + 2.5)
    fig = new_figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(n), [str(s) for s in label_names], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(s) for s in label_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fontsize = 9 if n <= 12 else 7 if n <= 20 else 5
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fontsize,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_title(title or f"confusion matrix ({int(cm.sum())} windows)")
    return save_figure(fig, path)


def plot_per_subject(
    per_subject: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    metric: str = "macro_f1",
    title: str = "",
) -> Path:
    """Bar chart of one metric per subject, with the mean as a line.

    ``per_subject`` maps subject → value, or subject → dict holding ``metric`` (the
    ``per_subject`` part of :func:`wearspec.evaluate.metrics.classification_report`).
    """
    names = list(per_subject)
    values = np.array([float(v[metric]) if isinstance(v, Mapping) else float(v) for v in per_subject.values()])
    fig = new_figure(max(5.0, 0.3 * len(names) + 2.0), 3.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(names)), values, color="tab:blue")
    if len(values):
        mean = float(np.nanmean(values))
        ax.axhline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.3f}")
        ax.legend(loc="lower right")
    ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 12 else 0)
    ax.set_ylabel(metric)
    ax.set_xlabel("subject")
    if not len(values) or (np.nanmin(values) >= 0.0 and np.nanmax(values) <= 1.0):
        ax.set_ylim(0.0, 1.0)  # scores in [0, 1]: a fixed axis makes charts comparable
    ax.set_title(title or f"{metric} per subject")
    return save_figure(fig, path)


def plot_training_curves(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    keys: Sequence[str] = ("loss", "teacher_entropy", "lr"),
    x: str = "step",
    title: str = "",
) -> Path:
    """One panel per key in ``keys`` that some record holds, plotted against ``x`` (the record's
    position when a record lacks ``x``). Records are dicts as written to ``metrics.jsonl``;
    non-numeric and missing values are skipped."""
    present = [k for k in keys if any(_number(r.get(k)) is not None for r in records)]
    panels = present or ["(no data)"]
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = new_figure(4.2 * cols, 3.0 * nrows)
    for i, key in enumerate(panels):
        ax = fig.add_subplot(nrows, cols, i + 1)
        pts = [(_number(r.get(x)) if _number(r.get(x)) is not None else j, _number(r.get(key)))
               for j, r in enumerate(records)]
        pts = [(a, b) for a, b in pts if b is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, linewidth=1.2)
            if key == "lr" or (min(ys) > 0 and max(ys) / max(min(ys), 1e-30) > 1e3):
                ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None
