"""Collapse diagnostics for DINO-style training.

DINO can collapse two ways, and centering and sharpening push in opposite directions:

* **uniform** collapse (centering wins, e.g. a teacher temperature too high for the data): every teacher
  distribution is close to uniform; per-sample entropy ≈ log K;
* **dominant** (one-hot) collapse (sharpening wins, e.g. a broken center update): every sample puts its
  mass on the same dimension; the batch-mean distribution has low entropy and one argmax dominates.

A healthy teacher is confident per sample (low per-sample entropy) but spreads the batch over many
dimensions (high entropy of the batch-mean distribution). :func:`collapse_stats` measures this each step
(log its dict to ``metrics.jsonl``); :class:`CollapseMonitor` turns it into a rate-limited warning, and
:class:`CollapseGuard` into a verdict: a teacher that is still collapsed once warm-up is over (averaged over
a window of steps, so one odd batch does not count) stops the run (``runtime.on_collapse=stop``) with
:class:`CollapseError`, before a useless encoder is written as if it were good.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from wearspec.errors import WearspecError


@torch.no_grad()
def collapse_stats(teacher_out: Tensor, center: Tensor, teacher_temp: float) -> dict[str, float]:
    """Statistics of the teacher distribution p = softmax((teacher_out − center)/teacher_temp).

    teacher_out: (B, K) logits (or (..., K): leading dims are flattened, e.g. dense (B, L, K));
    center: (1, K) or (K,). Returns floats (entropies in nats):

    * ``entropy``: mean per-sample entropy H(p_b); ``entropy_norm``: the same / log K (1 = uniform);
    * ``mean_entropy``: H(p̄) of the batch-mean distribution p̄; ``mean_entropy_norm``: the same /
      log min(B, K), the largest value a batch of B one-hot rows can reach (so it is comparable across
      batch sizes when K ≫ B);
    * ``kl_uniform``: KL(p̄ ‖ uniform) = log K − H(p̄);
    * ``kl_center``: mean_b KL(p_b ‖ softmax(center/teacher_temp));
    * ``top_fraction``: fraction of rows whose argmax is the most common argmax;
    * ``used``: how many distinct output dimensions (prototypes) are some row's argmax;
      ``used_fraction``: the same / min(B, K), the most a batch can use (1 = every row a different one).
    """
    if teacher_temp <= 0:
        raise WearspecError(f"collapse_stats: teacher_temp must be > 0, got {teacher_temp}")
    k = teacher_out.shape[-1]
    t = teacher_out.detach().float().reshape(-1, k)
    c = center.detach().float().reshape(1, k).to(t.device)
    b = t.shape[0]
    logp = F.log_softmax((t - c) / teacher_temp, dim=-1)
    p = logp.exp()
    entropy = -(p * logp).sum(-1).mean()
    p_mean = p.mean(0)
    mean_entropy = -(p_mean * p_mean.clamp_min(1e-30).log()).sum()
    log_q = F.log_softmax(c / teacher_temp, dim=-1)
    kl_center = (p * (logp - log_q)).sum(-1).mean()
    counts = torch.bincount(p.argmax(-1), minlength=k)
    top_fraction, used = counts.max() / max(b, 1), int((counts > 0).sum())
    log_k, log_bk = math.log(k) if k > 1 else 1.0, math.log(min(b, k)) if min(b, k) > 1 else 1.0
    return {
        "entropy": float(entropy), "entropy_norm": float(entropy) / log_k,
        "mean_entropy": float(mean_entropy), "mean_entropy_norm": float(mean_entropy) / log_bk,
        "kl_uniform": (math.log(k) - float(mean_entropy)), "kl_center": float(kl_center),
        "top_fraction": float(top_fraction), "used": used, "used_fraction": used / max(min(b, k), 1),
    }


class CollapseMonitor:
    """Warns, at most once per ``cooldown`` updates, when the teacher output has collapsed for ``patience``
    consecutive updates: ``msg = monitor.update(collapse_stats(t, loss.center, temp)); if msg: log(msg)``.

    uniform_threshold: ``entropy_norm`` above it (per-sample distributions ≈ uniform) is uniform collapse.
    dominant_threshold: ``mean_entropy_norm`` below it (the batch uses ~one dimension) is dominant collapse;
    top_fraction_threshold: ``top_fraction`` at or above it (one argmax for most of the batch) is too.
    """

    def __init__(self, uniform_threshold: float = 0.98, dominant_threshold: float = 0.1,
                 top_fraction_threshold: float = 0.9, patience: int = 20, cooldown: int = 1000):
        if not (0 < uniform_threshold <= 1 and 0 <= dominant_threshold < 1 and 0 < top_fraction_threshold <= 1
                and patience >= 1 and cooldown >= 0):
            raise WearspecError(f"CollapseMonitor: thresholds out of range or patience < 1: {uniform_threshold}, "
                                f"{dominant_threshold}, {top_fraction_threshold}, {patience}, {cooldown}")
        self.uniform_threshold, self.dominant_threshold = float(uniform_threshold), float(dominant_threshold)
        self.top_fraction_threshold = float(top_fraction_threshold)
        self.patience, self.cooldown = int(patience), int(cooldown)
        self.reset()

    def reset(self) -> None:
        self.step, self.last_warning = 0, None
        self.streak = {"uniform": 0, "dominant": 0}

    def update(self, stats: dict[str, float]) -> str | None:
        """Record one step's :func:`collapse_stats`; a warning message, or None."""
        self.step += 1
        uniform = stats["entropy_norm"] >= self.uniform_threshold
        dominant = (stats["mean_entropy_norm"] <= self.dominant_threshold
                    or stats["top_fraction"] >= self.top_fraction_threshold)
        for kind, now in (("uniform", uniform), ("dominant", dominant)):
            self.streak[kind] = self.streak[kind] + 1 if now else 0
        kind = next((k for k in ("uniform", "dominant") if self.streak[k] >= self.patience), None)
        if kind is None or (self.last_warning is not None and self.step - self.last_warning < self.cooldown):
            return None
        self.last_warning = self.step
        if kind == "uniform":
            return (f"collapse: teacher outputs are ~uniform for {self.streak[kind]} steps (entropy "
                    f"{stats['entropy_norm']:.3f} of log K); lower the teacher temperature (final and warm-up) "
                    f"or the output dimension")
        return (f"collapse: one output dimension dominates for {self.streak[kind]} steps (batch-mean entropy "
                f"{stats['mean_entropy_norm']:.3f}, top argmax on {stats['top_fraction']:.0%} of the batch); check "
                f"that update_center is called every step, lower center_momentum or raise the teacher temperature")


class CollapseError(WearspecError):
    """Pretraining stopped because the teacher collapsed (see :class:`CollapseGuard`)."""


class CollapseGuard:
    """Decides, after warm-up, whether the teacher has collapsed: ``guard.update(step, stats)`` returns a
    one-line verdict (or None) once ``step ≥ check_from`` and the mean of the last ``window`` steps' statistics
    is collapsed:

    * uniform: mean ``entropy_norm`` ≥ ``uniform_threshold`` (every target ≈ uniform: the student learns
      nothing; measured: a healthy run of the tiny recipes is at 0.4–0.8 after its first epochs, a collapsed one
      stays at 0.9–0.97 for the whole run);
    * dominant: mean ``mean_entropy_norm`` ≤ ``dominant_threshold`` or mean ``top_fraction`` ≥
      ``top_fraction_threshold`` (one prototype takes the batch).

    ``check_from``: the first step at which a verdict may be given (the pretraining recipe passes the end of
    the LR and teacher-temperature warm-ups, and at least 40 % of the run): before it every teacher is near
    uniform. From then on every step is judged on the last ``window`` steps; a verdict is given once, later
    calls return None (``runtime.on_collapse=warn`` goes on after it).
    """

    def __init__(self, check_from: int, window: int = 50, uniform_threshold: float = 0.9,
                 dominant_threshold: float = 0.1, top_fraction_threshold: float = 0.9):
        if check_from < 0 or window < 1 or not 0 < uniform_threshold <= 1:
            raise WearspecError(f"CollapseGuard: need check_from ≥ 0, window ≥ 1 and a threshold in (0, 1], got "
                                f"{check_from}, {window}, {uniform_threshold}")
        self.check_from, self.window = int(check_from), int(window)
        self.uniform_threshold, self.dominant_threshold = float(uniform_threshold), float(dominant_threshold)
        self.top_fraction_threshold = float(top_fraction_threshold)
        self.recent: list[tuple[float, float, float]] = []
        self.done = False

    def update(self, step: int, stats: dict[str, float]) -> str | None:
        """Record the statistics of optimisation step ``step`` (1-based count of steps done)."""
        self.recent = (self.recent + [(stats["entropy_norm"], stats["mean_entropy_norm"], stats["top_fraction"])]
                       )[-self.window:]
        if self.done or step < self.check_from or len(self.recent) < self.window:
            return None
        entropy, spread, top = (sum(v) / len(v) for v in zip(*self.recent))
        self.done = entropy >= self.uniform_threshold or spread <= self.dominant_threshold or top >= \
            self.top_fraction_threshold
        if entropy >= self.uniform_threshold:
            return (f"collapse: after {step} steps the teacher's targets are still ~uniform (entropy {entropy:.2f} "
                    f"of log K over the last {self.window} steps, threshold {self.uniform_threshold:g}): the "
                    "features learn nothing. Lower loss.teacher_temp (and loss.warmup_teacher_temp), use "
                    "loss.centering=sinkhorn, or lower head.out_dim")
        if spread <= self.dominant_threshold or top >= self.top_fraction_threshold:
            return (f"collapse: after {step} steps one prototype takes the batch (batch-mean entropy {spread:.2f}, "
                    f"top argmax on {top:.0%} of it, over the last {self.window} steps). Use "
                    "loss.centering=sinkhorn, raise loss.teacher_temp or lower loss.center_momentum")
        return None
