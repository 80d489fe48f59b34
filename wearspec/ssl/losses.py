"""DINO view loss, EsViT region loss, and their combination.

Both losses are cross-entropies between a centred, sharpened teacher distribution and the student's
distribution, averaged over every (teacher global view i, student view j) pair with j ≠ i. Student views
are ordered globals first, then locals, so student view i and teacher view i are the same crop.

Each loss keeps its own center (a (1, K) float32 buffer, saved in its ``state_dict``). The center is
updated by an explicit call after the loss, with the same teacher outputs::

    loss = dino_loss(student_out, teacher_out, teacher_temp)
    dino_loss.update_center(teacher_out)      # no_grad; all-reduced across ranks

so that the loss of a step uses the center of the previous steps, and the update can be skipped (e.g.
under gradient accumulation) or placed after the optimiser step.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from wearspec.errors import WearspecError
from wearspec.training.schedules import teacher_temperature_schedule  # noqa: F401  (re-exported)

__all__ = ["CENTERINGS", "DINOLoss", "RegionLoss", "esvit_loss", "koleo_loss", "match_tokens", "sinkhorn_knopp",
           "teacher_temperature_schedule", "global_mean"]


@torch.no_grad()
def global_mean(x: Tensor) -> Tensor:
    """(N, K) → (1, K) float32 mean over the rows of every rank together.

    Sums and row counts are all-reduced together (one call) when ``torch.distributed`` is initialised, so
    the result is the exact mean of the global batch even when ranks hold different numbers of rows.
    """
    x = x.detach().float()
    stats = torch.cat([x.sum(0), x.new_tensor([x.shape[0]])])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)
    return (stats[:-1] / stats[-1].clamp_min(1)).unsqueeze(0)


@torch.no_grad()
def sinkhorn_knopp(logits: Tensor, teacher_temp: float, n_iters: int = 3) -> Tensor:
    """Teacher targets by Sinkhorn-Knopp equipartition (SwAV, DINOv2): (N, K) logits → (N, K) probabilities.

    ``Q = exp(logits / teacher_temp)``, then ``n_iters`` alternations of: every prototype (column) gets total
    mass 1/K, every row total mass 1/N; rows are returned normalised to sum 1. Sums run over the rows of every
    rank together (all-reduced) when ``torch.distributed`` is initialised, so the equipartition holds for the
    global batch. Unlike the EMA center, which only keeps the running mean uniform, this spreads every batch over
    the K prototypes (with a small data set and batch, EMA centering can leave most prototypes unused).
    Computed in float32 (float64 for float64 input), the max logit subtracted first for stability.
    """
    if teacher_temp <= 0 or n_iters < 1:
        raise WearspecError(f"sinkhorn_knopp: need teacher_temp > 0 and n_iters ≥ 1, got {teacher_temp}, {n_iters}")
    x = logits.detach()
    x = (x.double() if x.dtype == torch.float64 else x.float()) / teacher_temp
    distributed = dist.is_available() and dist.is_initialized()
    top = x.max().reshape(1)
    if distributed:
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    q = torch.exp(x - top).t()  # (K, N)
    k = q.shape[0]
    n = torch.tensor([float(q.shape[1])], dtype=q.dtype, device=q.device)
    if distributed:
        dist.all_reduce(n)
    total = q.sum().reshape(1)
    if distributed:
        dist.all_reduce(total)
    q /= total.clamp_min(torch.finfo(q.dtype).tiny)
    for _ in range(int(n_iters)):
        rows = q.sum(dim=1, keepdim=True)  # (K, 1): mass per prototype
        if distributed:
            dist.all_reduce(rows)
        q /= rows.clamp_min(torch.finfo(q.dtype).tiny) * k
        q /= q.sum(dim=0, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny) * n  # local columns = samples
    return (q * n).t()


@torch.no_grad()
def match_tokens(queries: Tensor, keys: Tensor, unit: bool = False) -> Tensor:
    """EsViT region matching: for every query token (B, Lq, D) the index of its most similar key token
    (B, Lk, D) by cosine similarity → (B, Lq). ``unit``: both are already L2-normalised float tensors."""
    if not unit:
        queries, keys = F.normalize(queries.float(), dim=-1), F.normalize(keys.float(), dim=-1)
    return torch.bmm(queries, keys.transpose(1, 2)).argmax(dim=-1)


def koleo_loss(x: Tensor, eps: float = 1e-8) -> Tensor:
    """KoLeo uniformity regulariser (DINOv2; Sablayrolles et al. 2019): x (B, D) → scalar.

    ``−mean_i log(min_{j≠i} ‖x̂_i − x̂_j‖ + eps)`` on L2-normalised rows x̂, a Kozachenko–Leonenko estimate of
    the negative differential entropy of the batch on the sphere. It pushes each feature away from its nearest
    neighbour in the batch, so the backbone's features spread over more directions (against dimensional
    collapse). Per rank (no all-gather); float32; B ≥ 2.
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise WearspecError(f"koleo_loss: expected (B ≥ 2, D) features, got {tuple(x.shape)}")
    with torch.autocast(x.device.type, enabled=False):
        z = F.normalize(x.float(), dim=-1, eps=eps)
        with torch.no_grad():
            sim = z @ z.t()
            sim.fill_diagonal_(-2.0)
            nearest = sim.argmax(dim=1)  # the closest other row (largest cosine)
        dist_nn = (z - z[nearest]).norm(dim=-1)
        return -torch.log(dist_nn + eps).mean()


CENTERINGS = ("ema", "sinkhorn")  # DINOLoss teacher targets: EMA center (DINO) or Sinkhorn-Knopp (DINOv2)


class _CenteredLoss(nn.Module):
    """Shared parts: the center buffer, its EMA update and the view-count checks."""

    def __init__(self, out_dim: int, n_global: int = 2, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        name = type(self).__name__
        if out_dim < 1 or n_global < 1 or student_temp <= 0 or not 0.0 <= center_momentum <= 1.0:
            raise WearspecError(f"{name}: need out_dim ≥ 1, n_global ≥ 1, student_temp > 0 and center_momentum in "
                                f"[0, 1], got {out_dim}, {n_global}, {student_temp}, {center_momentum}")
        self.out_dim, self.n_global = int(out_dim), int(n_global)
        self.student_temp, self.center_momentum = float(student_temp), float(center_momentum)
        self.register_buffer("center", torch.zeros(1, self.out_dim))

    def _check_views(self, n_student: int, n_teacher: int) -> None:
        name = type(self).__name__
        if n_teacher != self.n_global or n_student < n_teacher:
            raise WearspecError(f"{name}: expected {self.n_global} teacher (global) views and at least as many student "
                                f"views (globals first), got {n_teacher} and {n_student}")
        if n_student * n_teacher - n_teacher == 0:
            raise WearspecError(f"{name}: one global view and no local view leave no (teacher, student) pair")

    def _teacher_probs(self, t: Tensor, teacher_temp: float) -> Tensor:
        """(..., K) logits → centred, sharpened probabilities (float32, no gradient)."""
        if teacher_temp <= 0:
            raise WearspecError(f"{type(self).__name__}: teacher_temp must be > 0, got {teacher_temp}")
        return F.softmax((t.detach().float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def _ema_center(self, batch_center: Tensor) -> None:
        m = self.center_momentum
        self.center.mul_(m).add_(batch_center.to(self.center.device), alpha=1.0 - m)

    def extra_repr(self) -> str:
        return (f"out_dim={self.out_dim}, n_global={self.n_global}, student_temp={self.student_temp}, "
                f"center_momentum={self.center_momentum}")


class DINOLoss(_CenteredLoss):
    """DINO view-level loss: ``DINOLoss(out_dim, n_global=2, student_temp=0.1, center_momentum=0.9,
    centering="ema")``.

    ``forward(student_out, teacher_out, teacher_temp) -> scalar``:

    * student_out: list of V tensors (B, K), the student head's logits for every view, globals first;
    * teacher_out: list of ``n_global`` tensors (B, K), the teacher head's logits for the global views
      (treated as constants: no gradient flows into them);
    * returns ``mean over pairs (i, j), i < n_global, j < V, j ≠ i`` of
      ``mean_b Σ_k −softmax((t_i − center)/teacher_temp)_bk · log_softmax(s_j/student_temp)_bk``
      (n_global·V − n_global pairs), computed in float32 (autocast is switched off inside).

    ``update_center(teacher_out)``: center ← m·center + (1 − m)·mean of all teacher rows of the global batch.

    ``centering="sinkhorn"``: the teacher targets are :func:`sinkhorn_knopp` of all teacher views together
    (equipartition over the prototypes, DINOv2) instead of ``softmax((t − center)/teacher_temp)``; the center
    is still updated (it feeds the collapse monitor) but not used by the loss.
    """

    def __init__(self, out_dim: int, n_global: int = 2, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "ema", sinkhorn_iters: int = 3):
        super().__init__(out_dim, n_global, student_temp, center_momentum)
        if centering not in CENTERINGS:
            raise WearspecError(f"DINOLoss: centering must be one of {', '.join(CENTERINGS)}, got {centering!r}")
        self.centering, self.sinkhorn_iters = centering, int(sinkhorn_iters)

    def forward(self, student_out: Sequence[Tensor], teacher_out: Sequence[Tensor], teacher_temp: float) -> Tensor:
        self._check_views(len(student_out), len(teacher_out))
        with torch.autocast(student_out[0].device.type, enabled=False):  # float32 even inside autocast
            return self._forward(student_out, teacher_out, teacher_temp)

    def _forward(self, student_out: Sequence[Tensor], teacher_out: Sequence[Tensor], teacher_temp: float) -> Tensor:
        t = torch.stack(list(teacher_out))                                                # (T, B, K)
        if self.centering == "sinkhorn":
            t = sinkhorn_knopp(t.reshape(-1, t.shape[-1]), teacher_temp, self.sinkhorn_iters).view(t.shape)
        else:
            t = self._teacher_probs(t, teacher_temp)
        s = F.log_softmax(torch.stack(list(student_out)).float() / self.student_temp, dim=-1)  # (V, B, K)
        if t.shape[1:] != s.shape[1:] or t.shape[-1] != self.out_dim:
            raise WearspecError(f"DINOLoss: teacher views {tuple(t.shape[1:])} and student views {tuple(s.shape[1:])} "
                                f"must both be (B, {self.out_dim})")
        ce = -torch.einsum("tbk,vbk->tv", t, s) / t.shape[1]                             # (T, V) mean over b
        keep = torch.ones_like(ce, dtype=torch.bool)
        keep[:, : t.shape[0]].fill_diagonal_(False)
        return ce[keep].mean()

    @torch.no_grad()
    def update_center(self, teacher_out: Sequence[Tensor] | Tensor) -> None:
        """EMA of the global-batch mean of the teacher logits: list of (B, K) or one (N, K)."""
        x = torch.cat(list(teacher_out)) if not isinstance(teacher_out, Tensor) else teacher_out
        self._ema_center(global_mean(x.reshape(-1, self.out_dim)))


class RegionLoss(_CenteredLoss):
    """EsViT region-level loss (dense correspondence between token grids):
    ``RegionLoss(out_dim, n_global=2, student_temp=0.1, center_momentum=0.9)``.

    ``forward(student_feats, student_dense, teacher_feats, teacher_dense, teacher_temp) -> scalar``:

    * student_feats: V tensors (B, Ls_j, Dt), backbone token features of every student view (globals first);
    * student_dense: V tensors (B, Ls_j, K), the student dense head's logits on those tokens;
    * teacher_feats: ``n_global`` tensors (B, Lt_i, Dt); teacher_dense: ``n_global`` tensors (B, Lt_i, K);
    * for each pair (i, j), j ≠ i: cosine similarity of the L2-normalised features (B, Ls_j, Lt_i); each
      student token takes its most similar teacher token (argmax, no gradient); the target is that teacher
      token's ``softmax((teacher_dense − center)/teacher_temp)``; the pair loss is the cross-entropy with
      ``log_softmax(student_dense/student_temp)`` averaged over student tokens and batch. Returns the mean
      over pairs. Token counts may differ between views (local crops have fewer tokens). Vectorised per pair
      (``torch.gather``), float32 (autocast is switched off inside).

    ``update_center(teacher_dense)``: center ← m·center + (1 − m)·mean over the batch and tokens of every
    teacher view, all-reduced across ranks.
    """

    def forward(self, student_feats: Sequence[Tensor], student_dense: Sequence[Tensor],
                teacher_feats: Sequence[Tensor], teacher_dense: Sequence[Tensor], teacher_temp: float) -> Tensor:
        n_s, n_t = len(student_dense), len(teacher_dense)
        self._check_views(n_s, n_t)
        if len(student_feats) != n_s or len(teacher_feats) != n_t:
            raise WearspecError(f"RegionLoss: {len(student_feats)} student feature maps for {n_s} dense outputs, "
                                f"{len(teacher_feats)} teacher feature maps for {n_t}")
        with torch.autocast(student_dense[0].device.type, enabled=False):  # float32 even inside autocast
            return self._forward(student_feats, student_dense, teacher_feats, teacher_dense, teacher_temp)

    def _forward(self, student_feats: Sequence[Tensor], student_dense: Sequence[Tensor],
                 teacher_feats: Sequence[Tensor], teacher_dense: Sequence[Tensor], teacher_temp: float) -> Tensor:
        n_s, n_t = len(student_dense), len(teacher_dense)
        shapes = [(f"student {j}", f, d) for j, (f, d) in enumerate(zip(student_feats, student_dense))]
        shapes += [(f"teacher {i}", f, d) for i, (f, d) in enumerate(zip(teacher_feats, teacher_dense))]
        b, dt = student_feats[0].shape[0], student_feats[0].shape[-1]
        for name, f, d in shapes:
            if f.ndim != 3 or d.ndim != 3 or f.shape[:2] != d.shape[:2] or (f.shape[0], f.shape[2], d.shape[2]) != (
                    b, dt, self.out_dim):
                raise WearspecError(f"RegionLoss: {name} view has features {tuple(f.shape)} and dense logits "
                                    f"{tuple(d.shape)}; expected (B={b}, L, Dt={dt}) and (B={b}, L, {self.out_dim})")
        t_probs = [self._teacher_probs(td, teacher_temp) for td in teacher_dense]              # (B, Lt, K)
        t_unit = [F.normalize(tf.detach().float(), dim=-1) for tf in teacher_feats]           # (B, Lt, Dt)
        total, n_pairs = None, 0
        for j in range(n_s):
            s_logp = F.log_softmax(student_dense[j].float() / self.student_temp, dim=-1)      # (B, Ls, K)
            s_unit = F.normalize(student_feats[j].detach().float(), dim=-1)                   # (B, Ls, Dt)
            for i in range(n_t):
                if i == j:
                    continue
                match = match_tokens(s_unit, t_unit[i], unit=True)                           # (B, Ls)
                target = t_probs[i].gather(1, match[..., None].expand(-1, -1, self.out_dim))  # (B, Ls, K)
                loss = -(target * s_logp).sum(-1).mean()
                total, n_pairs = loss if total is None else total + loss, n_pairs + 1
        return total / n_pairs

    @torch.no_grad()
    def update_center(self, teacher_dense: Sequence[Tensor] | Tensor) -> None:
        """EMA of the global mean over batch and tokens of the teacher dense logits: list of (B, Lt_i, K)
        (token counts may differ) or one (..., K) tensor."""
        views = [teacher_dense] if isinstance(teacher_dense, Tensor) else list(teacher_dense)
        self._ema_center(global_mean(torch.cat([v.reshape(-1, self.out_dim) for v in views])))


def esvit_loss(view_loss: Tensor, region_loss: Tensor | None, view_weight: float = 0.5,
               region_weight: float = 0.5) -> Tensor:
    """EsViT total: ``view_weight·view_loss + region_weight·region_loss``.

    EsViT weights the view and region cross-entropies 0.5 each per (teacher, student) pair, sums them and
    averages over pairs; both losses here are already pair averages over the same pairs, so that equals
    0.5·view + 0.5·region. ``region_loss=None`` (region loss disabled) returns ``view_loss`` unscaled: the
    plain DINO objective.
    """
    if region_loss is None:
        return view_loss
    return view_weight * view_loss + region_weight * region_loss
