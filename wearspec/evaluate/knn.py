"""Weighted k-NN classifier on frozen features (the voting of DINO's ``eval_knn``; which features it gets is
the caller's choice: see :mod:`wearspec.evaluate.probe`).

Features are L2-normalised, similarity is the cosine (a dot product of unit vectors); each test
sample takes its ``k`` most similar training samples, and each neighbour votes for its class with
weight ``exp(sim / T)``. The class with the largest summed vote wins (ties: the lowest class code).
Test samples are processed in chunks so that the (chunk, N_train) similarity matrix bounds memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _tensor(a: Any, device: torch.device) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    return t.to(device)


def knn_predict(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    k: int = 20,
    T: float = 0.07,
    n_classes: int | None = None,
    *,
    chunk_size: int = 1024,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Predict test labels by weighted k-NN.

    Args:
        train_feats: (N, D) features of the memory bank; train_labels: (N,) int class codes ≥ 0.
        test_feats: (M, D) features to classify.
        k: neighbours (clipped to N); T: temperature of the vote weights exp(sim / T).
        n_classes: number of classes (default: max train label + 1).
    Returns:
        pred (M,) int64 and scores (M, n_classes) float32, the summed vote weights per class.
    """
    if k < 1 or T <= 0:
        raise ValueError(f"knn: expected k ≥ 1 and T > 0, got k={k}, T={T}")
    dev = torch.device(device)
    bank = F.normalize(_tensor(train_feats, dev).float(), dim=1)
    labels = _tensor(train_labels, dev).long()
    if bank.shape[0] == 0:
        raise ValueError("knn: the training bank is empty")
    if labels.min() < 0:
        raise ValueError("knn: train labels must be ≥ 0 (drop unlabelled windows first)")
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    test = _tensor(test_feats, dev).float()
    k = min(k, bank.shape[0])
    preds, scores = [], []
    with torch.inference_mode():
        for start in range(0, test.shape[0], chunk_size):
            q = F.normalize(test[start : start + chunk_size], dim=1)
            sim, nn_idx = (q @ bank.T).topk(k, dim=1)                     # (b, k)
            weights = (sim / T).exp()                                     # (b, k)
            votes = torch.zeros(q.shape[0], n_classes, device=dev)
            votes.scatter_add_(1, labels[nn_idx], weights)                # one-hot summed, weighted
            scores.append(votes.cpu())
            preds.append(votes.argmax(dim=1).cpu())
    if not preds:
        return np.zeros(0, np.int64), np.zeros((0, n_classes), np.float32)
    return torch.cat(preds).numpy().astype(np.int64), torch.cat(scores).numpy()
