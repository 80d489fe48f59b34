"""Time budgets: the sizing rule on a fake clock, a pretraining run sized to its budget (schedules over the chosen
length, config.yaml and checkpoints record it), and a resume that keeps the chosen length bitwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

import wearspec.training.budget as budget_module
from conftest import synthetic_store
from wearspec.config import load_config
from wearspec.errors import WearspecError
from wearspec.ssl.pretrain import PretrainConfig, run_pretrain
from wearspec.training.budget import MARGIN, MEASURED_STEPS, WARMUP_STEPS, Budget
from wearspec.training.harness import Trainer
from wearspec.training.runtime import RuntimeConfig
from wearspec.utils.checkpoint import list_checkpoints, load_checkpoint
from wearspec.utils.logging import read_metrics

TINY = [
    "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "head.out_dim=64",
    "head.hidden_dim=32", "head.bottleneck_dim=16", "optim.batch_size=16", "crops.n_local=0",
    "frontend.fit_windows=64", "runtime.device=cpu", "optim.epochs=2", "runtime.ckpt_every=100",
    "optim.warmup_epochs=1",
]
STEP_S = 0.5  # the fake clock's seconds per training step


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_total_fills_what_is_left_of_the_budget():
    clock = FakeClock()
    b = Budget(2.0, start_step=0, clock=clock)
    clock.t += 20.0  # set-up before the first step
    got = None
    for step in range(1, WARMUP_STEPS + MEASURED_STEPS + 1):
        clock.t += 3.0 if step <= WARMUP_STEPS else STEP_S  # slow first steps are not measured
        got = b.observe(step)
        assert (got is None) == (step < b.decide_at)
    assert got == pytest.approx(STEP_S)
    plan = b.decide(b.decide_at, got, b.elapsed(), nominal=40)
    spent = 20.0 + 3.0 * WARMUP_STEPS + STEP_S * MEASURED_STEPS
    assert plan.total == b.decide_at + int((120.0 * (1 - MARGIN) - spent) // STEP_S)
    assert plan.elapsed_s == pytest.approx(spent) and plan.nominal == 40 and not b.pending
    # a budget already spent still finishes the step it is in, and one more
    late = Budget(0.1, clock=clock)
    assert late.decide(12, STEP_S, 600.0, 40).total == 13
    with pytest.raises(ValueError):
        Budget(0.0)
    with pytest.raises(WearspecError, match="runtime.budget_min"):
        RuntimeConfig(budget_min=-1).validate()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory, "budget")


@pytest.fixture
def fake_steps(monkeypatch):
    """Every training step takes STEP_S seconds on the budget's clock (and nothing else does)."""
    clock = FakeClock()
    monkeypatch.setattr(budget_module, "now", clock)
    real = Trainer._step

    def timed(self, *a, **k):
        out = real(self, *a, **k)
        clock.t += STEP_S
        return out

    monkeypatch.setattr(Trainer, "_step", timed)
    return clock


def _cfg(store, out, *extra):
    return load_config(PretrainConfig, None, [f"store={store}", f"output={out}", *TINY, *extra])


def test_pretraining_sizes_its_schedule_to_the_budget_and_resume_keeps_it(store, tmp_path, fake_steps):
    a = tmp_path / "a"
    summary = run_pretrain(_cfg(store, a, "runtime.budget_min=0.5"))
    decide = WARMUP_STEPS + MEASURED_STEPS
    want = decide + int((30.0 * (1 - MARGIN) - decide * STEP_S) // STEP_S)
    assert summary["finished"] and summary["steps"] == summary["total_steps"] == want
    assert yaml.safe_load((a / "config.yaml").read_text())["runtime"]["budget_steps"] == want
    recs = read_metrics(a / "metrics.jsonl")
    event = [r for r in recs if r.get("event") == "budget"]
    # chosen after the measured steps, refined at the first epoch end after that (the same here: the fake clock
    # gives epoch ends no cost)
    assert [(e["refined"], e["total"]) for e in event] == [(False, want), (True, want)]
    assert event[0]["step_s"] == pytest.approx(STEP_S) and event[1]["step_s"] == pytest.approx(STEP_S)
    lrs = np.array([r["lr"] for r in recs if "loss" in r])
    # from the decision on, one cosine over the chosen length (the warm-up, in epochs, was over), ending near min_lr
    assert len(lrs) == want and (np.diff(lrs[decide:]) <= 1e-12).all() and lrs[-1] < 0.05 * lrs[decide]
    momentum = [r["momentum"] for r in recs if "loss" in r]
    assert momentum[-1] > 0.9999 and momentum[decide] < momentum[-1]
    state = load_checkpoint(list_checkpoints(a / "checkpoints")[-1])
    assert state["budget"]["total"] == want and state["step"] == want

    # interrupted after the decision, resumed with another budget: the chosen length and the weights stay
    b = tmp_path / "b"
    first = run_pretrain(_cfg(store, b, "runtime.budget_min=0.5", f"runtime.max_steps={decide + 5}"))
    assert first["steps"] == decide + 5 and not first["finished"]
    resumed = run_pretrain(_cfg(store, b, "runtime.budget_min=5"))
    assert resumed["steps"] == resumed["total_steps"] == want
    sa, sb = (load_checkpoint(list_checkpoints(r / "checkpoints")[-1]) for r in (a, b))
    for k in sa["teacher_net"]:
        assert torch.equal(sa["teacher_net"][k], sb["teacher_net"][k]), k

    # the saved config.yaml runs the same length again without measuring
    c = tmp_path / "c"
    again = run_pretrain(load_config(PretrainConfig, a / "config.yaml", [f"output={c}", "runtime.budget_min=0"]))
    assert again["total_steps"] == want
    assert not [r for r in read_metrics(c / "metrics.jsonl") if r.get("event") == "budget"]


def test_the_refinement_counts_what_epoch_ends_cost():
    clock = FakeClock()
    b = Budget(1.0, clock=clock)
    for step in range(1, b.decide_at + 1):
        clock.t += STEP_S
        step_s = b.observe(step)
    first = b.decide(b.decide_at, step_s, b.elapsed(), nominal=100)
    assert not b.refine_due(b.decide_at) and b.refine_due(b.decide_at + 1)
    for step in range(b.decide_at + 1, 21):  # 8 more steps, then an epoch end that costs 4 s (validation)
        clock.t += STEP_S
    clock.t += 4.0
    rate = b.rate_since_decision(20)
    assert rate == pytest.approx(STEP_S + 4.0 / 8)
    second = b.decide(20, rate, b.elapsed(), nominal=100)
    assert second.refined and second.total < first.total and not b.refine_due(25)
    assert second.total == 20 + int((60 * (1 - MARGIN) - b.elapsed()) // rate)


def test_the_demo_shares_its_budget_among_the_steps_left(tmp_path):
    from wearspec.demo.recipe import BUDGET_SHARES, DemoConfig, finetune_config, pretrain_config, step_budget_min

    assert sum(BUDGET_SHARES.values()) == pytest.approx(1.0)
    cfg = DemoConfig(budget_min=20.0, store=str(tmp_path / "store"))
    data = {"data": {"seconds": 30.0, "test_subjects": ["a"], "val_subjects": ["b"]}}
    # the data step took 0.5 min: pretraining gets its share of the 19.5 left among itself and the steps after
    want = 19.5 * BUDGET_SHARES["pretrain"] / (1.0 - BUDGET_SHARES["data"])
    assert step_budget_min(cfg, "pretrain", data) == pytest.approx(want)
    assert pretrain_config(cfg, tmp_path, data).runtime.budget_min == pytest.approx(want, abs=1e-3)
    # pretraining ran long (15 min): fine-tuning gets its part of what is left, per stage
    done = {**data, "pretrain": {"seconds": 900.0}, "probe": {"seconds": 60.0}}
    left = 20.0 - 16.5
    rest = sum(BUDGET_SHARES[s] for s in ("finetune", "export", "stream", "engine", "report"))
    f = finetune_config(cfg, tmp_path, done)
    assert f.runtime.budget_min == pytest.approx(left * BUDGET_SHARES["finetune"] / rest / len(f.stages), abs=1e-3)
    assert step_budget_min(DemoConfig(), "pretrain", data) == 0.0
    with pytest.raises(WearspecError, match="budget_min"):
        DemoConfig(budget_min=-1.0).validate()
