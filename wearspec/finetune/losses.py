"""Fine-tuning losses: cross-entropy with class weights and soft labels, DeiT distillation, class weights.

* :func:`cross_entropy` — CE of logits (B, K) against class indices (B,) or soft labels (B, K) (cut-mix
  mixes one-hot labels), with optional class weights and label smoothing.
* :func:`soft_distillation` — ``KL(softmax(t/τ) ‖ softmax(s/τ))·τ²``, mean over the batch (DeiT "soft"; DeiT's
  code divides the summed KL by B·K, so at the same α this term weighs K times more than there).
* :func:`hard_distillation` — ``CE(s, argmax t)`` (DeiT "hard"; the teacher's decision is the label).
* :func:`class_weights` — inverse class frequency, normalised to mean 1 ("balanced").
* :class:`DistillationLoss` — the DeiT / DeSepTr objective on a student's two heads:
  ``(1 − α)·CE(y, cls) + α·distill(teacher, dist)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wearspec.errors import WearspecError
from wearspec.models.students import StudentOutput

KINDS = ("hard", "soft", "none")
WEIGHT_MODES = ("balanced", "none")


def cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None,
                  label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of ``logits`` (B, K) against ``target``: class indices (B,) or soft labels (B, K)
    (rows summing to 1, e.g. cut-mix mixtures of one-hot labels).

    The target distribution q is smoothed as ``(1 − ε)·q + ε/K``; example i's loss is
    ``−Σ_c w_c q_ic log p_ic`` and the batch loss is ``Σ_i loss_i / Σ_i Σ_c w_c y_ic`` (y the unsmoothed
    target): each example counts with the weight of its (mixed) class. For class indices this is exactly
    ``F.cross_entropy(logits, target, weight, label_smoothing=ε)``; without weights it is the plain mean.
    Computed in float32 (also under autocast).
    """
    logits = logits.float()
    k = logits.shape[-1]
    y = F.one_hot(target.long(), k).float() if target.dim() == 1 else target.float()
    if y.shape != logits.shape:
        raise WearspecError(f"cross_entropy: target {tuple(target.shape)} does not fit logits {tuple(logits.shape)}")
    q = (1.0 - label_smoothing) * y + label_smoothing / k if label_smoothing else y
    w = torch.ones(k, device=logits.device) if weight is None else weight.to(logits.device, torch.float32)
    per_example = -(q * w * F.log_softmax(logits, dim=-1)).sum(dim=-1)  # (B,)
    return per_example.sum() / (y * w).sum().clamp_min(1e-12)


def soft_distillation(student_logits: Tensor, teacher_logits: Tensor, tau: float = 1.0) -> Tensor:
    """``KL(softmax(t/τ) ‖ softmax(s/τ))·τ²`` averaged over the batch; logits (B, K). The τ² keeps the
    gradient scale independent of τ (Hinton et al.); the teacher is detached. This is the KL per sample
    (``batchmean``); DeiT's ``DistillationLoss`` divides the sum by B·K instead, i.e. K times smaller."""
    log_s = F.log_softmax(student_logits.float() / tau, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach().float() / tau, dim=-1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * (tau * tau)


def hard_distillation(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``CE(student, argmax teacher)``, mean over the batch; logits (B, K)."""
    return F.cross_entropy(student_logits.float(), teacher_logits.detach().argmax(dim=-1))


def class_weights(labels: np.ndarray | Sequence[int], n_classes: int, mode: str = "balanced",
                  label_names: Sequence[str] | None = None, where: str = "the training split") -> Tensor:
    """Per-class loss weights (K,) float32 from the training labels (codes 0 … K-1).

    ``balanced``: ``w_c ∝ 1 / n_c`` normalised to mean 1 (``n / (K·n_c)`` rescaled), so rare classes weigh
    more and the loss scale stays that of unweighted CE; ``none``: ones. In both modes every class must
    have training windows (a model cannot learn a class it never sees, and its balanced weight would be
    infinite): an absent class is a :class:`WearspecError` naming it and ``where``.
    """
    if mode not in WEIGHT_MODES:
        raise WearspecError(f"class_weights: expected balanced or none, got {mode!r}")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)[:n_classes]
    absent = np.flatnonzero(counts == 0)
    if absent.size:
        names = [str(label_names[c]) if label_names is not None else str(c) for c in absent]
        raise WearspecError(f"class {names[0]!r} has no labelled windows in {where}"
                            + (f" (nor {', '.join(map(repr, names[1:]))})" if len(names) > 1 else "")
                            + "; choose other subjects or drop the class when preparing the store")
    if mode == "none":
        return torch.ones(n_classes)
    inv = 1.0 / counts.astype(np.float64)
    return torch.from_numpy(inv / inv.mean()).float()


class DistillationLoss(nn.Module):
    """The DeiT / DeSepTr fine-tuning objective.

    ``forward(out, labels, teacher_logits=None)`` with ``out`` a :class:`StudentOutput` (cls (B, K), dist
    (B, K) or None), ``labels`` class indices (B,) or soft labels (B, K) (cut-mix), ``teacher_logits``
    (B, K) of the frozen teacher on the same (augmented) input:

    * ``kind="hard"`` / ``"soft"``: ``(1 − α)·CE(y, cls) + α·D(dist, teacher)`` with D
      :func:`hard_distillation` or :func:`soft_distillation` (τ); α = 0.5 gives DeSepTr's
      ``0.5·CE + 0.5·CE(teacher)``. A student without a dist head distils on its cls head.
    * ``kind="none"``: CE on cls, averaged with CE on dist when there is a dist head (no teacher).

    CE uses the class ``weight`` (K,) and ``label_smoothing``; the distillation term uses neither.
    """

    def __init__(self, kind: str = "hard", alpha: float = 0.5, tau: float = 1.0, label_smoothing: float = 0.0,
                 weight: Tensor | None = None):
        super().__init__()
        if kind not in KINDS:
            raise WearspecError(f"distill.kind: expected hard, soft or none, got {kind!r}")
        if not 0.0 <= alpha <= 1.0 or not tau > 0 or not 0.0 <= label_smoothing < 1.0:
            raise WearspecError(f"distillation loss: need alpha in [0, 1], tau > 0, label_smoothing in [0, 1); "
                                f"got {alpha}, {tau}, {label_smoothing}")
        self.kind, self.alpha, self.tau, self.label_smoothing = kind, float(alpha), float(tau), float(label_smoothing)
        self.register_buffer("weight", None if weight is None else weight.detach().float().clone(), persistent=False)

    @property
    def needs_teacher(self) -> bool:
        return self.kind != "none"

    def ce(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Weighted, smoothed CE of one head (see :func:`cross_entropy`)."""
        return cross_entropy(logits, labels, self.weight, self.label_smoothing)

    def forward(self, out: StudentOutput, labels: Tensor, teacher_logits: Tensor | None = None) -> Tensor:
        if self.kind == "none":
            loss = self.ce(out.cls, labels)
            return (loss + self.ce(out.dist, labels)) / 2 if out.dist is not None else loss
        if teacher_logits is None:
            raise WearspecError(f"distillation loss: kind={self.kind!r} needs the teacher's logits")
        head = out.dist if out.dist is not None else out.cls
        distill = (hard_distillation(head, teacher_logits) if self.kind == "hard"
                   else soft_distillation(head, teacher_logits, self.tau))
        return (1.0 - self.alpha) * self.ce(out.cls, labels) + self.alpha * distill

    def extra_repr(self) -> str:
        return f"kind={self.kind}, alpha={self.alpha}, tau={self.tau}, label_smoothing={self.label_smoothing}"
