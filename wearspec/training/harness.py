"""The training loop that pretraining and fine-tuning share; each recipe brings its networks and its step.

A recipe builds a :class:`Trainer` from a :class:`LoopSpec` (what to train on, how long, where), gives it its
optimiser and per-step schedules (:meth:`Trainer.set_optimizer`), resumes (:meth:`Trainer.resume`: the newest
checkpoint every rank agrees on, with the optimiser, scaler, sampler position and every rank's RNG; the recipe
loads its own networks from the returned state), starts the run's log (:meth:`Trainer.start`) and calls
:meth:`Trainer.fit` with its :class:`StepHooks`. Each step, in this order::

    lr, wd ← schedules[step] (× the group's lr_scale; no wd where apply_wd is False)
    inputs ← hooks.inputs(batch)                          outside autocast (augmentations, views)
    loss, aux ← hooks.loss(inputs, step, epoch)            inside autocast
    non-finite loss on any rank → one-line error; nothing is saved for the step
    zero_grad; scaler.scale(loss).backward(); scaler.unscale_
    hooks.before_clip(epoch); clip the global gradient norm; scaler.step; scaler.update
    hooks.after_update(step, aux)                         (EMA teacher, centres, statistics)
    log every runtime.log_every steps; hooks.epoch_end at an epoch's end; checkpoint every runtime.ckpt_every
    steps, at each epoch end and at runtime.max_steps

Exact resume: DataLoaders draw from a private per-epoch generator (creating an iterator mid-epoch must not
draw from the global RNG), the sampler resumes at its position, and the RNG states of every rank (global torch,
CUDA, the private augmentation generator) are restored, so on CPU a resumed run ends bit for bit where an
uninterrupted one does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from wearspec.data.augment import make_generator
from wearspec.data.dataset import ResumableSampler, WindowDataset
from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError
from wearspec.training.budget import Budget
from wearspec.training.progress import Progress
from wearspec.training.runtime import (AMP_DTYPES, RuntimeConfig, attention_for_autocast, cpu_autocast_warning,
                                       resolve_amp)
from wearspec.utils import distributed as du
from wearspec.utils.checkpoint import (agreed_latest_checkpoint, check_same_store, data_record, load_checkpoint,
                                       load_scaler_state, save_run_checkpoint)
from wearspec.utils.io import write_text
from wearspec.utils.logging import RunLogger
from wearspec.utils.seed import restore_rank_rng


@dataclass
class LoopSpec:
    """What a recipe trains on and for how long."""

    name: str  # "pretrain" | "teacher" | "student": messages and progress lines
    section: str  # the config section with lr / warmup_epochs / batch_size, named in the advice of errors
    out: Path  # the run (or stage) folder: config.yaml, metrics.jsonl, checkpoints/
    runtime: RuntimeConfig
    dist: du.DistInfo
    store: WindowStore
    indices: np.ndarray  # store indices of the windows trained on
    batch_size: int  # per rank
    epochs: int
    clip_grad: float  # global gradient-norm clip (0 = off)
    what: str = "windows"  # how the error for too few windows names them ("training windows")
    steps_per_epoch: int = 0  # > 0: an epoch is this many steps (a fresh shuffle each), not a full pass; 0 = a pass


def _nothing(*_: Any) -> None:
    return None


@dataclass
class StepHooks:
    """The recipe's part of a step (see the module docstring for the order)."""

    inputs: Callable[[dict], Any]  # a DataLoader batch {"x": (B, C, T), ...} → the step's inputs (no autocast)
    loss: Callable[[Any, int, int], tuple[Tensor, Any]]  # (inputs, step, epoch) → (scalar loss, aux)
    clipped: Callable[[], Iterable[nn.Parameter]]  # parameters whose gradients are clipped together
    state: Callable[[int], dict]  # step → the recipe's checkpoint entries (networks, losses, config)
    replicas: nn.Module  # the weights whose digest is compared across ranks at each checkpoint
    metrics: Callable[[int, Any], dict] = lambda step, aux: {}  # extra metrics.jsonl fields of a logged step
    before_clip: Callable[[int], None] = _nothing  # (epoch): after unscale, before the norm is taken
    after_update: Callable[[int, Any], None] = _nothing  # (step, aux): after the optimiser step
    epoch_start: Callable[[int], None] = _nothing  # (epoch): before its loader is made
    epoch_end: Callable[[int, int], None] = _nothing  # (epoch, steps done): before the epoch-end checkpoint
    stopped: Callable[[], bool] = lambda: False  # e.g. early stopping: no further epoch
    resized: Callable[[int], None] = _nothing  # (new total): the budget fixed the run's length (schedules are redone)


class Trainer:
    """One training run of a recipe: sampler, AMP, scaler, optimiser schedules, resume, loop, checkpoints."""

    def __init__(self, spec: LoopSpec):
        rt, dist = spec.runtime, spec.dist
        self.spec, self.device, self.ckpt_dir = spec, dist.device, Path(spec.out) / "checkpoints"
        self.amp = resolve_amp(rt.amp, dist.device)  # none | bf16 | fp16
        self.amp_dtype = AMP_DTYPES[self.amp]
        self.dataset = WindowDataset(spec.store, spec.indices)
        self.sampler = ResumableSampler(len(self.dataset), rank=dist.rank, world_size=dist.world_size, seed=rt.seed,
                                        drop_last=True)
        self.steps_per_epoch = self.sampler.num_samples // spec.batch_size
        if spec.steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, spec.steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise WearspecError(f"{spec.store.path}: {len(self.dataset)} {spec.what} give no full batch of "
                                f"{spec.batch_size} per rank on {dist.world_size} rank(s); lower "
                                f"{spec.section}.batch_size")
        self.nominal = spec.epochs * self.steps_per_epoch
        self._set_total(rt.budget_steps or self.nominal)
        self.budget: Budget | None = None  # a runtime.budget_min still to be measured (see fit)
        self.global_batch = spec.batch_size * dist.world_size
        # the private generator of the on-device augmentations, one stream per rank
        self.generator = make_generator(rt.seed * 1000 + dist.rank, dist.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        self.step, self.resumed_from = 0, None
        self.optimizer: torch.optim.Optimizer | None = None
        self.sched: dict[str, np.ndarray] = {}
        self.log: RunLogger | None = None
        self._config_text: Callable[[], str] = lambda: ""

    def _set_total(self, total: int) -> None:
        rt = self.spec.runtime
        self.total = int(total)
        self.stop_at = min(self.total, rt.max_steps) if rt.max_steps else self.total

    # -- set-up ----------------------------------------------------------------------------------
    def set_optimizer(self, optimizer: torch.optim.Optimizer, schedules: Callable[[], dict[str, np.ndarray]]
                      ) -> dict[str, np.ndarray]:
        """``optimizer`` over :func:`~wearspec.training.schedules.param_groups` groups; ``schedules()``: the
        recipe's per-step arrays for :attr:`total` steps, ``lr`` and ``wd`` (set on every group before each step)
        and any of its own. Returns :attr:`sched`, the dict the arrays live in: a budget that changes the total
        calls ``schedules()`` again and replaces them there, so read them through it."""
        self.optimizer, self._schedules = optimizer, schedules
        self._make_schedules()
        return self.sched

    def _make_schedules(self) -> None:
        new = self._schedules()
        bad = {k: len(v) for k, v in new.items() if len(v) != self.total}
        if bad or not {"lr", "wd"} <= set(new):
            raise WearspecError(f"{self.spec.name}: schedules {bad or sorted(new)} for {self.total} steps (lr and wd "
                                f"needed)")
        self.sched.clear()
        self.sched.update(new)

    def resume(self, check_same_run: Callable[[], None]) -> dict | None:
        """Restore the newest checkpoint that every rank agrees on (optimiser, scaler, sampler, this rank's RNG,
        step) and return it for the recipe's own entries; None for a fresh run. ``check_same_run`` (on every rank,
        first) refuses a folder that holds another experiment."""
        check_same_run()
        newest = agreed_latest_checkpoint(self.ckpt_dir, self.spec.store)
        if newest is None:
            return None
        state = load_checkpoint(newest, map_location="cpu")  # load_state_dict moves each tensor where it belongs
        check_same_store(state, self.spec.store, newest)
        self.optimizer.load_state_dict(state["optimizer"])
        load_scaler_state(self.scaler, state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        restore_rank_rng(state["rng"], self.spec.dist.rank, self.spec.dist.world_size, self.generator, newest)
        self.step, self.resumed_from = int(state["step"]), newest
        if state.get("budget") and int(state["budget"]["total"]) != self.total:  # keep the length the run chose
            self._set_total(int(state["budget"]["total"]))
            self._make_schedules()
        return state

    def start(self, config: dict, config_text: Callable[[], str], describe: str, networks: Iterable[nn.Module]
              ) -> RunLogger:
        """Open the run's log (metrics.jsonl continues at the resumed step), write ``config.yaml`` (the text
        ``config_text()``; written again when a budget fixes the run's length), drop stale
        temporary checkpoints, say what runs (``describe`` + the resumed checkpoint + the AMP mode), and set the
        attention path of ``networks`` for this autocast."""
        spec, dist, newest = self.spec, self.spec.dist, self.resumed_from
        log = self.log = RunLogger(spec.out, is_main=dist.is_main, backend=spec.runtime.logger, config=config,
                                   resume_step=self.step if newest else 0)
        self._config_text = config_text
        rt = spec.runtime
        if rt.budget_min > 0 and not rt.budget_steps and not (newest and self.total != self.nominal):
            self.budget = Budget(rt.budget_min, self.step)
            if self.total <= self.budget.decide_at:  # run at least until the step time is measured
                self._set_total(self.budget.decide_at + 1)
                self._make_schedules()
        if dist.is_main:
            write_text(Path(spec.out) / "config.yaml", config_text())
            for stale in self.ckpt_dir.glob(".ckpt-*.tmp-*"):
                stale.unlink(missing_ok=True)
            amp = f"; amp {self.amp}" + (" (auto)" if spec.runtime.amp == "auto" else "")
            log.info(describe + (f"; resumed from {newest.name} (step {self.step})" if newest else "") + amp)
            log.log(self.step, event="runtime", amp=self.amp, amp_setting=spec.runtime.amp, device=str(self.device))
            if newest:
                log.log(self.step, event="resumed", checkpoint=newest.name)
        for net in networks:
            attention_for_autocast(net, self.device.type, self.amp_dtype)
        if dist.is_main and (warning := cpu_autocast_warning(self.device.type, self.amp_dtype)):
            log.info(f"warning: {warning}")
        return log

    def autocast(self) -> torch.autocast:
        """The step's autocast context (disabled without AMP)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                              enabled=self.amp_dtype is not None)

    def loader(self, epoch: int) -> DataLoader:
        """The epoch's DataLoader over this rank's share, from the sampler's position. Its private generator:
        creating the iterator must not draw from the global RNG, or a resumed run (which creates one mid-epoch)
        would diverge from an uninterrupted one."""
        rt = self.spec.runtime
        return DataLoader(self.dataset, batch_size=self.spec.batch_size, sampler=self.sampler, drop_last=True,
                          num_workers=rt.num_workers, persistent_workers=False,
                          pin_memory=self.device.type == "cuda",  # so that .to(dev, non_blocking=True) is async
                          generator=torch.Generator().manual_seed(rt.seed + epoch))

    # -- the loop -----------------------------------------------------------------------------------
    def fit(self, hooks: StepHooks) -> int:
        """Train from the current step to ``runtime.max_steps`` or the end (or until ``hooks.stopped()``);
        returns the steps done in all."""
        spec, rt = self.spec, self.spec.runtime
        progress = Progress(spec.name, self.stop_at, self.step, self.global_batch, spec.dist.is_main, rt.progress_s)
        t0, seen = time.perf_counter(), 0
        while self.step < self.stop_at and not hooks.stopped():
            epoch = self.step // self.steps_per_epoch
            self.sampler.set_epoch(epoch)
            hooks.epoch_start(epoch)
            for batch in self.loader(epoch):
                loss, aux, grad_norm = self._step(hooks, batch, epoch)
                i, self.step = self.step, self.step + 1
                self.sampler.advance(spec.batch_size)
                seen += self.global_batch
                hooks.after_update(i, aux)
                if self.budget is not None and self.budget.pending:
                    self._fit_budget(hooks, progress)
                progress.update(self.step)
                if spec.dist.is_main and (self.step % rt.log_every == 0 or self.step == self.stop_at):
                    self.log.log(self.step, epoch=epoch, loss=loss.item(), lr=float(self.sched["lr"][i]),
                                 grad_norm=float(grad_norm), **hooks.metrics(i, aux),
                                 windows_per_s=round(seen / (time.perf_counter() - t0), 1))
                end_of_epoch = self.step % self.steps_per_epoch == 0
                if end_of_epoch:
                    hooks.epoch_end(epoch, self.step)
                    if self.budget is not None and self.budget.refine_due(self.step) and self.step < self.stop_at:
                        self._fit_budget(hooks, progress, refine=True)
                if self.step % rt.ckpt_every == 0 or end_of_epoch or self.step == self.stop_at:
                    self.save(hooks, self.step)
                if end_of_epoch or self.step >= self.stop_at:
                    break
        progress.close()
        return self.step

    def _step(self, hooks: StepHooks, batch: dict, epoch: int) -> tuple[Tensor, Any, Tensor]:
        """One optimisation step (module docstring); returns (loss, aux, gradient norm before clipping)."""
        step, opt, scaler = self.step, self.optimizer, self.scaler
        for g in opt.param_groups:  # Python floats: the optimizer state must load with weights_only
            g["lr"] = float(self.sched["lr"][step]) * float(g.get("lr_scale", 1.0))
            g["weight_decay"] = float(self.sched["wd"][step]) if g.get("apply_wd", True) else 0.0
        inputs = hooks.inputs(batch)
        with self.autocast():
            loss, aux = hooks.loss(inputs, step, epoch)
        bad = du.all_reduce_max(torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=self.device))
        if bad.item() > 0:
            s = self.spec.section
            raise WearspecError(f"{self.spec.name}: non-finite loss at step {step} (epoch {epoch}); nothing was saved "
                                f"for this step and the newest checkpoint in {self.ckpt_dir} is intact. Lower "
                                f"{s}.lr, raise {s}.warmup_epochs or use runtime.amp=none")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        hooks.before_clip(epoch)
        params = [p for p in hooks.clipped() if p.grad is not None]
        clip = self.spec.clip_grad
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip > 0 and params else torch.tensor(0.0)
        scaler.step(opt)
        scaler.update()
        return loss, aux, grad_norm

    def _fit_budget(self, hooks: StepHooks, progress: Progress, refine: bool = False) -> None:
        """At the budget's decision step (and, ``refine``, at the first epoch end after it): the slowest rank's
        time per step → the total that fits (same on every rank), the schedules redone over it, the choice
        logged and written to config.yaml."""
        step_s = self.budget.rate_since_decision(self.step) if refine else self.budget.observe(self.step)
        if step_s is None:
            return
        both = du.all_reduce_max(torch.tensor([step_s, self.budget.elapsed()], dtype=torch.float64,
                                              device=self.device))
        plan = self.budget.decide(self.step, float(both[0]), float(both[1]), self.nominal)
        self._set_total(plan.total)
        self._make_schedules()
        self.spec.runtime.budget_steps = plan.total
        progress.set_total(self.stop_at)
        hooks.resized(plan.total)
        if self.spec.dist.is_main:
            write_text(Path(self.spec.out) / "config.yaml", self._config_text())
            self.log.info(plan.describe(self.spec.name))
            self.log.log(self.step, event="budget", **vars(plan))

    def save(self, hooks: StepHooks, at: int) -> None:
        """The checkpoint of step ``at``: the recipe's entries + optimiser, scaler, sampler, data record (rank 0
        writes; every rank gives its RNG state and weight digest)."""
        spec = self.spec
        save_run_checkpoint(lambda: {
            **hooks.state(at), "step": at, "epoch": at // self.steps_per_epoch,
            "budget": vars(self.budget.plan) if self.budget is not None and self.budget.plan else
            ({"total": self.total} if self.total != self.nominal else None),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(), "data": data_record(spec.store, len(self.dataset)),
        }, self.ckpt_dir, at, spec.runtime.keep_last, hooks.replicas, self.generator, self.log)
