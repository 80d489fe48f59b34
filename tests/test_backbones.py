"""Backbones (timm ViT/Swin on non-square, variable-size spectrograms) and the encoder + checkpoint loading."""

from __future__ import annotations

import time

import pytest
import timm.models.vision_transformer as timm_vit
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.vision_transformer import VisionTransformer

from wearspec.config import from_dict
from wearspec.data.frontend import SpectrogramFrontend
from wearspec.errors import WearspecError
from wearspec.models import backbones as bb
from wearspec.models.backbones import BackboneConfig, build_backbone
from wearspec.models.encoder import SpectrogramEncoder, encoder_from_checkpoint, encoder_meta
from wearspec.training.runtime import attention_for_autocast

# tiny overrides keep every test fast; the presets' own sizes are exercised in test_presets_*
TINY = {
    "vit": dict(name="vit_tiny_cpu", embed_dim=32, depth=4, num_heads=2),
    "swin": dict(name="swin_tiny_cpu", embed_dim=16, depth=1, num_heads=1),
}


def tiny(arch: str, in_chans: int = 3, size=(33, 32), **kw):
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(**{**TINY[arch], **kw}), in_chans, size).eval()


def expected_grid(arch, size, patch, n_stages=2):
    h, w = -(-size[0] // patch[0]), -(-size[1] // patch[1])
    if arch == "swin":
        for _ in range(n_stages - 1):
            h, w = -(-h // 2), -(-w // 2)
    return h, w


# ---- shapes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["vit", "swin"])
@pytest.mark.parametrize("size", [(17, 32), (33, 16)])
def test_output_shapes_non_square(arch, size):
    b = tiny(arch, 3, size)
    out = b(torch.randn(2, 3, *size))
    h, w = out.grid
    assert (h, w) == expected_grid(arch, size, b.patch_size) == b.token_grid(size)
    assert h != w
    assert out.tokens.shape == (2, h * w, b.token_dim)
    assert out.pooled.shape == (2, b.embed_dim)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()


@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_local_crops_and_subbands_through_the_same_model(arch):
    b = tiny(arch, 3, (33, 32))
    g = b(torch.randn(2, 3, 33, 32)).grid
    for size in [(33, 12), (33, 8), (17, 32), (9, 12), (3, 5)]:  # fewer frames, sub-bands, both, tiny
        out = b(torch.randn(2, 3, *size))
        assert out.grid == b.token_grid(size) and out.tokens.shape[1] == out.grid[0] * out.grid[1]
        assert out.grid[0] <= g[0] and out.grid[1] <= g[1]
    assert b(torch.randn(1, 3, 33, 12)).grid[1] < g[1]  # fewer time frames → fewer time tokens
    assert b(torch.randn(1, 3, 17, 32)).grid[0] < g[0]  # a sub-band → fewer frequency tokens


@pytest.mark.parametrize("arch,patch", [("vit", [2, 4]), ("vit", [5, 3]), ("swin", [2, 4]), ("swin", [3, 2])])
def test_patch_sizes_per_axis_and_not_dividing(arch, patch):
    size = (17, 30)  # 17 is divisible by none of the patch heights; 30 not by 4
    b = tiny(arch, 2, size, patch_size=patch)
    x = torch.randn(2, 2, *size)
    out = b(x)
    assert out.grid == expected_grid(arch, size, patch)
    # the rule: zeros on the high-frequency / late-time side up to the next patch multiple
    fp, np_ = -(-size[0] // patch[0]) * patch[0], -(-size[1] // patch[1]) * patch[1]
    padded = b(F.pad(x, (0, np_ - size[1], 0, fp - size[0])))
    torch.testing.assert_close(out.tokens, padded.tokens, rtol=0, atol=0)


def test_swin_window_per_axis():
    b = tiny("swin", 2, (32, 48), patch_size=[2, 4], window_size=[2, 3])
    windows = {blk.window_size for blk in b.modules() if isinstance(blk, SwinTransformerBlock)}
    assert windows == {(2, 3)}
    assert b(torch.randn(1, 2, 32, 48)).grid == (8, 6)
    assert b(torch.randn(1, 2, 32, 20)).grid == (8, 3)


# ---- ViT position embedding -------------------------------------------------------------------------
def test_vit_global_size_equals_plain_timm():
    size, patch = (32, 48), (4, 8)
    b = tiny("vit", 3, size, patch_size=list(patch))
    plain = VisionTransformer(img_size=size, patch_size=patch, in_chans=3, num_classes=0, embed_dim=32, depth=4,
                              num_heads=2).eval()
    plain.load_state_dict(b.model.state_dict())
    x = torch.randn(2, 3, *size)
    ref = plain.forward_features(x)
    out = b(x)
    torch.testing.assert_close(out.pooled, ref[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(out.tokens, ref[:, 1:], rtol=0, atol=0)
    assert b.model.pos_embed.shape == (1, 1 + 8 * 6, 32)


def test_vit_small_crop_uses_interpolated_pos_embed(monkeypatch):
    b = tiny("vit", 3, (33, 32))  # patch 4: global grid (9, 8)
    calls = []
    original = timm_vit.resample_abs_pos_embed

    def spy(posemb, new_size, old_size=None, **kw):
        out = original(posemb, new_size, old_size=old_size, **kw)
        calls.append((tuple(new_size), tuple(old_size), out.shape))
        return out

    monkeypatch.setattr(timm_vit, "resample_abs_pos_embed", spy)
    b(torch.randn(1, 3, 33, 32))
    b(torch.randn(1, 3, 17, 12))
    assert calls[0] == ((9, 8), (9, 8), b.model.pos_embed.shape)
    assert calls[1] == ((5, 3), (9, 8), (1, 1 + 15, 32))
    pe = original(b.model.pos_embed, (5, 3), old_size=(9, 8))
    assert not torch.equal(pe[:, 1:], b.model.pos_embed[:, 1:16])  # interpolated, not truncated
    torch.testing.assert_close(pe[:, 0], b.model.pos_embed[:, 0])  # CLS entry kept


# ---- Swin window attention: padding before the shift, masked --------------------------------------
def test_swin_without_padding_equals_timm_block():
    size = (32, 64)  # patch 2 → grids (16, 32) and (8, 16): multiples of the 4×4 windows, no padding
    b = tiny("swin", 2, size, depth=2)
    ref = tiny("swin", 2, size, depth=2)
    for blk in ref.modules():
        if isinstance(blk, SwinTransformerBlock):
            blk.__class__ = SwinTransformerBlock
    assert any(any(blk.shift_size) for blk in b.modules() if isinstance(blk, SwinTransformerBlock))
    x = torch.randn(2, 2, *size)
    torch.testing.assert_close(b(x).tokens, ref(x).tokens, rtol=1e-5, atol=1e-5)


def test_swin_window_padding_is_masked(monkeypatch):
    b = tiny("swin", 2, (33, 32), depth=2)
    x = torch.randn(2, 2, 33, 12)  # grids (17, 6) and (9, 3): padded to window multiples in every block
    ref = b(x).tokens

    def noisy_pad(t, hp, wp):
        out = torch.randn(t.shape[0], hp, wp, t.shape[3]) * 10
        out[:, :t.shape[1], :t.shape[2]] = t
        return out

    monkeypatch.setattr(bb, "_pad_grid", noisy_pad)
    torch.testing.assert_close(b(x).tokens, ref, rtol=1e-5, atol=1e-5)


def test_swin_shifted_window_attention_pattern():
    """Which token attends to which, for a shifted block on a grid that needs padding: the same window
    in the shifted frame of the padded grid, and the same side of the cyclic wrap (Swin's regions)."""
    b = tiny("swin", 2, (32, 32), depth=2)
    blk = next(m for m in b.modules() if isinstance(m, SwinTransformerBlock) and any(m.shift_size))
    (wh, ww), (sh, sw) = blk.window_size, blk.shift_size
    h, w, c = 5, 6, blk.dim
    hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
    x = torch.randn(1, h, w, c, dtype=torch.float64)
    blk = blk.double()
    jac = torch.autograd.functional.jacobian(lambda t: blk._attn(t), x)  # (1,h,w,c, 1,h,w,c)
    reach = jac[0].abs().sum(dim=(2, 6))[:, :, 0] > 1e-12  # (h, w, h, w)
    for r in range(h):
        for q in range(w):
            for r2 in range(h):
                for q2 in range(w):
                    same_window = ((r - sh) % hp) // wh == ((r2 - sh) % hp) // wh and \
                        ((q - sw) % wp) // ww == ((q2 - sw) % wp) // ww
                    same_side = (r < sh) == (r2 < sh) and (q < sw) == (q2 < sw)
                    assert bool(reach[r, q, r2, q2]) == (same_window and same_side), (r, q, r2, q2)


def test_swin_fused_and_plain_attention_agree():
    b = tiny("swin", 2, (33, 32), depth=2)
    assert all(m.attn.fused_attn for m in b.modules() if isinstance(m, SwinTransformerBlock))
    x = torch.randn(2, 2, 33, 12)
    fused = b(x).tokens
    for m in b.modules():
        if isinstance(m, SwinTransformerBlock):
            m.attn.fused_attn = False
    torch.testing.assert_close(b(x).tokens, fused, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_attention_for_autocast_picks_the_explicit_path_only_on_cpu_autocast(arch):
    b = tiny(arch, 2, (33, 32), depth=2)
    flags = lambda: {m.fused_attn for m in b.modules() if hasattr(m, "fused_attn")}  # noqa: E731
    assert flags() == {True}
    assert not attention_for_autocast(b, "cpu", None) and flags() == {True}
    assert not attention_for_autocast(b, "cuda", torch.bfloat16) and flags() == {True}
    x = torch.randn(2, 2, 33, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = b(x).tokens.float()
        assert attention_for_autocast(b, "cpu", torch.bfloat16) and flags() == {False}
        explicit = b(x).tokens.float()
    torch.testing.assert_close(explicit, fused, rtol=0.05, atol=0.05)  # the same attention, in bf16


def test_swin_export_caches_no_traced_masks():
    """Masks are cached in eager mode only: an export (fake tensors) leaves the cache alone and the exported
    program equals eager, also on a crop that needs window padding."""
    b = tiny("swin", 2, (33, 32), depth=2)
    b.set_fused_attn(False)
    assert not any(m.fused_attn for m in b.modules() if hasattr(m, "fused_attn"))

    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = b

        def forward(self, x):
            return self.b(x).tokens

    x = torch.randn(1, 2, 33, 12)
    bb._cached_mask.cache_clear()
    program = torch.export.export(Tokens(), (x,))
    assert bb._cached_mask.cache_info().currsize == 0
    torch.testing.assert_close(program.module()(x), Tokens()(x))
    assert bb._cached_mask.cache_info().currsize > 0


def test_deepcopy_keeps_the_masked_swin_blocks():
    import copy

    b = tiny("swin", 2, (33, 32))
    teacher = copy.deepcopy(b)  # how an EMA teacher is made
    assert {type(m) for m in teacher.modules() if isinstance(m, SwinTransformerBlock)} == {bb._MaskedSwinBlock}
    x = torch.randn(2, 2, 33, 12)
    torch.testing.assert_close(teacher(x).tokens, b(x).tokens)


# ---- probe features -------------------------------------------------------------------------------
def test_probe_features_vit():
    b = tiny("vit", 3, (17, 32))
    x = torch.randn(2, 3, 17, 12)
    for n in range(1, 5):
        for avgpool in (False, True):
            f = b.probe_features(x, n_last=n, avgpool=avgpool)
            assert f.shape == (2, b.probe_dim(n, avgpool)) == (2, 32 * (n + avgpool))
    out = b(x)
    torch.testing.assert_close(b.probe_features(x), out.pooled)
    torch.testing.assert_close(b.probe_features(x, 2, True)[:, 32:], torch.cat([out.pooled, out.tokens.mean(1)], 1))
    with pytest.raises(WearspecError, match="n_last"):
        b.probe_features(x, n_last=5)


def test_probe_features_swin_last_stages():
    b = tiny("swin", 3, (33, 32))
    x = torch.randn(2, 3, 33, 32)
    assert b.stage_dims == [16, 32]
    assert b.probe_dim(1) == 32 and b.probe_dim(2) == 48 and b.probe_dim(2, avgpool=True) == 48
    for n in (1, 2):
        assert b.probe_features(x, n).shape == (2, b.probe_dim(n))
    torch.testing.assert_close(b.probe_features(x, 1), b(x).pooled)
    torch.testing.assert_close(b.probe_features(x, 2)[:, 16:], b(x).pooled)
    with pytest.raises(WearspecError, match="n_last"):
        b.probe_dim(3)


# ---- optimiser helpers ------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_no_weight_decay_and_layer_id(arch):
    b = tiny(arch, 3, (33, 32), depth=2)
    names = [n for n, _ in b.named_parameters()]
    nwd = b.no_weight_decay()
    assert nwd and nwd <= set(names)
    if arch == "vit":
        assert nwd == {"model.pos_embed", "model.cls_token"}
    else:
        assert all(n.endswith("relative_position_bias_table") for n in nwd) and len(nwd) == b.num_layers
    ids = [b.layer_id(n) for n in names]
    assert min(ids) == 0 and max(ids) == b.num_layers + 1
    assert b.layer_id("model.patch_embed.proj.weight") == 0
    assert b.layer_id("model.norm.weight") == b.num_layers + 1
    assert b.layer_id("backbone.model.norm.weight") == b.num_layers + 1
    block_ids = [i for n, i in zip(names, ids) if ".blocks." in n or ".downsample." in n]
    assert block_ids == sorted(block_ids) and set(block_ids) == set(range(1, b.num_layers + 1))


@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_gradients_reach_every_parameter(arch):
    """Every parameter gets a non-zero gradient from a loss on pooled + tokens: none is legitimately unused
    (no classifier head is built; the CLS token is the pooled output; the Swin bias tables are indexed)."""
    b = tiny(arch, 3, (33, 16), depth=2).train()
    out = b(torch.randn(4, 3, 33, 16))
    (out.pooled.square().mean() + out.tokens.square().mean()).backward()
    dead = [n for n, p in b.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_drop_path_and_determinism(arch):
    a, b = tiny(arch, 3, (17, 16), drop_path_rate=0.2), tiny(arch, 3, (17, 16), drop_path_rate=0.2)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    rates = [m.drop_prob for m in a.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)
    x = torch.randn(8, 3, 17, 16)
    torch.testing.assert_close(a(x).pooled, b(x).pooled)  # eval: no drop
    a.train()
    torch.manual_seed(1)
    p1 = a(x).pooled
    torch.manual_seed(2)
    assert not torch.allclose(p1, a(x).pooled)


# ---- config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("data,key", [
    ({"name": "resnet50"}, "backbone.name"),
    ({"patch_size": [4]}, "backbone.patch_size"),
    ({"patch_size": [0, 4]}, "backbone.patch_size"),
    ({"name": "vit_small", "window_size": [4, 4]}, "backbone.window_size"),
    ({"name": "swin_tiny", "window_size": [4, 4, 4]}, "backbone.window_size"),
    ({"depth": -1}, "backbone.depth"),
    ({"embed_dim": 30, "num_heads": 4}, "backbone.num_heads"),
    ({"drop_path_rate": 1.5}, "backbone.drop_path_rate"),
])
def test_config_errors_name_the_key(data, key):
    with pytest.raises(WearspecError, match=key.replace(".", r"\.")):
        from_dict(BackboneConfig, data, prefix="backbone.")


def test_config_unknown_name_lists_presets():
    with pytest.raises(WearspecError, match="vit_tiny_cpu.*swin_tiny_cpu.*swin_small"):
        BackboneConfig(name="vit_huge").validate()


# ---- encoder and checkpoints ------------------------------------------------------------------------
C, T = 3, 128


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    fe = SpectrogramFrontend(n_fft=32, hop_length=8, log="log", channel_names=["ax", "ay", "az"])
    fe.fit(torch.randn(16, C, T))
    _, f, n = fe.output_shape(C, T)  # (17, 17)
    return SpectrogramEncoder(fe, build_backbone(BackboneConfig(**TINY["vit"]), C, (f, n))).eval()


def test_encoder_forward_on_raw_windows(encoder):
    out = encoder(torch.randn(2, C, T))
    assert out.pooled.shape == (2, 32) and out.grid == (5, 5) and out.tokens.shape == (2, 25, 32)
    assert encoder(torch.randn(2, C, 64)).grid == (5, 3)  # a shorter window: fewer frames
    assert encoder.probe_features(torch.randn(2, C, T), 2, True).shape == (2, encoder.probe_dim(2, True)) == (2, 96)
    names = {n for n, _ in encoder.named_parameters()}
    assert encoder.no_weight_decay() == {"backbone.model.pos_embed", "backbone.model.cls_token"} <= names
    assert encoder.layer_id("backbone.model.blocks.1.mlp.fc1.weight") == 2


def test_meta_round_trip(encoder, tmp_path):
    meta = encoder.meta(["ax", "ay", "az"], 50.0, T)
    assert meta == encoder_meta(encoder.frontend.config(), encoder.backbone.cfg, C, (17, 17), ["ax", "ay", "az"],
                                50, T)
    torch.save(meta, tmp_path / "m.pt")
    meta = torch.load(tmp_path / "m.pt", weights_only=True)  # plain values only
    other = SpectrogramEncoder.from_meta(meta)
    sa, sb = encoder.state_dict(), other.state_dict()
    assert [(k, v.shape) for k, v in sa.items()] == [(k, v.shape) for k, v in sb.items()]
    assert other.backbone.cfg == encoder.backbone.cfg and other.frontend.config() == encoder.frontend.config()
    other.load_state_dict(sa)
    x = torch.randn(2, C, T)
    torch.testing.assert_close(other.eval()(x).tokens, encoder(x).tokens)


def _checkpoint(enc, changes=None):
    """A checkpoint in the pretraining recipe's layout; ``changes`` replaces entries (None removes one)."""
    torch.manual_seed(5)
    student = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v.clone()
               for k, v in enc.state_dict().items()}
    ckpt = {"format": "wearspec-checkpoint", "version": 1, "stage": "pretrain",
            "encoder": enc.meta(["ax", "ay", "az"], 50.0, T), "student": student,
            "teacher": enc.state_dict(), "optimizer": {"state": {}}, "rng": [1, 2, 3]}
    ckpt.update(changes or {})
    return {k: v for k, v in ckpt.items() if v is not None}


def test_encoder_from_checkpoint(encoder, tmp_path):
    path = tmp_path / "ckpt.pt"
    ckpt = _checkpoint(encoder)
    torch.save(ckpt, path)
    teacher, meta = encoder_from_checkpoint(path)
    assert meta == ckpt["encoder"] and not teacher.training
    for k, v in ckpt["teacher"].items():
        assert torch.equal(teacher.state_dict()[k], v), k
    student, _ = encoder_from_checkpoint(path, "student")
    for k, v in ckpt["student"].items():
        assert torch.equal(student.state_dict()[k], v), k
    random, _ = encoder_from_checkpoint(path, "random")
    random2, _ = encoder_from_checkpoint(path, "random")
    fr, ft = random.frontend, teacher.frontend
    assert fr.fitted and torch.equal(fr.norm_mean, ft.norm_mean) and torch.equal(fr.norm_std, ft.norm_std)
    w = "backbone.model.blocks.0.attn.qkv.weight"
    assert not torch.equal(random.state_dict()[w], teacher.state_dict()[w])
    assert torch.equal(random.state_dict()[w], random2.state_dict()[w])  # fixed seed
    x = torch.randn(2, C, T)
    torch.testing.assert_close(teacher(x).pooled, encoder(x).pooled)


def _bad_state(encoder, kind):
    sd = dict(encoder.state_dict())
    if kind == "missing":
        sd.pop("backbone.model.norm.weight")
    elif kind == "unexpected":
        sd["backbone.model.extra"] = torch.zeros(1)
    else:
        sd["backbone.model.pos_embed"] = torch.zeros(1, 7, 32)
    return sd


@pytest.mark.parametrize("case,pattern", [
    ("missing_file", "checkpoint not found"),
    ("garbage", "not a wearspec checkpoint"),
    ("unsafe", "not a wearspec checkpoint"),
    ("format", "not a wearspec checkpoint"),
    ("version", "version 2 is not supported"),
    ("no_encoder", "no 'encoder' block"),
    ("no_teacher", "no 'teacher' weights"),
    ("bad_meta", "'encoder' block"),
    ("missing", "missing key 'backbone.model.norm.weight'"),
    ("unexpected", "unexpected key 'backbone.model.extra'"),
    ("shape", r"shape of 'backbone.model.pos_embed' is \(1, 7, 32\)"),
])
def test_encoder_from_checkpoint_errors(encoder, tmp_path, case, pattern):
    path = tmp_path / f"{case}.pt"
    if case == "garbage":
        path.write_bytes(b"this is not a zip file")
    elif case == "unsafe":
        torch.save({"format": "wearspec-checkpoint", "obj": time.struct_time((2026,) + (1,) * 8)}, path)
    elif case != "missing_file":
        changes = {"format": {"format": "something-else"}, "version": {"version": 2},
                   "no_encoder": {"encoder": None}, "no_teacher": {"teacher": None},
                   "bad_meta": {"encoder": {**encoder.meta(["ax"], 50.0, T), "in_chans": "three"}}}.get(case, {})
        if case in ("missing", "unexpected", "shape"):
            changes = {"teacher": _bad_state(encoder, case)}
        torch.save(_checkpoint(encoder, changes), path)
    with pytest.raises(WearspecError, match=pattern) as info:
        encoder_from_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_random_needs_only_frontend_state(encoder, tmp_path):
    path = tmp_path / "ckpt.pt"
    ckpt = _checkpoint(encoder)
    ckpt["teacher"] = {k: v for k, v in ckpt["teacher"].items() if k.startswith("frontend.")}
    torch.save(ckpt, path)
    random, _ = encoder_from_checkpoint(path, "random")
    assert random.frontend.fitted
    with pytest.raises(WearspecError, match="missing key"):
        encoder_from_checkpoint(path, "teacher")


# ---- presets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vit_tiny_cpu", "swin_tiny_cpu"])
def test_presets_cpu(name):
    b = tiny("vit" if name.startswith("vit") else "swin", 6, (33, 33), embed_dim=0, depth=0, num_heads=0)
    assert b.cfg.name == name
    out = b(torch.randn(2, 6, 33, 33))
    assert out.pooled.shape == (2, b.embed_dim) and out.grid == b.token_grid((33, 33))


@pytest.mark.parametrize("name", ["vit_small", "swin_tiny",
                                  pytest.param("vit_base", marks=pytest.mark.slow),
                                  pytest.param("swin_small", marks=pytest.mark.slow)])
def test_presets_standard(name):
    torch.manual_seed(0)
    b = build_backbone(BackboneConfig(name=name), 3, (65, 64)).eval()
    with torch.no_grad():
        out = b(torch.randn(1, 3, 65, 64))
        small = b(torch.randn(1, 3, 33, 24))
    dims = {"vit_small": 384, "vit_base": 768, "swin_tiny": 768, "swin_small": 768}
    assert out.pooled.shape == (1, dims[name]) and out.tokens.shape[1] == out.grid[0] * out.grid[1]
    assert small.grid == b.token_grid((33, 24))
