"""Fine-tuning models: CNN teacher, SepTr, students with distillation tokens (ViT/Swin/SepTr/CNN), SPT/LSA,
the frozen teacher stem, and initialisation from a pretraining checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from wearspec.config import from_dict
from wearspec.data.frontend import SpectrogramFrontend
from wearspec.errors import WearspecError
from wearspec.models.backbones import BackboneConfig, build_backbone
from wearspec.models.cnn import CNNConfig, ResNetTeacher, build_teacher
from wearspec.models.encoder import SpectrogramEncoder
from wearspec.models.septr import SepTr, SepTrConfig
from wearspec.models.students import (LocalitySelfAttention, ShiftedPatchTokenization, StudentConfig, build_student,
                                      init_from_pretrain)

C, K = 3, 5
SIZES = [(17, 32), (33, 16)]
VIT = dict(name="vit_tiny_cpu", embed_dim=32, depth=2, num_heads=2)
SWIN = dict(name="swin_tiny_cpu", embed_dim=16, depth=1, num_heads=1)
SEPTR = dict(embed_dim=32, depth=2, num_heads=2)
CONFIGS = {
    "vit": dict(arch="vit", backbone=VIT),
    "vit_spt_lsa": dict(arch="vit", backbone=VIT, spt=True, lsa=True),
    "vit_stem": dict(arch="vit", backbone=VIT, teacher_stem=True),
    "swin": dict(arch="swin", backbone=SWIN),
    "septr": dict(arch="septr", septr=SEPTR),
    "septr_patch": dict(arch="septr", septr={**SEPTR, "patch_size": [2, 3], "order": "freq_first"}),
    "septr_stem": dict(arch="septr", septr=SEPTR, teacher_stem=True),
    "septr_stem_patch": dict(arch="septr", septr={**SEPTR, "patch_size": [2, 2]}, teacher_stem=True),
    "cnn": dict(arch="cnn", cnn=dict(width=8)),
}


def cfg_of(name: str, **kw) -> StudentConfig:
    return from_dict(StudentConfig, {**CONFIGS[name], **kw})


def teacher(size=(17, 32), small_stem=True) -> ResNetTeacher:
    torch.manual_seed(1)
    return ResNetTeacher(C, K, size, width=16, small_stem=small_stem).eval()


def student(name: str, size=(17, 32), **kw):
    torch.manual_seed(0)
    cfg = cfg_of(name, **kw)
    return build_student(cfg, C, size, K, teacher=teacher(size) if cfg.teacher_stem else None).eval()


# ---- CNN teacher ------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_teacher_small_stem_keeps_resolution(size):
    t = teacher(size)
    x = torch.randn(2, C, *size)
    assert t.net.conv1.kernel_size == (3, 3) and t.net.conv1.stride == (1, 1)
    assert isinstance(t.net.maxpool, torch.nn.Identity)
    e = t.embed(x)
    assert e.shape == (2, 16, *size) == (2, t.embed_channels, *t.embed_grid(size))
    assert t(x).shape == (2, K) and t.features(x).shape == (2, 128) == (2, t.num_features)
    big = teacher(size, small_stem=False)  # ImageNet stem: /4 before layer1
    assert big.embed(x).shape[2:] == big.embed_grid(size) == tuple(math.ceil(s / 4) for s in size)
    if size == SIZES[0]:  # width 64 = standard ResNet-18 (its 64-channel stem); built once, it is not tiny
        assert ResNetTeacher(C, K, size).embed_channels == 64
    built = build_teacher(CNNConfig(width=8, small_stem=False), C, K, size)
    assert built.embed_channels == 8 and not built.small_stem and built(x).shape == (2, K)
    with pytest.raises(WearspecError, match="cnn.width"):
        build_teacher(CNNConfig(width=0), C, K, size)


# ---- every student: shapes on non-square inputs -------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_student_shapes(name, size):
    s = student(name, size)
    x = torch.randn(2, C, *size)
    out = s(x)
    assert out.cls.shape == out.dist.shape == (2, K)
    assert torch.isfinite(out.cls).all() and torch.isfinite(out.dist).all()
    assert s.predict_logits(x).shape == (2, K)
    small = (size[0] - 4, size[1] - 5)  # a different (non-multiple) size through the same model
    assert s(torch.randn(1, C, *small)).cls.shape == (1, K)
    plain = student(name, size, distillation=False, head_fusion="cls")
    out = plain(x)
    assert out.cls.shape == (2, K) and out.dist is None and plain.head_dist is None


def test_input_channel_check():
    with pytest.raises(WearspecError, match=r"expected spectrograms \(B, 3, F, N\)"):
        student("septr")(torch.randn(2, 2, 17, 32))


# ---- distillation token -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,token", [("vit", "backbone.model.dist_token"), ("septr", "backbone.dist_token"),
                                        ("vit_stem", "backbone.model.dist_token")])
def test_dist_token_is_in_the_sequence_and_learns(name, token):
    s = student(name)
    x = torch.randn(2, C, 17, 32)
    params = dict(s.named_parameters())
    before = s(x).cls.detach()
    with torch.no_grad():
        params[token].add_(torch.randn_like(params[token]))  # (a constant shift would vanish in LayerNorm)
    assert not torch.allclose(s(x).cls, before, atol=1e-5)  # cls changed through attention to the dist token
    s.train()
    s.zero_grad()
    s(x).dist.square().sum().backward()  # a loss on the distillation head only
    assert params[token].grad is not None and params[token].grad.abs().sum() > 0
    assert s.head.weight.grad is None


def test_vit_sequence_has_cls_and_dist():
    s = student("vit")
    seen = {}
    s.backbone.model.blocks[0].register_forward_hook(lambda m, i, o: seen.update(len=i[0].shape[1]))
    s(torch.randn(1, C, 17, 32))
    assert s.backbone.model.num_prefix_tokens == 2
    assert seen["len"] == 2 + math.ceil(17 / 4) * 8


# ---- SepTr ------------------------------------------------------------------------------------------
def test_septr_positional_embeddings_per_axis():
    torch.manual_seed(0)
    m = SepTr(SepTrConfig(**SEPTR, patch_size=[2, 2]), C, (17, 32), num_classes=K)
    assert m.grid == (9, 16)
    assert m.pos_freq.shape == (1, 9, 1, 32) and m.pos_time.shape == (1, 1, 16, 32)
    x = torch.randn(2, C, 17, 32)
    grid = m.patch_embed(torch.nn.functional.pad(x, (0, 0, 0, 1))).permute(0, 2, 3, 1)
    want = grid + m.pos_freq + m.pos_time  # token (h, w) gets pos_freq[h] + pos_time[w]
    torch.testing.assert_close(m.embed(x), want)
    assert m.embed(torch.randn(1, C, 9, 12)).shape == (1, 5, 6, 32)  # other grids resample each axis
    assert {"pos_freq", "pos_time", "cls_token", "dist_token"} == m.no_weight_decay()


@pytest.mark.parametrize("order", ["time_first", "freq_first"])
def test_septr_axes_order_and_token_averaging(order):
    torch.manual_seed(0)
    m = SepTr(SepTrConfig(**SEPTR, order=order), C, (17, 32), num_classes=K).eval()
    calls = []

    def hook(axis):
        return lambda mod, inp, out: calls.append((axis, inp[0].clone(), out.clone()))

    for blk in m.blocks:
        blk.time.register_forward_hook(hook("time"))
        blk.freq.register_forward_hook(hook("freq"))
    b, (h, w), p = 2, (17, 32), 2
    cls_feat, dist_feat = m.forward_features(torch.randn(b, C, h, w))
    first = ["time", "freq"] if order == "time_first" else ["freq", "time"]
    assert [c[0] for c in calls] == first * 2
    for axis, inp, _ in calls:  # time: B·H rows of P + W tokens; freq: B·W columns of P + H tokens
        assert inp.shape == ((b * h, p + w, 32) if axis == "time" else (b * w, p + h, 32))
    for (axis, _, out), (_, nxt, _) in zip(calls, calls[1:]):
        copies = out[:, :p].reshape(b, -1, p, 32)  # each row's / column's class + dist tokens
        avg = copies.mean(dim=1)
        rows = nxt.shape[0] // b
        torch.testing.assert_close(nxt[:, :p].reshape(b, rows, p, 32), avg[:, None].expand(b, rows, p, 32))
    final = calls[-1][2][:, :p].reshape(b, -1, p, 32).mean(dim=1)
    torch.testing.assert_close(cls_feat, m.norm(final)[:, 0])
    torch.testing.assert_close(dist_feat, m.norm(final)[:, 1])


def test_septr_orders_differ_with_the_same_weights():
    torch.manual_seed(0)
    a = SepTr(SepTrConfig(**SEPTR, order="time_first"), C, (17, 32), num_classes=K).eval()
    bm = SepTr(SepTrConfig(**SEPTR, order="freq_first"), C, (17, 32), num_classes=K).eval()
    bm.load_state_dict(a.state_dict())
    x = torch.randn(2, C, 17, 32)
    assert not torch.allclose(a(x)[0], bm(x)[0], atol=1e-5)


# ---- SPT and LSA -------------------------------------------------------------------------------------
def test_spt_channels_and_shifts():
    spt = ShiftedPatchTokenization(2, 16, (4, 2), (2, 4))
    x = torch.randn(1, 2, 8, 8)
    s = spt.shifted(x)
    assert s.shape == (1, 10, 8, 8) and spt.out_chans == 10 and spt.proj.in_features == 10 * 4 * 2
    torch.testing.assert_close(s[:, :2], x)
    assert spt.shifts == ((-2, -1), (-2, 1), (2, -1), (2, 1))
    for i, (df, dn) in enumerate(spt.shifts):
        ref = torch.zeros_like(x)
        for f in range(8):
            for n in range(8):
                if 0 <= f - df < 8 and 0 <= n - dn < 8:
                    ref[..., f, n] = x[..., f - df, n - dn]
        torch.testing.assert_close(s[:, 2 * (i + 1):2 * (i + 2)], ref)
    assert spt(x).shape == (1, 2, 4, 16)


def test_vit_spt_uses_shifted_tokens():
    s = student("vit_spt_lsa")
    pe = s.backbone.model.patch_embed
    assert isinstance(pe, ShiftedPatchTokenization) and pe.out_chans == 5 * C
    assert pe.proj.in_features == 5 * C * 4 * 4


def test_lsa_masks_the_diagonal_and_learns_its_temperature():
    s = student("vit_spt_lsa")
    attn = s.backbone.model.blocks[0].attn
    assert isinstance(attn, LocalitySelfAttention) and isinstance(attn.log_scale, torch.nn.Parameter)
    assert math.isclose(attn.log_scale.exp().item(), attn.head_dim ** -0.5, rel_tol=1e-6)
    tokens = torch.randn(2, 7, 32)
    a = attn.attention_weights(tokens)
    assert a.shape == (2, 2, 7, 7)
    assert torch.all(torch.diagonal(a, dim1=-2, dim2=-1) == 0)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 7))
    attn.fused_attn = True
    fused = attn(tokens)
    attn.fused_attn = False
    torch.testing.assert_close(attn(tokens), fused, atol=1e-5, rtol=1e-5)
    x = torch.randn(2, C, 17, 32)
    s.train()
    s(x).cls.square().sum().backward()
    assert attn.log_scale.grad is not None and attn.log_scale.grad.abs() > 0
    assert "backbone.model.blocks.0.attn.log_scale" in s.no_weight_decay()


# ---- frozen teacher stem ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["septr_stem", "septr_stem_patch", "vit_stem"])
def test_teacher_stem_is_frozen(name):
    torch.manual_seed(0)
    t = teacher()
    s = build_student(cfg_of(name), C, (17, 32), K, teacher=t)
    x = torch.randn(2, C, 17, 32)
    torch.testing.assert_close(s.stem(x), t.embed(x))
    bn_stats = s.stem.layers.bn1.running_mean.clone()
    s.train()
    assert not s.stem.training and s.backbone.training
    out = s(x)
    (out.cls.sum() + out.dist.sum()).backward()
    assert all(not p.requires_grad and p.grad is None for p in s.stem.parameters())
    assert torch.equal(s.stem.layers.bn1.running_mean, bn_stats)
    proj = s.backbone.model.patch_embed.proj if name == "vit_stem" else s.backbone.patch_embed
    patch = (2, 2) if name == "septr_stem_patch" else (1, 1)  # SepTr patches the teacher's 17 × 32 feature map
    assert proj.kernel_size == patch and proj.in_channels == 16 and proj.weight.grad is not None
    if name.startswith("septr"):
        assert s.backbone.grid == (math.ceil(17 / patch[0]), 32 // patch[1])
    assert any(k.startswith("stem.layers.layer1.") for k in s.state_dict())  # self-contained
    assert not any(p is q for p in s.backbone_parameters() for q in s.stem.parameters())
    with pytest.raises(WearspecError, match="needs the trained CNN teacher"):
        build_student(cfg_of(name), C, (17, 32), K)


# ---- heads and optimiser helpers ----------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["mean", "cls", "dist"])
def test_head_fusion(fusion):
    s = student("septr", head_fusion=fusion)
    x = torch.randn(2, C, 17, 32)
    out = s(x)
    want = {"mean": (out.cls + out.dist) / 2, "cls": out.cls, "dist": out.dist}[fusion]
    torch.testing.assert_close(s.predict_logits(x), want)
    assert not torch.allclose(out.cls, out.dist)


@pytest.mark.parametrize("bad,match", [
    (dict(arch="septr", head_fusion="dist", distillation=False), "needs distillation"),
    (dict(arch="septr", spt=True), "only for vit"),
    (dict(arch="swin", backbone=SWIN, teacher_stem=True), "only septr and vit"),
    (dict(arch="swin"), "is a vit"),
    (dict(arch="vit", spt=True, teacher_stem=True), "cannot be combined"),
    (dict(arch="septr", septr={"order": "diagonal"}), "septr.order"),
    (dict(arch="mlp"), "student.arch"),
])
def test_config_errors(bad, match):
    with pytest.raises(WearspecError, match=match):
        from_dict(StudentConfig, bad)


@pytest.mark.parametrize("name", ["vit", "swin", "septr", "cnn"])
def test_optimiser_helpers(name):
    s = student(name)
    names = {n for n, _ in s.named_parameters()}
    assert s.no_weight_decay() <= names
    heads = {id(p) for p in s.head_parameters()}
    body = {id(p) for p in s.backbone_parameters()}
    assert not heads & body and heads | body == {id(p) for p in s.parameters()}
    ids = {n: s.layer_id(n) for n in names}
    assert min(ids.values()) == 0 and ids["head.weight"] == ids["head_dist.weight"] == s.num_layers + 1
    assert set(range(1, s.num_layers + 1)) <= set(ids.values())
    s.set_backbone_trainable(False)
    assert all(not p.requires_grad for p in s.backbone_parameters())
    assert all(p.requires_grad for p in s.head_parameters())


# ---- init_from_pretrain ---------------------------------------------------------------------------------
T = 248  # n_fft 32, hop 8 → (F, N) = (17, 32)


def pretrain_checkpoint(backbone: dict, in_chans=C):
    torch.manual_seed(3)
    fe = SpectrogramFrontend(n_fft=32, hop_length=8, n_channels=in_chans)
    fe.fit(torch.randn(4, in_chans, T))
    _, f, n = fe.output_shape(in_chans, T)
    enc = SpectrogramEncoder(fe, build_backbone(BackboneConfig(**backbone), in_chans, (f, n)))
    return {"format": "wearspec-checkpoint", "version": 1, "stage": "pretrain",
            "encoder": enc.meta([f"c{i}" for i in range(in_chans)], 50.0, T),
            "student": {k: v + 1 for k, v in enc.state_dict().items()}, "teacher": enc.state_dict()}


@pytest.mark.parametrize("name", ["vit", "swin"])
def test_init_from_pretrain_loads_the_backbone(name, tmp_path):
    ckpt = pretrain_checkpoint(VIT if name == "vit" else SWIN)
    path = tmp_path / "ckpt-00000010.pt"
    torch.save(ckpt, path)
    s = student(name)
    info = init_from_pretrain(s, path)
    own = s.backbone.state_dict()
    src = {k[len("backbone."):]: v for k, v in ckpt["teacher"].items() if k.startswith("backbone.")}
    assert info["loaded"] == len(src) and not info["skipped"] and not info["resampled"]
    for k, v in src.items():
        if k == "model.pos_embed":
            torch.testing.assert_close(own[k][:, 2:], v[:, 1:])
            torch.testing.assert_close(own[k][:, :2], v[:, :1].expand(1, 2, -1))  # dist row = cls row
        else:
            assert torch.equal(own[k], v), k
    if name == "vit":
        assert "model.dist_token" in info["from_cls"]
        assert torch.equal(own["model.dist_token"], src["model.cls_token"])
    x = torch.randn(2, C, 17, 32)
    assert torch.isfinite(s(x).cls).all()
    init_from_pretrain(s, ckpt, which="student")  # a loaded dict works too
    k0 = next(iter(src))
    assert torch.equal(s.backbone.state_dict()[k0], ckpt["student"]["backbone." + k0])


def test_init_from_pretrain_replaced_embeddings_and_other_grid():
    ckpt = pretrain_checkpoint(VIT)
    s = student("vit_spt_lsa", size=(17, 48))  # longer windows: the patch grid differs → resampled
    info = init_from_pretrain(s, ckpt)
    assert info["skipped"] == ["model.patch_embed.proj.weight", "model.patch_embed.proj.bias"]
    assert "model.patch_embed.proj.weight" in info["new"] and "model.blocks.0.attn.log_scale" in info["new"]
    assert info["resampled"] == ["model.pos_embed"]
    assert s.backbone.model.pos_embed.shape == (1, 2 + 5 * 12, 32)
    s = student("vit_stem")
    info = init_from_pretrain(s, ckpt)
    assert info["resampled"] == ["model.pos_embed"] and s.backbone.model.pos_embed.shape == (1, 2 + 17 * 32, 32)
    assert torch.equal(s.backbone.state_dict()["model.blocks.1.mlp.fc2.weight"],
                       ckpt["teacher"]["backbone.model.blocks.1.mlp.fc2.weight"])


@pytest.mark.parametrize("case,match", [
    ("arch", "holds a swin backbone"),
    ("chans", "pretrained on 2 input channels"),
    ("dim", "embed_dim 32 in the checkpoint, 48 in the student"),
    ("depth", "unexpected key 'backbone.model.blocks.2"),
    ("patch", "shape of 'backbone.model.patch_embed.proj.weight'"),
    ("septr", "only vit and swin"),
    ("no_encoder", "no 'encoder' block"),
])
def test_init_from_pretrain_errors(case, match, tmp_path):
    backbone = {"arch": SWIN, "chans": VIT, "dim": VIT, "depth": {**VIT, "depth": 3},
                "patch": {**VIT, "patch_size": [2, 4]}}.get(case, VIT)
    ckpt = pretrain_checkpoint(backbone, in_chans=2 if case == "chans" else C)
    if case == "no_encoder":
        del ckpt["encoder"]
    path = tmp_path / f"{case}.pt"
    torch.save(ckpt, path)
    s = student("septr" if case == "septr" else "vit", backbone={**VIT, "embed_dim": 48} if case == "dim" else VIT)
    with pytest.raises(WearspecError, match=match) as info:
        init_from_pretrain(s, path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
