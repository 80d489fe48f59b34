"""How hard is the embedded synthetic data set? A hand-crafted-feature baseline on held-out subjects.

Prepares the default synthetic store (``wearspec prepare synthetic`` with the default
``PrepareConfig``: 24 subjects × 6 min at 50 Hz, 5 s windows, 2.5 s hop) into a temporary folder,
splits the subjects by id (16 train / 8 held-out test, fixed seed), computes simple features per
window and trains two baselines with numpy/torch only:

* multinomial logistic regression (torch, L-BFGS, L2) on standardised features;
* nearest centroid (Euclidean, standardised features).

Features: the package's classical-baseline features (``wearspec.evaluate.classical.window_features``:
per-channel and per-magnitude statistics, percentiles, dominant frequency, log band powers and
cross-channel correlations; its module docstring has the list).

Reported: accuracy and macro-F1 on the held-out subjects and on the training subjects (the gap
shows the data is not trivially separable), per-class F1 on held-out subjects, generation and
prepare times. The generator is tuned so that the held-out logistic-regression macro-F1 lies in
~0.6–0.85, leaving headroom for learned models.

    python benchmarks/synthetic_baseline.py [--json results.json] [--subjects 24] [--train 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wearspec.data.prepare import PrepareConfig  # noqa: E402
from wearspec.data.prepare import prepare  # noqa: E402
from wearspec.data.synthetic import generate  # noqa: E402
from wearspec.evaluate.classical import window_features  # noqa: E402


def macro_f1(y: np.ndarray, p: np.ndarray, n_classes: int) -> tuple[float, np.ndarray]:
    f1 = np.zeros(n_classes)
    for c in range(n_classes):
        tp = np.sum((p == c) & (y == c))
        denom = np.sum(p == c) + np.sum(y == c)
        f1[c] = 2 * tp / denom if denom else 0.0
    present = np.isin(np.arange(n_classes), y)
    return float(f1[present].mean()), f1


def logistic(xtr: np.ndarray, ytr: np.ndarray, n_classes: int, l2: float = 1e-3, seed: int = 0):
    """Multinomial logistic regression (L-BFGS, L2 on weights); returns predict(x)."""
    torch.manual_seed(seed)
    x = torch.from_numpy(xtr).float()
    y = torch.from_numpy(ytr).long()
    lin = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=500, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: lin(torch.from_numpy(z).float()).argmax(1).numpy()


def nearest_centroid(xtr: np.ndarray, ytr: np.ndarray, n_classes: int):
    cents = np.stack([xtr[ytr == c].mean(0) if np.any(ytr == c) else np.full(xtr.shape[1], np.inf) for c in range(n_classes)])
    return lambda z: ((z[:, None, :] - cents[None]) ** 2).sum(-1).argmin(1)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=24, help="labelled subjects to generate")
    ap.add_argument("--minutes", type=float, default=6.0, help="minutes per subject")
    ap.add_argument("--train", type=int, default=16, help="subjects used for training; the rest are held out")
    ap.add_argument("--seed", type=int, default=0, help="generator seed (synthetic.seed)")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the subject split")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    cfg = PrepareConfig()
    cfg.synthetic.subjects, cfg.synthetic.minutes_per_subject, cfg.synthetic.seed = args.subjects, args.minutes, args.seed
    t0 = time.perf_counter()
    n_samples = sum(r.data.shape[1] for r in generate(cfg.synthetic))
    t_gen = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store, _ = prepare("synthetic", None, Path(tmp) / "store", cfg, progress=False)
        t_prep = time.perf_counter() - t0
        keep = np.flatnonzero(store.labels >= 0)
        x = store.read_batch(keep)
        y = store.labels[keep].astype(np.int64)
        subj = np.asarray(store.subject_names)[store.subjects[keep]]
        names, rate, channels = store.label_names, store.rate, store.channels
    t0 = time.perf_counter()
    feats, _ = window_features(x, rate, channels)
    t_feat = time.perf_counter() - t0

    order = np.random.default_rng(args.split_seed).permutation(sorted(set(subj)))
    train_subjects = sorted(order[: args.train])
    tr = np.isin(subj, train_subjects)
    mu, sd = feats[tr].mean(0), feats[tr].std(0) + 1e-8
    z = ((feats - mu) / sd).astype(np.float32)
    k = len(names)
    models = {"logistic regression": logistic(z[tr], y[tr], k), "nearest centroid": nearest_centroid(z[tr], y[tr], k)}

    rows, per_class = [], {}
    for model, predict in models.items():
        for split, mask in (("held-out", ~tr), ("train", tr)):
            p = predict(z[mask])
            mf1, f1 = macro_f1(y[mask], p, k)
            rows.append({"model": model, "subjects": split, "n_subjects": len(set(subj[mask])), "windows": int(mask.sum()),
                         "accuracy": float((p == y[mask]).mean()), "macro_f1": mf1})
            if split == "held-out":
                per_class[model] = dict(zip(names, f1.round(3).tolist()))
                if model == "logistic regression":
                    confusion = np.zeros((k, k), np.int64)
                    np.add.at(confusion, (y[mask], p), 1)

    print(f"synthetic: {args.subjects} subjects × {args.minutes:g} min at {cfg.synthetic.rate:g} Hz = {n_samples} samples; "
          f"generate {t_gen:.2f} s, prepare {t_prep:.2f} s, features {t_feat:.2f} s; {len(y)} labelled windows")
    print(f"train subjects: {', '.join(train_subjects)}")
    print(f"\n| {'model':<20} | {'subjects':<8} | {'n':>3} | {'windows':>7} | {'accuracy':>8} | {'macro-F1':>8} |")
    print(f"|{'-' * 22}|{'-' * 10}|{'-' * 5}|{'-' * 9}|{'-' * 10}|{'-' * 10}|")
    for r in rows:
        print(f"| {r['model']:<20} | {r['subjects']:<8} | {r['n_subjects']:>3} | {r['windows']:>7} | "
              f"{r['accuracy']:>8.3f} | {r['macro_f1']:>8.3f} |")
    print("\nper-class F1, held-out subjects:")
    print(f"| {'model':<20} | " + " | ".join(f"{n[:8]:>8}" for n in names) + " |")
    print(f"|{'-' * 22}|" + "|".join("-" * 10 for _ in names) + "|")
    for model, f in per_class.items():
        print(f"| {model:<20} | " + " | ".join(f"{f[n]:>8.3f}" for n in names) + " |")
    print("\nconfusion, logistic regression, held-out subjects (rows: true, columns: predicted):")
    print(f"| {'':<9} | " + " | ".join(f"{n[:6]:>6}" for n in names) + " |")
    print(f"|{'-' * 11}|" + "|".join("-" * 8 for _ in names) + "|")
    for n, row in zip(names, confusion):
        print(f"| {n:<9} | " + " | ".join(f"{v:>6}" for v in row) + " |")
    result = {"config": vars(args) | {"json": str(args.json) if args.json else None}, "samples": n_samples,
              "generate_s": t_gen, "prepare_s": t_prep, "features_s": t_feat, "train_subjects": train_subjects,
              "results": rows, "per_class_f1_held_out": per_class,
              "confusion_logistic_held_out": {"labels": names, "matrix": confusion.tolist()}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
