"""Pretraining settings derived from the store (ssl.defaults) and the collapse guard (ssl.monitor)."""

from __future__ import annotations

import math

import pytest
import torch

from wearspec.config import load_config
from wearspec.data.store import WindowStore
from wearspec.errors import WearspecError
from wearspec.ssl.defaults import (MAX_EPOCHS, MIN_EPOCHS, ROTATION_DEG, TARGET_STEPS, StoreShape,
                                   derive_pretrain_settings, epochs_for, prototypes_for)
from wearspec.ssl.monitor import CollapseError, CollapseGuard, collapse_stats
from wearspec.ssl.pretrain import PretrainConfig, run_pretrain
from wearspec.utils.logging import read_metrics

IMU6 = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
# the data shapes of the robustness matrix: (windows, samples per window, rate, channels)
SHAPES = {
    "default": StoreShape(5148, 250, 50.0, IMU6),
    "short": StoreShape(3740, 128, 50.0, IMU6),
    "acc_only": StoreShape(3740, 128, 50.0, IMU6[:3]),
    "hz100_10s": StoreShape(2000, 1000, 100.0, IMU6),
    "small_pool": StoreShape(900, 128, 50.0, IMU6),
    "audio": StoreShape(20000, 16000, 16000.0, ("audio",)),
}


def test_prototypes_follow_the_number_of_windows():
    assert prototypes_for(3740) == 256 and prototypes_for(5148) == 256
    assert prototypes_for(100) == 64  # floor
    assert prototypes_for(10**9) == 65536  # DINO's ImageNet head is the ceiling
    for n in (500, 3000, 50_000, 2_000_000):
        k = prototypes_for(n)
        assert k & (k - 1) == 0 and 0.5 <= k / (n / 16) <= 2 or k in (64, 65536)


def test_epochs_give_about_the_target_steps():
    assert epochs_for(3740, 32) == math.ceil(TARGET_STEPS / (3740 // 32))
    assert epochs_for(10_000_000, 256) == MIN_EPOCHS  # a large store: few passes
    assert epochs_for(40, 32) == MAX_EPOCHS  # a tiny one: capped


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_derived_settings_for_each_shape(name):
    shape = SHAPES[name]
    cfg = load_config(PretrainConfig, None, ["optim.batch_size=32"])
    assert cfg.augment.rotation_max_deg is None and cfg.head.out_dim is None and cfg.optim.epochs is None
    chosen = derive_pretrain_settings(cfg, shape, world_size=2)
    assert set(chosen) == {"augment.rotation_max_deg", "head.out_dim", "optim.epochs"}
    assert cfg.augment.rotation_max_deg == ROTATION_DEG and cfg.head.out_dim == prototypes_for(shape.windows)
    assert cfg.optim.epochs == epochs_for(shape.windows, 64)  # the global batch: 2 ranks × 32
    assert all(v["why"] for v in chosen.values())
    if name == "audio":
        assert "no x/y/z triads" in chosen["augment.rotation_max_deg"]["why"]


def test_given_values_are_kept():
    cfg = load_config(PretrainConfig, None, ["augment.rotation_max_deg=180", "head.out_dim=4096", "optim.epochs=7"])
    assert derive_pretrain_settings(cfg, SHAPES["short"]) == {}
    assert (cfg.augment.rotation_max_deg, cfg.head.out_dim, cfg.optim.epochs) == (180.0, 4096, 7)


def _stats(kind: str, b: int = 64, k: int = 256) -> dict:
    g = torch.Generator().manual_seed(0)
    if kind == "uniform":
        t = torch.randn(b, k, generator=g) * 1e-4
    elif kind == "dominant":
        t = torch.zeros(b, k)
        t[:, 3] = 10.0
    else:  # confident and spread: every row its own prototype
        t = torch.zeros(b, k)
        t[torch.arange(b), torch.arange(b) * 3] = 1.0
    return collapse_stats(t, torch.zeros(k), 0.04)


@pytest.mark.parametrize("kind,words", [("uniform", "~uniform"), ("dominant", "one prototype")])
def test_guard_gives_a_verdict_after_warm_up_only(kind, words):
    guard = CollapseGuard(check_from=30, window=10)
    verdicts = [guard.update(step, _stats(kind)) for step in range(1, 41)]
    assert verdicts[:29] == [None] * 29  # during warm-up every teacher may look collapsed
    assert words in verdicts[29] and "\n" not in verdicts[29]
    assert verdicts[30:] == [None] * 10  # given once


def test_guard_passes_a_healthy_teacher():
    guard = CollapseGuard(check_from=5, window=5)
    assert all(guard.update(step, _stats("healthy")) is None for step in range(1, 50))
    with pytest.raises(WearspecError):
        CollapseGuard(check_from=-1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from conftest import synthetic_store

    return synthetic_store(tmp_path_factory, "defaults", subjects=3, minutes=1.5)


TINY = ["backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "head.hidden_dim=32",
        "head.bottleneck_dim=16", "head.region=false", "optim.batch_size=16", "crops.n_local=0", "runtime.device=cpu",
        "frontend.fit_windows=64", "optim.warmup_epochs=0", "runtime.amp=none"]


def test_a_collapsed_run_stops_and_writes_no_encoder(store, tmp_path):
    out = tmp_path / "run"
    # a teacher temperature far above the logits' range: every target is ~uniform; 120 steps of batch 8, past the
    # guard's minimum of 100 (a shorter run is never judged)
    long = ["optim.batch_size=8", "optim.epochs=10", "frontend.fit_windows=32"]
    cfg = load_config(PretrainConfig, None, [f"store={store}", f"output={out}", *TINY, *long,
                                             "loss.teacher_temp=50", "loss.warmup_teacher_temp=50"])
    with pytest.raises(CollapseError) as info:
        run_pretrain(cfg)
    assert "~uniform" in str(info.value) and "teacher_temp" in str(info.value) and "\n" not in str(info.value)
    assert not (out / "teacher_encoder.safetensors").exists() and not (out / "encoder.json").exists()
    # warn: the same run goes on to the end, with the warning in its log
    cfg = load_config(PretrainConfig, None, [f"store={store}", f"output={tmp_path / 'warn'}", *TINY, *long,
                                             "loss.teacher_temp=50", "loss.warmup_teacher_temp=50",
                                             "runtime.on_collapse=warn"])
    assert run_pretrain(cfg)["finished"]
    # a run too short to judge is not stopped
    short = tmp_path / "short"
    cfg = load_config(PretrainConfig, None, [f"store={store}", f"output={short}", *TINY, "optim.epochs=2",
                                             "loss.teacher_temp=50", "loss.warmup_teacher_temp=50"])
    assert run_pretrain(cfg)["finished"]


def test_derived_settings_are_saved_resolved(store, tmp_path):
    out = tmp_path / "run"
    run_pretrain(load_config(PretrainConfig, None, [f"store={store}", f"output={out}", *TINY, "runtime.max_steps=2"]))
    saved = load_config(PretrainConfig, out / "config.yaml")
    n = len(WindowStore(store))
    assert saved.head.out_dim == prototypes_for(n) and saved.optim.epochs == epochs_for(n, 16)
    assert saved.augment.rotation_max_deg == ROTATION_DEG
    event = [r for r in read_metrics(out / "metrics.jsonl") if r.get("event") == "derived_settings"]
    assert event and event[0]["head.out_dim"] == saved.head.out_dim
    # the same command resumes: the derivation gives the same values
    run_pretrain(load_config(PretrainConfig, None, [f"store={store}", f"output={out}", *TINY, "runtime.max_steps=3"]))


def test_token_masks_hide_a_share_of_half_the_samples():
    from wearspec.ssl.masking import random_token_masks

    g = torch.Generator().manual_seed(0)
    m = random_token_masks(400, (3, 9), 0.5, g, "cpu")
    assert m.shape == (400, 3, 9) and m.dtype == torch.bool
    hidden = m.flatten(1).sum(1)
    chosen = hidden > 0
    assert 0.4 < chosen.float().mean() < 0.6  # sample_p = 0.5
    assert hidden[chosen].min() >= 2 and hidden.max() <= 13  # ratio in [0.1, 0.5] of 27 patches
    again = random_token_masks(400, (3, 9), 0.5, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(m, again)
    with pytest.raises(WearspecError):
        random_token_masks(4, (3, 9), 1.0, g, "cpu")


def test_masked_token_loss_counts_hidden_patches_only():
    from wearspec.ssl.masking import MaskedTokenLoss

    loss = MaskedTokenLoss(8, n_global=1, student_temp=0.1)
    t = torch.randn(2, 5, 8)
    s = torch.randn(2, 5, 8)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1] = mask[1, 3] = True
    probs = torch.softmax(t / 0.04, -1)
    ce = -(probs * torch.log_softmax(s / 0.1, -1)).sum(-1)
    want = (ce[0, 1] + ce[1, 3]) / 2
    assert torch.allclose(loss([s], [t], [mask], 0.04), want)
    s2 = s.clone()
    s2[0, 0] += 5.0  # a visible patch does not count
    assert torch.allclose(loss([s2], [t], [mask], 0.04), want)


def test_masked_forward_changes_only_through_the_mask_token():
    from wearspec.models.backbones import BackboneConfig, build_backbone

    torch.manual_seed(0)
    bb = build_backbone(BackboneConfig(name="vit_tiny_cpu", embed_dim=32, depth=2, num_heads=2), 6, (9, 33)).eval()
    x = torch.randn(2, 6, 9, 33)
    grid = bb.token_grid((9, 33))
    none = torch.zeros(2, *grid, dtype=torch.bool)
    token = torch.zeros(32)
    plain, masked = bb(x), bb.forward_masked(x, none, token)
    assert torch.allclose(plain.tokens, masked.tokens, atol=1e-6) and masked.grid == plain.grid
    some = none.clone()
    some[0, 1, 2] = True
    out = bb.forward_masked(x, some, token)
    assert not torch.allclose(out.tokens[0], plain.tokens[0]) and torch.allclose(out.tokens[1], plain.tokens[1],
                                                                                    atol=1e-6)
