"""Time budgets: a run that measures its own step time and sizes its schedule to finish inside ``runtime.budget_min``.

With ``runtime.budget_min: M`` a training loop runs :data:`WARMUP_STEPS` steps unmeasured (allocation, first
kernels, caches), times the next :data:`MEASURED_STEPS`, and then fixes its total number of steps so that the
whole loop, counted from the trainer's start (set-up, the front end's fit, the steps already done), ends inside
``M`` minutes with a :data:`MARGIN` to spare for the final checkpoint and export. The recipe rebuilds every
per-step schedule (learning-rate warm-up and cosine, weight decay, teacher EMA momentum and temperature) over the
new total, so the run is a complete schedule of that length, not a longer one cut off. The steps before the
decision used the recipe's nominal schedule (they are the start of its warm-up either way). At the first epoch
end after the decision the total is fixed once more, from the time per step since the decision: that interval
holds an epoch end (its checkpoint, a fine-tuning stage's validation), which the first steps did not; a run
resumed before that refinement keeps its first choice.

The decision is taken at the same step on every rank, from the slowest rank's step time, so every rank chooses
the same total. It is logged (a console line and a ``budget`` event in metrics.jsonl), written to the run's
``config.yaml`` as ``runtime.budget_steps`` (a run started from that file uses the same total without measuring)
and stored in every checkpoint: a resumed run keeps the total it chose, whatever its new budget says.

This module is pure Python (no torch): the trainer feeds it the step count and its clock.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

WARMUP_STEPS = 2  # steps not timed (the first ones pay for allocation and caches)
MEASURED_STEPS = 10  # steps timed before the total is chosen
MARGIN = 0.03  # of the budget, left for the final checkpoint, the export and the variance of step time


def now() -> float:
    """The budget's clock (seconds, monotonic)."""
    return time.monotonic()


@dataclass
class BudgetPlan:
    """What a budget chose: logged, saved in checkpoints and metrics.jsonl."""

    minutes: float
    step_s: float  # measured seconds per step (slowest rank)
    decided_at: int  # the step after which the total was fixed
    elapsed_s: float  # seconds of the budget spent when it was fixed
    total: int  # the run's steps in all
    nominal: int  # the steps the recipe's epochs alone would have given
    refined: bool = False  # fixed again at the first epoch end after the first decision

    def describe(self, name: str) -> str:
        over = "since the first choice, an epoch end included" if self.refined else (
            f"over steps {self.decided_at - MEASURED_STEPS + 1}–{self.decided_at}")
        return (f"{name}: budget {self.minutes:g} min{' (refined)' if self.refined else ''}: {self.step_s:.3f} "
                f"s/step {over}, {self.elapsed_s:.0f} s spent at step {self.decided_at} → {self.total} steps in all "
                f"(the epochs alone: {self.nominal}); saved as runtime.budget_steps")


class Budget:
    """``observe(step)`` after every step; returns the measured step time once, at the decision step."""

    def __init__(self, minutes: float, start_step: int = 0, clock: Callable[[], float] | None = None):
        if not (minutes > 0 and math.isfinite(minutes)):
            raise ValueError(f"budget: expected minutes > 0, got {minutes}")
        self.minutes, self.clock = float(minutes), clock or now
        self.t0 = self.clock()
        self.start_step = int(start_step)
        self.decide_at = self.start_step + WARMUP_STEPS + MEASURED_STEPS
        self._mark: float | None = None
        self.plan: BudgetPlan | None = None

    @property
    def pending(self) -> bool:
        return self.plan is None

    def refine_due(self, step: int) -> bool:
        """Whether an epoch end at ``step`` is the refinement point: after the first choice, not refined yet."""
        return self.plan is not None and not self.plan.refined and step > self.plan.decided_at

    def rate_since_decision(self, step: int) -> float:
        """Seconds per step from the first choice to now (``step`` steps done)."""
        return (self.clock() - self._decided_t) / max(step - self.plan.decided_at, 1)

    def observe(self, step: int) -> float | None:
        """Call after step ``step`` (steps done) has finished; the seconds per step at the decision step."""
        if step == self.start_step + WARMUP_STEPS:
            self._mark = self.clock()
        if step == self.decide_at and self._mark is not None:
            return (self.clock() - self._mark) / MEASURED_STEPS
        return None

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def decide(self, step: int, step_s: float, elapsed_s: float, nominal: int) -> BudgetPlan:
        """Fix the total: the steps that fit in what is left of the budget (less the margin), at least one more."""
        left = self.minutes * 60.0 * (1.0 - MARGIN) - elapsed_s
        more = int(left // step_s) if step_s > 0 else 0
        refined = self.plan is not None
        self.plan = BudgetPlan(self.minutes, float(step_s), int(step), float(elapsed_s), int(step + max(more, 1)),
                               int(nominal), refined)
        self._decided_t = self.clock()
        return self.plan
