"""``wearspec inspect``: what a store holds, and what its spectrograms look like per class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wearspec.data.store import WindowStore
from wearspec.utils.io import atomic_path


def format_summary(summary: dict) -> str:
    """A plain-text table: counts per subject × label, then totals."""
    labels = list(summary["per_label"])
    lines = [
        f"store      {summary['path']}",
        f"windows    {summary['windows']}  ({summary['subjects']} subjects, {summary['recordings']} recordings)",
        f"channels   {', '.join(summary['channels'])}",
        f"window     {summary['window_samples']} samples at {summary['rate_hz']:g} Hz, hop {summary['hop_samples']} "
        f"({summary['dtype']})",
        "",
    ]
    width = max([7] + [len(s) for s in summary["per_subject"]])
    cols = [max(6, len(label)) for label in labels]
    lines.append("subject".ljust(width) + "  " + "  ".join(label.rjust(c) for label, c in zip(labels, cols)))
    for subject, counts in summary["per_subject"].items():
        lines.append(subject.ljust(width) + "  " + "  ".join(str(counts.get(label, 0)).rjust(c)
                                                            for label, c in zip(labels, cols)))
    lines.append("total".ljust(width) + "  " + "  ".join(str(summary["per_label"][label]).rjust(c)
                                                         for label, c in zip(labels, cols)))
    if "verify" in summary:
        v = summary["verify"]
        what = "checksums match" if v["checksums"] else "no checksums recorded (older store)"
        lines += ["", f"verified   {v['shards']} shards, {v['bytes'] / 1e6:.1f} MB: {what}, every value finite "
                  f"({v['seconds']:.2f} s)"]
    return "\n".join(lines)


def spectrogram_grid(store: WindowStore, out: str | os.PathLike, *, per_class: int = 3, seed: int = 0) -> Path:
    """PNG grid: one row per class (or one row of unlabelled examples), ``per_class`` examples,
    each the log-magnitude spectrogram of one window with its channels stacked along frequency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from wearspec.data.frontend import SpectrogramFrontend, auto_stft

    rng = np.random.default_rng(seed)
    classes = [(i, name) for i, name in enumerate(store.label_names) if (store.labels == i).any()]
    rows = classes or [(-1, "windows")]
    picks = []
    for code, _ in rows:
        idx = np.flatnonzero(store.labels == code) if classes else np.arange(len(store))
        picks.append(np.sort(rng.choice(idx, size=min(per_class, idx.size), replace=False)))
    n_fft, hop = auto_stft(store.window)
    front = SpectrogramFrontend(n_fft=n_fft, hop_length=hop, power=1.0, log="log1p")
    fig, axes = plt.subplots(len(rows), per_class, figsize=(2.6 * per_class, 1.9 * len(rows) + 0.4),
                             squeeze=False)
    duration = store.window / store.rate
    for r, ((code, name), idx) in enumerate(zip(rows, picks)):
        with torch.no_grad():
            spec = front(torch.from_numpy(store.read_batch(idx))).numpy() if idx.size else None
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if spec is None or c >= len(idx):
                ax.axis("off")
                continue
            img = np.concatenate(list(spec[c][::-1]), axis=0)  # channels stacked, top = last channel
            ax.imshow(img[::-1], aspect="auto", origin="lower", cmap="magma",
                      extent=(0, duration, 0, spec.shape[1]))
            i = int(idx[c])
            ax.set_title(f"{store.subject_names[store.subjects[i]]} @ {store.starts[i]:.0f}s", fontsize=7)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle(f"{store.path.name}: |STFT| (log1p), channels stacked bottom→top: {', '.join(store.channels)}",
                 fontsize=8)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
