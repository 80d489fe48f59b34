"""Linear probe on frozen (cached) features, with model selection on validation subjects only.

Recipe:

1. Standardise features with the *training* split's per-dimension mean and SD (DINO instead puts a
   parameter-free BatchNorm in front of its linear layer for some models; with cached features a
   fixed standardisation is the same thing, computed once, and it makes one learning-rate grid work
   for any backbone's feature scale). Set ``standardize=False`` to train on raw features.
2. For every (learning rate, weight decay) of the sweep, train an ``nn.Linear(D, n_classes)`` for a
   fixed number of epochs (SGD with momentum 0.9 or AdamW, cosine learning-rate decay to 0,
   mini-batches or full batch with ``batch_size=0``), optionally with a class-balanced loss. All
   sweep points are trained together as independent heads in one (S, C, D) weight tensor, each with
   its own learning rate and weight decay, on the same seeded batch order from the same seeded
   initial weights: the result equals training them one by one with ``torch.optim``, at a
   fraction of the cost (one matmul and one backward per step for the whole sweep).
3. Pick the point with the best validation macro-F1 (ties: the first in sweep order, learning
   rates outer, weight decays inner). If there are no validation windows, the training macro-F1
   decides and ``selected_on`` says ``"train"``.

:func:`fit_linear_probe` takes no test data at all; test features meet the chosen probe only
through :meth:`LinearProbe.predict`, after selection (:func:`linear_probe` does both in that order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wearspec.errors import WearspecError
from wearspec.evaluate.metrics import macro_f1


@dataclass
class LinearProbeConfig:
    """Linear-probe sweep: every lr × weight decay is trained, the best on validation macro-F1 wins."""

    lrs: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1])
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4, 1e-3])
    epochs: int = 100
    batch_size: int = 256  # 0: full batch
    optimizer: str = "sgd"  # sgd (momentum 0.9) | adamw
    class_balanced: bool = False  # weight the loss by inverse class frequency of the training split
    standardize: bool = True  # z-score features with training-split statistics

    def validate(self) -> None:
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise WearspecError(f"linear.lrs: expected a non-empty list of positive numbers, got {self.lrs}")
        if not self.weight_decays or any(wd < 0 for wd in self.weight_decays):
            raise WearspecError(
                f"linear.weight_decays: expected a non-empty list of numbers ≥ 0, got {self.weight_decays}")
        if self.epochs < 1:
            raise WearspecError(f"linear.epochs: expected ≥ 1, got {self.epochs}")
        if self.batch_size < 0:
            raise WearspecError(f"linear.batch_size: expected ≥ 0 (0 = full batch), got {self.batch_size}")
        if self.optimizer not in ("sgd", "adamw"):
            raise WearspecError(f"linear.optimizer: expected sgd or adamw, got {self.optimizer!r}")


@dataclass
class LinearProbe:
    """A fitted probe: ``logits = ((x − mean) / std) @ weight.T + bias``."""

    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)
    weight: np.ndarray  # (n_classes, D)
    bias: np.ndarray  # (n_classes,)
    lr: float
    weight_decay: float
    val_macro_f1: float
    selected_on: str  # "val" | "train"
    sweep: list[dict]  # {"lr", "weight_decay", "val_macro_f1" (or "train_macro_f1")} per point

    def logits(self, feats: Any) -> np.ndarray:
        x = (np.asarray(feats, dtype=np.float32) - self.mean) / self.std
        return x @ self.weight.T + self.bias

    def predict(self, feats: Any) -> tuple[np.ndarray, np.ndarray]:
        """(pred (M,) int64, probabilities (M, n_classes) float32)."""
        z = self.logits(feats)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return z.argmax(axis=1).astype(np.int64), p.astype(np.float32)

    def selection(self) -> dict:
        """Chosen hyper-parameters and the score of every sweep point (for the report)."""
        return {"lr": self.lr, "weight_decay": self.weight_decay, "selected_on": self.selected_on,
                "score": self.val_macro_f1, "sweep": self.sweep}


def _class_weights(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    counts = torch.bincount(y, minlength=n_classes).float()
    present = counts > 0
    w = torch.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w


def _train_heads(x: torch.Tensor, y: torch.Tensor, n_classes: int, points: list[tuple[float, float]],
                 cfg: LinearProbeConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one independent linear head per (lr, weight decay) point, all on the same batches.

    x (N, D) float32, y (N,) int64 → weights (S, C, D) and biases (S, C) for S points. The heads
    live in one (S, C, D) tensor and one forward/backward serves them all; the update is
    ``torch.optim.SGD`` (momentum 0.9) or ``torch.optim.AdamW`` written out with a per-head
    learning rate and weight decay, so each head follows exactly the trajectory it would alone.
    """
    dev, (n, d), s = x.device, x.shape, len(points)
    g = torch.Generator().manual_seed(seed)
    init = torch.randn(n_classes, d, generator=g) * 0.01
    w = init.to(dev).expand(s, -1, -1).clone().requires_grad_(True)
    b = torch.zeros(s, n_classes, device=dev, requires_grad=True)
    lrs = torch.tensor([p[0] for p in points], device=dev)
    wds = torch.tensor([p[1] for p in points], device=dev)
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in (w, b)]  # momentum / Adam (m, v)
    weight = _class_weights(y.cpu(), n_classes).to(dev) if cfg.class_balanced else None
    bs = n if cfg.batch_size == 0 else min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    total = cfg.epochs * steps_per_epoch
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=g).to(dev)
        for k in range(steps_per_epoch):
            idx = order[k * bs : (k + 1) * bs]
            xb, yb = x[idx], y[idx]
            logits = (xb @ w.reshape(s * n_classes, d).T).view(-1, s, n_classes).transpose(1, 2) + b.T  # (B, C, S)
            # mean over (B, S) × S = the sum over heads of each head's own mean loss
            loss = F.cross_entropy(logits, yb[:, None].expand(-1, s), weight=weight) * s
            grads = torch.autograd.grad(loss, (w, b))
            lr_now = lrs * 0.5 * (1.0 + math.cos(math.pi * step / total))  # cosine decay to 0
            step += 1
            with torch.no_grad():
                for p, grad, (m1, m2) in zip((w, b), grads, state):
                    shape = (s,) + (1,) * (p.ndim - 1)
                    lr_p, wd_p = lr_now.view(shape), wds.view(shape)
                    if cfg.optimizer == "sgd":
                        grad = grad + wd_p * p
                        if step == 1:
                            m1.copy_(grad)
                        else:
                            m1.mul_(0.9).add_(grad)
                        p.sub_(lr_p * m1)
                    else:
                        p.mul_(1.0 - lr_p * wd_p)
                        m1.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                        m2.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                        denom = (m2.sqrt() / math.sqrt(1.0 - beta2**step)).add_(eps)
                        p.sub_(lr_p / (1.0 - beta1**step) * m1 / denom)
    return w.detach(), b.detach()


def fit_linear_probe(
    train_feats: Any,
    train_labels: Any,
    val_feats: Any,
    val_labels: Any,
    n_classes: int,
    cfg: LinearProbeConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LinearProbe:
    """Sweep lr × weight decay on the training split, select on the validation split (macro-F1).

    Takes no test data: see the module docstring. Deterministic for a given seed and device.
    """
    cfg = cfg or LinearProbeConfig()
    cfg.validate()
    xtr = np.asarray(train_feats, dtype=np.float32)
    ytr = np.asarray(train_labels, dtype=np.int64)
    xva = np.asarray(val_feats, dtype=np.float32)
    yva = np.asarray(val_labels, dtype=np.int64)
    if xtr.ndim != 2 or xtr.shape[0] == 0 or ytr.shape != (xtr.shape[0],):
        raise WearspecError(
            f"linear probe: expected (N, D) training features with N labels, got {xtr.shape}, {ytr.shape}")
    if ytr.min() < 0 or ytr.max() >= n_classes:
        raise WearspecError(f"linear probe: training labels must lie in 0..{n_classes - 1}")
    if np.unique(ytr).size < 2:
        raise WearspecError("linear probe: the training split holds a single class; nothing to learn")
    if cfg.standardize:
        mean = xtr.mean(axis=0)
        std = xtr.std(axis=0)
        std = np.where(std > 1e-6 * max(float(std.max()), 1e-12), std, 1.0).astype(np.float32)
    else:
        mean, std = np.zeros(xtr.shape[1], np.float32), np.ones(xtr.shape[1], np.float32)
    dev = torch.device(device)
    x = torch.from_numpy((xtr - mean) / std).to(dev)
    y = torch.from_numpy(ytr).to(dev)
    points = [(float(lr), float(wd)) for lr in cfg.lrs for wd in cfg.weight_decays]
    weights, biases = _train_heads(x, y, n_classes, points, cfg, seed)

    selected_on = "val" if xva.size > 0 else "train"
    if selected_on == "val" and (xva.ndim != 2 or xva.shape != (yva.size, xtr.shape[1])):
        raise WearspecError(
            f"linear probe: validation features {xva.shape} do not match {yva.size} labels × D={xtr.shape[1]}")
    sel_x, sel_y = (xva, yva) if selected_on == "val" else (xtr, ytr)
    probes, sweep = [], []
    for i, (lr, wd) in enumerate(points):
        probe = LinearProbe(mean=mean, std=std, weight=weights[i].cpu().numpy().copy(),
                            bias=biases[i].cpu().numpy().copy(), lr=lr, weight_decay=wd,
                            val_macro_f1=float("nan"), selected_on=selected_on, sweep=sweep)
        score = macro_f1(sel_y, probe.predict(sel_x)[0])
        probe.val_macro_f1 = score
        probes.append(probe)
        sweep.append({"lr": lr, "weight_decay": wd, f"{selected_on}_macro_f1": score})
    def rank(i: int) -> tuple[float, int]:
        score = probes[i].val_macro_f1
        return (score if np.isfinite(score) else -math.inf, -i)

    best = max(range(len(probes)), key=rank)
    return probes[best]


def linear_probe(
    train_feats: Any,
    train_labels: Any,
    val_feats: Any,
    val_labels: Any,
    test_feats: Any,
    n_classes: int,
    cfg: LinearProbeConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[LinearProbe, np.ndarray]:
    """Select on validation, then predict test: ``(probe, test predictions)``.

    ``test_feats`` is first touched after :func:`fit_linear_probe` has returned.
    """
    probe = fit_linear_probe(train_feats, train_labels, val_feats, val_labels, n_classes, cfg,
                             seed=seed, device=device)
    return probe, probe.predict(test_feats)[0]
