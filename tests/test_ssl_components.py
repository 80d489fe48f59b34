"""EsViT/DINO components: heads, losses (against plain per-pair / per-token loops), centering (also across
2 gloo processes), schedules, parameter groups, EMA, multi-crop and the collapse monitor."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from wearspec.errors import WearspecError
from wearspec.ssl.heads import DINOHead, cancel_last_layer_gradients, last_layer_parameters
from wearspec.ssl.losses import DINOLoss, RegionLoss, esvit_loss, koleo_loss, sinkhorn_knopp
from wearspec.ssl.monitor import CollapseMonitor, collapse_stats
from wearspec.ssl.multicrop import MultiCrop, MultiCropConfig
from wearspec.training.schedules import (cosine_schedule, ema_update, lr_schedule, momentum_schedule,
                                         param_groups, teacher_temperature_schedule, wd_schedule)

K = 16


# -- Losses against plain loops -------------------------------------------------------------------
def naive_view_loss(student, teacher, center, teacher_temp, student_temp=0.1):
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if i == j:
                continue
            pair = 0.0
            for b in range(t.shape[0]):
                q = torch.softmax((t[b].double() - center[0].double()) / teacher_temp, dim=0)
                logp = torch.log_softmax(s[b].double() / student_temp, dim=0)
                pair += float(-(q * logp).sum())
            total += pair / t.shape[0]
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("n_local", [0, 3])
def test_view_loss_matches_per_pair_loop(n_local):
    g = torch.Generator().manual_seed(n_local)
    b = 5
    student = [torch.randn(b, K, generator=g) for _ in range(2 + n_local)]
    teacher = [torch.randn(b, K, generator=g) for _ in range(2)]
    loss_fn = DINOLoss(K, n_global=2)
    loss_fn.center.copy_(0.3 * torch.randn(1, K, generator=g))
    got = loss_fn(student, teacher, teacher_temp=0.07)
    assert got.shape == () and got.dtype == torch.float32
    assert float(got) == pytest.approx(naive_view_loss(student, teacher, loss_fn.center, 0.07), rel=1e-5)


def test_view_loss_gradients_only_reach_the_student():
    g = torch.Generator().manual_seed(1)
    student = [torch.randn(4, K, generator=g, requires_grad=True) for _ in range(4)]
    teacher = [torch.randn(4, K, generator=g, requires_grad=True) for _ in range(2)]
    DINOLoss(K)(student, teacher, 0.04).backward()
    assert all(s.grad is not None for s in student) and all(t.grad is None for t in teacher)


def test_losses_stay_float32_under_autocast():
    g = torch.Generator().manual_seed(4)
    student = [torch.randn(4, K, generator=g) for _ in range(3)]
    teacher = [torch.randn(4, K, generator=g) for _ in range(2)]
    feats = [torch.randn(4, 5, 8, generator=g) for _ in range(3)]
    dense = [torch.randn(4, 5, K, generator=g) for _ in range(3)]
    view, region = DINOLoss(K), RegionLoss(K)
    want = (view(student, teacher, 0.04), region(feats, dense, feats[:2], dense[:2], 0.04))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = (view(student, teacher, 0.04), region(feats, dense, feats[:2], dense[:2], 0.04))
    for a, b in zip(got, want):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_view_loss_rejects_bad_views():
    with pytest.raises(WearspecError):
        DINOLoss(K, n_global=2)([torch.randn(2, K)] * 3, [torch.randn(2, K)], 0.04)
    with pytest.raises(WearspecError):
        DINOLoss(K, n_global=1)([torch.randn(2, K)], [torch.randn(2, K)], 0.04)


def naive_region_loss(s_feats, s_dense, t_feats, t_dense, center, teacher_temp, student_temp=0.1):
    total, pairs = 0.0, 0
    for i in range(len(t_dense)):
        for j in range(len(s_dense)):
            if i == j:
                continue
            pair, count = 0.0, 0
            for b in range(s_dense[j].shape[0]):
                for a in range(s_dense[j].shape[1]):
                    sims = [float(F.cosine_similarity(s_feats[j][b, a].double(), t_feats[i][b, c].double(), dim=0))
                            for c in range(t_feats[i].shape[1])]
                    m = int(np.argmax(sims))
                    q = torch.softmax((t_dense[i][b, m].double() - center[0].double()) / teacher_temp, dim=0)
                    logp = torch.log_softmax(s_dense[j][b, a].detach().double() / student_temp, dim=0)
                    pair += float(-(q * logp).sum())
                    count += 1
            total += pair / count
            pairs += 1
    return total / pairs


def test_region_loss_matches_per_token_loop():
    g = torch.Generator().manual_seed(2)
    b, dt = 3, 8
    s_tokens = [12, 10, 4, 6]  # two globals with different grids, two locals
    t_tokens = s_tokens[:2]
    s_feats = [torch.randn(b, n, dt, generator=g) for n in s_tokens]
    s_dense = [torch.randn(b, n, K, generator=g, requires_grad=True) for n in s_tokens]
    t_feats = [torch.randn(b, n, dt, generator=g) for n in t_tokens]
    t_dense = [torch.randn(b, n, K, generator=g) for n in t_tokens]
    loss_fn = RegionLoss(K, n_global=2)
    loss_fn.center.copy_(0.3 * torch.randn(1, K, generator=g))
    got = loss_fn(s_feats, s_dense, t_feats, t_dense, teacher_temp=0.05)
    want = naive_region_loss(s_feats, s_dense, t_feats, t_dense, loss_fn.center, 0.05)
    assert float(got.detach()) == pytest.approx(want, rel=1e-5)
    got.backward()
    assert all(d.grad is not None for d in s_dense)
    with pytest.raises(WearspecError):
        loss_fn(s_feats, s_dense, t_feats, [t_dense[0], t_dense[1][:, :, :-1]], 0.05)


def test_esvit_combination():
    v, r = torch.tensor(2.0), torch.tensor(4.0)
    assert float(esvit_loss(v, r)) == pytest.approx(3.0)
    assert float(esvit_loss(v, r, view_weight=1.0, region_weight=0.25)) == pytest.approx(3.0)
    assert esvit_loss(v, None) is v


# -- Centering ------------------------------------------------------------------------------------
def test_update_center_is_the_ema_of_the_batch_mean():
    g = torch.Generator().manual_seed(3)
    loss_fn = DINOLoss(K, center_momentum=0.9)
    start = torch.randn(1, K, generator=g)
    loss_fn.center.copy_(start)
    teacher = [torch.randn(4, K, generator=g) for _ in range(2)]
    loss_fn.update_center(teacher)
    torch.testing.assert_close(loss_fn.center, 0.9 * start + 0.1 * torch.cat(teacher).mean(0, keepdim=True))
    region = RegionLoss(K, center_momentum=0.8)
    dense = [torch.randn(4, 6, K, generator=g), torch.randn(4, 9, K, generator=g)]
    region.update_center(dense)
    want = 0.2 * torch.cat([d.reshape(-1, K) for d in dense]).mean(0, keepdim=True)
    torch.testing.assert_close(region.center, want)
    assert "center" in loss_fn.state_dict() and "center" in region.state_dict()


def _rank_data(rank):
    g = torch.Generator().manual_seed(100 + rank)
    teacher = [torch.randn(3 + rank, K, generator=g) for _ in range(2)]  # unequal batches per rank
    dense = [torch.randn(2 + rank, 5 + v, K, generator=g) for v in range(2)]
    return teacher, dense


def _dist_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        teacher, dense = _rank_data(rank)
        view, region = DINOLoss(K, center_momentum=0.9), RegionLoss(K, center_momentum=0.7)
        view.center.fill_(0.5)
        view.update_center(teacher)
        region.update_center(dense)
        torch.save({"view": view.center, "region": region.center}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_update_center_all_reduces_across_two_processes(tmp_path):
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    data = [_rank_data(r) for r in range(2)]
    rows = torch.cat([t for teacher, _ in data for t in teacher])
    tokens = torch.cat([d.reshape(-1, K) for _, dense in data for d in dense])
    want_view = 0.9 * 0.5 + 0.1 * rows.mean(0, keepdim=True)
    want_region = 0.3 * tokens.mean(0, keepdim=True)
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        torch.testing.assert_close(got["view"], want_view)
        torch.testing.assert_close(got["region"], want_region)


# -- Sinkhorn-Knopp targets and KoLeo ------------------------------------------------------------
def naive_sinkhorn(logits, temp, iters):
    q = torch.exp(logits.double() / temp).t()
    q /= q.sum()
    k, n = q.shape
    for _ in range(iters):
        q /= q.sum(1, keepdim=True) * k
        q /= q.sum(0, keepdim=True) * n
    return (q * n).t()


def test_sinkhorn_matches_the_plain_iteration_and_equipartitions():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(12, K, generator=g)
    got = sinkhorn_knopp(logits, 0.5, n_iters=3)
    assert got.shape == (12, K) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), naive_sinkhorn(logits, 0.5, 3), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got.sum(1), torch.ones(12))  # each row a distribution
    many = sinkhorn_knopp(logits, 0.5, n_iters=200)  # converged: every prototype gets mass N/K
    torch.testing.assert_close(many.sum(0), torch.full((K,), 12 / K), rtol=1e-3, atol=1e-4)
    # stable for sharp temperatures (no overflow), no gradient
    sharp = sinkhorn_knopp(logits.requires_grad_(True), 0.01)
    assert torch.isfinite(sharp).all() and not sharp.requires_grad
    with pytest.raises(WearspecError):
        sinkhorn_knopp(logits, 0.0)


def test_view_loss_with_sinkhorn_targets_matches_per_pair_loop():
    g = torch.Generator().manual_seed(6)
    b = 5
    student = [torch.randn(b, K, generator=g) for _ in range(4)]
    teacher = [torch.randn(b, K, generator=g) for _ in range(2)]
    loss_fn = DINOLoss(K, n_global=2, centering="sinkhorn", sinkhorn_iters=3)
    loss_fn.center.copy_(torch.randn(1, K, generator=g))  # not used by the sinkhorn targets
    q = naive_sinkhorn(torch.cat(teacher), 0.07, 3).view(2, b, K)
    want, pairs = 0.0, 0
    for i in range(2):
        for j, s in enumerate(student):
            if i != j:
                want += float(-(q[i] * torch.log_softmax(s.double() / 0.1, dim=1)).sum(1).mean())
                pairs += 1
    assert float(loss_fn(student, teacher, 0.07)) == pytest.approx(want / pairs, rel=1e-5)
    with pytest.raises(WearspecError):
        DINOLoss(K, centering="median")


def _sinkhorn_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logits = torch.randn(3 + rank, K, generator=torch.Generator().manual_seed(200 + rank))
        torch.save(sinkhorn_knopp(logits, 0.3, 4), os.path.join(out_dir, f"sk{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sinkhorn_equipartitions_the_global_batch_across_two_processes(tmp_path):
    mp.spawn(_sinkhorn_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    rows = [torch.randn(3 + r, K, generator=torch.Generator().manual_seed(200 + r)) for r in range(2)]
    want = naive_sinkhorn(torch.cat(rows), 0.3, 4)
    got = torch.cat([torch.load(tmp_path / f"sk{r}.pt", weights_only=True) for r in range(2)])
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


def test_koleo_is_the_mean_negative_log_nearest_neighbour_distance():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 5, generator=g, requires_grad=True)
    got = koleo_loss(x)
    z = F.normalize(x.detach().double(), dim=1)
    d = torch.cdist(z, z) + torch.eye(6, dtype=torch.float64) * 10
    assert got.item() == pytest.approx(float(-torch.log(d.min(1).values + 1e-8).mean()), rel=1e-5)
    got.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # spreading the batch lowers it: orthogonal rows beat near-duplicates
    spread = koleo_loss(torch.eye(4))
    tight = koleo_loss(torch.ones(4, 4) + 0.01 * torch.randn(4, 4, generator=g))
    assert float(spread) < float(tight)
    with pytest.raises(WearspecError):
        koleo_loss(torch.randn(1, 4))


# -- Head -----------------------------------------------------------------------------------------
def test_dino_head_shapes_and_fixed_gain():
    head = DINOHead(12, K, hidden_dim=32, bottleneck_dim=8)
    assert head(torch.randn(5, 12)).shape == (5, K)
    assert head(torch.randn(5, 7, 12)).shape == (5, 7, K)
    gain = head.last_layer.parametrizations.weight.original0
    assert not gain.requires_grad and torch.equal(gain, torch.ones_like(gain))
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(K))
    assert head(torch.randn(5, 12)).abs().max() <= 1 + 1e-5  # cosine logits
    free = DINOHead(12, K, hidden_dim=32, bottleneck_dim=8, norm_last_layer=False)
    free_gain = free.last_layer.parametrizations.weight.original0
    # trainable, but starting at 1 as in DINO (weight_norm alone would start at the rows' norms, ≈ 0.02·√8)
    assert free_gain.requires_grad and torch.equal(free_gain.detach(), torch.ones_like(free_gain))
    assert free(torch.randn(5, 12)).abs().max() <= 1 + 1e-5
    assert len([m for m in DINOHead(12, K, nlayers=1).mlp if isinstance(m, nn.Linear)]) == 1


def test_dino_head_copy_state_dict_and_ema(tmp_path):
    student = DINOHead(12, K, hidden_dim=32, bottleneck_dim=8)
    teacher = copy.deepcopy(student)
    assert [n for n, _ in student.named_parameters()] == [n for n, _ in teacher.named_parameters()]
    with torch.no_grad():
        for p in student.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 12)
    assert not torch.allclose(student(x), teacher(x))
    torch.save(student.state_dict(), tmp_path / "head.pt")
    teacher.load_state_dict(torch.load(tmp_path / "head.pt", weights_only=True))
    torch.testing.assert_close(teacher(x), student(x))
    ema_update(teacher, student, 0.5)
    gain = teacher.last_layer.parametrizations.weight.original0
    assert torch.equal(gain, torch.ones_like(gain))


def test_cancel_last_layer_gradients():
    model = nn.ModuleDict({"view": DINOHead(12, K, hidden_dim=32, bottleneck_dim=8),
                           "dense": DINOHead(12, K, hidden_dim=32, bottleneck_dim=8)})
    last = {id(p) for p in last_layer_parameters(model)}
    assert len(last) == 4
    for epoch, cancelled in ((0, True), (1, False)):
        model.zero_grad(set_to_none=True)
        (model["view"](torch.randn(4, 12)).sum() + model["dense"](torch.randn(4, 3, 12)).sum()).backward()
        assert cancel_last_layer_gradients(model, epoch, freeze_epochs=1) is cancelled
        for p in model.parameters():
            if p.requires_grad:
                assert (p.grad is None) == (cancelled and id(p) in last)


# -- Schedules, parameter groups, EMA -------------------------------------------------------------
def test_cosine_schedule_warmup_and_endpoints():
    s = cosine_schedule(1.0, 0.1, 100, warmup_steps=10, warmup_start=0.2)
    assert s.shape == (100,)
    np.testing.assert_allclose(s[:10], np.linspace(0.2, 1.0, 10))
    assert s[10] == pytest.approx(1.0) and np.all(np.diff(s[10:]) < 0)
    t = np.arange(90)
    np.testing.assert_allclose(s[10:], 0.1 + 0.45 * (1 + np.cos(np.pi * t / 90)))
    assert 0.1 < s[-1] < 0.1 + 0.9 * np.pi ** 2 / (4 * 90 ** 2) + 1e-12
    assert cosine_schedule(1.0, 0.0, 5, warmup_steps=5).tolist() == pytest.approx(np.linspace(0, 1, 5).tolist())
    with pytest.raises(WearspecError):
        cosine_schedule(1.0, 0.0, 5, warmup_steps=6)


def test_lr_wd_momentum_and_temperature_schedules():
    lr = lr_schedule(5e-4, global_batch=512, total_steps=200, warmup_steps=20, min_lr=1e-6)
    assert lr[0] == 0.0 and lr[19] == pytest.approx(1e-3) and lr.max() == pytest.approx(1e-3)
    assert lr[-1] == pytest.approx(1e-6, abs=1e-7)
    wd = wd_schedule(100)
    assert wd[0] == pytest.approx(0.04) and wd[-1] == pytest.approx(0.4, abs=1e-3) and np.all(np.diff(wd) > 0)
    m = momentum_schedule(1000)
    assert m[0] == pytest.approx(0.996) and 0.99999 < m[-1] <= 1.0 and len(m) == 1000
    temps = teacher_temperature_schedule(0.04, 0.07, warmup_epochs=3, total_epochs=10, steps_per_epoch=4)
    assert temps.shape == (40,)
    np.testing.assert_allclose(temps[:12], np.linspace(0.04, 0.07, 12))
    assert np.all(temps[12:] == 0.07)
    short = teacher_temperature_schedule(0.04, 0.07, warmup_epochs=30, total_epochs=2, steps_per_epoch=3)
    assert short.shape == (6,) and short[-1] < 0.07


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.blocks = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8))
        self.head = DINOHead(8, K, hidden_dim=16, bottleneck_dim=4)
        self.register_buffer("stats", torch.zeros(3))


def test_param_groups_cover_each_parameter_once():
    model = _Tiny()
    groups = param_groups(model, 0.04, no_decay_names={"pos_embed", "cls_token"})
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    by_name = {n: g["apply_wd"] for g in groups for n in g["param_names"]}
    no_wd = {n for n, wd in by_name.items() if not wd}
    assert {"pos_embed", "cls_token", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias"} <= no_wd
    assert not any(n.endswith("weight") and ("blocks.0" in n or "blocks.2" in n) for n in no_wd)
    assert by_name["head.last_layer.parametrizations.weight.original1"]
    assert "head.last_layer.parametrizations.weight.original0" not in by_name  # frozen gain
    assert all(g["weight_decay"] == (0.04 if g["apply_wd"] else 0.0) for g in groups)
    torch.optim.AdamW(groups, lr=1e-3)
    layered = param_groups(model, 0.05, layer_decay=0.5,
                           layer_id_fn=lambda n: 0 if not n.startswith(("blocks", "head")) else
                           (int(n.split(".")[1]) + 1 if n.startswith("blocks") else 4))
    scales = {n: g["lr_scale"] for g in layered for n in g["param_names"]}
    assert scales["pos_embed"] == 0.5 ** 4 and scales["blocks.2.weight"] == 0.5 and scales["head.mlp.0.weight"] == 1


def test_ema_update_formula():
    torch.manual_seed(0)
    student, teacher = _Tiny(), _Tiny()
    student.stats.fill_(7.0)
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    ema_update(teacher, student, 0.9)
    for n, p in teacher.named_parameters():
        torch.testing.assert_close(p, 0.9 * before[n] + 0.1 * dict(student.named_parameters())[n])
    assert torch.equal(teacher.stats, student.stats)
    with pytest.raises(WearspecError):
        ema_update(nn.Linear(2, 2), nn.Linear(2, 2, bias=False), 0.9)


# -- Multi-crop -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(17, 32), (33, 16)])
@pytest.mark.parametrize("n_local", [0, 4])
@pytest.mark.parametrize("freq_crop", [False, True])
def test_multicrop_shapes_and_boxes(size, n_local, freq_crop):
    f, n = size
    cfg = MultiCropConfig(n_local=n_local, freq_crop=freq_crop)
    mc = MultiCrop(cfg, input_size=size)
    spec = torch.randn(5, 3, f, n)
    views, boxes = mc(spec, torch.Generator().manual_seed(0), return_boxes=True)
    assert len(views) == len(boxes) == 2 + n_local
    assert [tuple(v.shape) for v in views] == [(5, 3, f, n)] * 2 + [(5, 3, f, round(n * 0.3))] * n_local
    for v, bx in enumerate(boxes):
        scale = cfg.global_scale if v < 2 else cfg.local_scale
        fscale = (cfg.global_freq_scale if v < 2 else cfg.local_freq_scale) if freq_crop else [1.0, 1.0]
        assert bx.shape == (5, 4)
        assert torch.all(bx[:, 0] >= 0) and torch.all(bx[:, 1] <= f) and torch.all(bx[:, 2] >= 0)
        assert torch.all(bx[:, 3] <= n)
        tw, fw = (bx[:, 3] - bx[:, 2]) / n, (bx[:, 1] - bx[:, 0]) / f
        assert torch.all(tw >= scale[0] - 1e-5) and torch.all(tw <= scale[1] + 1e-5)
        assert torch.all(fw >= fscale[0] - 1e-5) and torch.all(fw <= fscale[1] + 1e-5)
    assert len(torch.unique(boxes[-1][:, 2])) == 5  # each sample its own crop


def test_multicrop_is_deterministic_per_seed():
    mc = MultiCrop(MultiCropConfig(n_local=2, freq_crop=True), input_size=(17, 32))
    spec = torch.randn(4, 2, 17, 32)
    a = mc(spec, torch.Generator().manual_seed(5))
    b = mc(spec, torch.Generator().manual_seed(5))
    c = mc(spec, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_multicrop_full_extent_is_identity_and_integer_box_is_a_slice():
    for size in ((17, 32), (33, 16)):
        cfg = MultiCropConfig(n_local=0, global_scale=[1.0, 1.0], freq_crop=True, global_freq_scale=[1.0, 1.0])
        mc = MultiCrop(cfg, input_size=size)
        spec = torch.randn(3, 2, *size)
        for view in mc(spec, torch.Generator().manual_seed(0)):
            assert torch.equal(view, spec)
        box = torch.tensor([[2.0, 9.0, 3.0, 11.0]]).expand(3, 4)
        assert torch.equal(mc.crop(spec, box, (7, 8)), spec[:, :, 2:9, 3:11])


def test_multicrop_resampling_equals_grid_sample():
    f, n = 9, 13
    spec = torch.randn(2, 3, f, n, dtype=torch.float64)
    boxes = torch.tensor([[1.3, 7.9, 2.2, 11.7], [0.0, 9.0, 0.4, 5.1]], dtype=torch.float64)
    fo, no = 5, 7

    def norm(lo, hi, n_out, length):  # output bin centres → grid_sample coordinates (align_corners=False)
        return 2 * (lo[:, None] + (hi - lo)[:, None] * (torch.arange(n_out, dtype=torch.float64) + 0.5) / n_out) \
            / length - 1
    gy, gx = norm(boxes[:, 0], boxes[:, 1], fo, f), norm(boxes[:, 2], boxes[:, 3], no, n)
    grid = torch.stack([gx[:, None, :].expand(2, fo, no), gy[:, :, None].expand(2, fo, no)], dim=-1)
    want = F.grid_sample(spec, grid, mode="bilinear", padding_mode="border", align_corners=False)
    got = MultiCrop(MultiCropConfig(), (f, n)).crop(spec, boxes, (fo, no))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_multicrop_config_sizes_and_validation():
    mc = MultiCrop(MultiCropConfig(global_size=[16, 24], local_size=[8, 8], n_local=1), input_size=(33, 40))
    assert [tuple(v.shape[2:]) for v in mc(torch.randn(2, 1, 33, 40))] == [(16, 24), (16, 24), (8, 8)]
    assert MultiCrop(MultiCropConfig(), (17, 32), size_multiple=4).local_size == (17, 8)
    for bad in (dict(n_global=0), dict(n_global=1, n_local=0), dict(local_scale=[0.5, 0.2]),
                dict(global_size=[3]), dict(global_scale=[0.0, 1.0])):
        with pytest.raises(WearspecError):
            MultiCropConfig(**bad).validate()
    with pytest.raises(WearspecError):
        mc(torch.randn(2, 1, 40, 33))


# -- Collapse monitor -----------------------------------------------------------------------------
def _run_monitor(batches, temp=0.04):
    monitor = CollapseMonitor(patience=5, cooldown=100)
    center = torch.zeros(1, 64)
    return [monitor.update(collapse_stats(t, center, temp)) for t in batches]


def test_collapse_monitor_flags_uniform_and_dominant_collapse():
    uniform = _run_monitor([torch.zeros(32, 64) + 1e-3 * torch.randn(32, 64) for _ in range(20)])
    assert uniform[4] is not None and "uniform" in uniform[4] and all(m is None for m in uniform[:4] + uniform[5:])
    one_hot = torch.zeros(32, 64)
    one_hot[:, 7] = 5.0
    dominant = _run_monitor([one_hot] * 8)
    assert dominant[4] is not None and "dominates" in dominant[4]
    stats = collapse_stats(one_hot, torch.zeros(1, 64), 0.04)
    assert stats["top_fraction"] == 1.0 and stats["entropy"] < 1e-3
    assert stats["used"] == 1 and stats["used_fraction"] == pytest.approx(1 / 32)
    assert stats["kl_uniform"] == pytest.approx(math.log(64), abs=1e-3)


def test_collapse_monitor_quiet_on_healthy_outputs():
    g = torch.Generator().manual_seed(0)
    msgs = _run_monitor([torch.randn(32, 64, generator=g) for _ in range(30)])
    assert all(m is None for m in msgs)
    stats = collapse_stats(torch.randn(32, 64, generator=g), torch.zeros(64), 0.04)
    assert 0 <= stats["entropy_norm"] < 0.5 and stats["mean_entropy_norm"] > 0.7 and stats["kl_center"] > 0
    assert collapse_stats(torch.randn(2, 5, 64), torch.zeros(1, 64), 0.1)["top_fraction"] <= 1
    spread = torch.eye(8) * 5.0  # 8 rows, each on its own dimension of K = 8; then 16 rows on those 8
    assert collapse_stats(spread, torch.zeros(8), 0.1)["used_fraction"] == 1.0
    two_each = collapse_stats(torch.cat([spread, spread]), torch.zeros(8), 0.1)
    assert two_each["used"] == 8 and two_each["used_fraction"] == 1.0 and two_each["top_fraction"] == 2 / 16
