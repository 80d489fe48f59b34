"""Tests for wearspec.data.augment: batched, seeded sensor and spectrogram augmentations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wearspec.config import from_dict
from wearspec.data.augment import (
    AugmentConfig, ChannelDropout, Compose, CutMix, FrequencyMasking, GaussianNoise, Jitter, RandomRotation3D,
    RandomScaling, TimeMasking, TimeRoll, TimeWarp, build_sensor_augment, build_spec_augment, make_generator,
    random_rotation_matrices, triads_from_channels,
)
from wearspec.errors import WearspecError

CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z", "temperature"]
TRIADS = [(0, 1, 2), (3, 4, 5)]
B, C, T = 16, 7, 64
SPEC = (16, 3, 17, 20)  # (B, C, F, N): not square on purpose

SENSOR = {
    "rotation": lambda p: RandomRotation3D(TRIADS, p=p),
    "rotation_small": lambda p: RandomRotation3D(TRIADS, p=p, max_angle=20.0),
    "scaling": lambda p: RandomScaling(p=p, sigma=0.2),
    "scaling_uniform_channel": lambda p: RandomScaling(p=p, sigma=0.2, per_channel=True, distribution="uniform"),
    "jitter": lambda p: Jitter(p=p, sigma=0.05),
    "time_warp": lambda p: TimeWarp(p=p, strength=0.3),
    "channel_dropout": lambda p: ChannelDropout(p=p, drop_prob=0.2),
    "channel_dropout_triads": lambda p: ChannelDropout(p=p, drop_prob=0.5, groups=TRIADS),
}
SPECTRO = {
    "time_mask": lambda p: TimeMasking(p=p, n_masks=2, max_width=4),
    "freq_mask_mean": lambda p: FrequencyMasking(p=p, n_masks=3, max_width=3, value="mean"),
    "time_roll": lambda p: TimeRoll(p=p),
    "time_roll_bounded": lambda p: TimeRoll(p=p, max_shift=3),
    "time_warp_spec": lambda p: TimeWarp(p=p, strength=0.3),
    "freq_warp": lambda p: TimeWarp(p=p, strength=0.3, dim=-2),
    "cutmix": lambda p: CutMix(p=p),
    "noise": lambda p: GaussianNoise(p=p),
}
ALL = [(k, f, (B, C, T)) for k, f in SENSOR.items()] + [(k, f, SPEC) for k, f in SPECTRO.items()]
IDS = [a[0] for a in ALL]


def _data(shape, seed=0, device="cpu"):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("name,factory,shape", ALL, ids=IDS)
def test_shape_dtype_and_input_untouched(name, factory, shape, dtype):
    x = _data(shape).to(dtype)
    x0 = x.clone()
    y = factory(0.7)(x, make_generator(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(x, x0)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name,factory,shape", ALL, ids=IDS)
def test_seed_determinism_and_variation(name, factory, shape):
    x, aug = _data(shape), factory(0.7)
    a, b, c = aug(x, make_generator(3)), aug(x, make_generator(3)), aug(x, make_generator(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name,factory,shape", ALL, ids=IDS)
def test_p0_identity_p1_changes_every_sample(name, factory, shape):
    x = _data(shape)
    assert torch.equal(factory(0.0)(x, make_generator(0)), x)
    y = factory(1.0)(x, make_generator(0))
    changed = (y != x).flatten(1).any(dim=1)
    assert changed.all(), f"unchanged samples: {(~changed).nonzero().flatten().tolist()}"


@pytest.mark.parametrize("name,factory,shape", ALL, ids=IDS)
def test_partial_p_leaves_unselected_samples_bit_exact(name, factory, shape):
    x = _data((256,) + tuple(shape[1:]))
    aug = factory(0.5)
    params = aug.sample(x, make_generator(1))
    y = aug.apply(x, params)
    sel = params["selected"]
    assert 60 < int(sel.sum()) < 196
    assert torch.equal(y[~sel], x[~sel])
    assert torch.equal(aug(x, make_generator(1)), y)  # forward = apply(sample)


# ---- rotation --------------------------------------------------------------------------------


def test_rotation_matrices_orthonormal_det1_and_uniform():
    r = random_rotation_matrices(20000, make_generator(0), dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r @ r.transpose(1, 2), eye.expand_as(r), atol=1e-10)
    assert torch.allclose(torch.linalg.det(r), torch.ones(len(r), dtype=torch.float64), atol=1e-10)
    # Haar measure on SO(3): E[R] = 0; P(angle ≤ 90°) = (π/2 − 1)/π ≈ 0.182
    assert r.mean(0).abs().max() < 0.02
    angle = torch.arccos(((r.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1))
    assert abs(float((angle <= math.pi / 2).double().mean()) - (math.pi / 2 - 1) / math.pi) < 0.01


def test_rotation_max_angle():
    r = random_rotation_matrices(2000, make_generator(0), max_angle=15.0, dtype=torch.float64)
    angle = torch.rad2deg(torch.arccos(((r.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))
    assert angle.max() <= 15.0 + 1e-6 and angle.max() > 14.0


def test_rotation_preserves_norms_same_rotation_for_acc_and_gyro_and_other_channels():
    x = _data((B, C, T))
    aug = RandomRotation3D(TRIADS, p=1.0)
    params = aug.sample(x, make_generator(5))
    y = aug.apply(x, params)
    mats = params["matrices"]
    assert mats.shape == (B, 3, 3)
    eye = torch.eye(3, dtype=mats.dtype)
    assert torch.allclose(mats @ mats.transpose(-1, -2), eye.expand_as(mats), atol=1e-10)
    assert torch.allclose(torch.linalg.det(mats), torch.ones(B, dtype=mats.dtype), atol=1e-10)
    for t in TRIADS:
        assert torch.allclose(y[:, list(t)].norm(dim=1), x[:, list(t)].norm(dim=1), atol=1e-5)
    assert torch.equal(y[:, 6], x[:, 6])
    # recover each sample's rotation from the accelerometer alone; it must reproduce the gyroscope
    acc, acc_rot = x[:, :3].double(), y[:, :3].double()
    r_est = torch.linalg.lstsq(acc.transpose(1, 2), acc_rot.transpose(1, 2)).solution.transpose(1, 2)
    assert torch.allclose(r_est, mats, atol=1e-5)
    assert torch.allclose(r_est @ x[:, 3:6].double(), y[:, 3:6].double(), atol=1e-4)


def test_triads_from_channels_naming_styles():
    assert triads_from_channels(CHANNELS) == TRIADS
    assert triads_from_channels(["ax", "ay", "az", "gx", "gy", "gz"]) == TRIADS
    assert triads_from_channels(["accX", "accY", "accZ", "hr"]) == [(0, 1, 2)]
    assert triads_from_channels(["t", "gyro_z", "acc_x", "gyro_x", "acc_y", "gyro_y", "acc_z"]) == [(2, 4, 6), (3, 5, 1)]
    assert triads_from_channels(["Accelerometer X", "Accelerometer Y", "Accelerometer Z"]) == [(0, 1, 2)]
    assert triads_from_channels(["hand_acc16_x", "hand_acc16_y", "hand_acc16_z", "hand_gyro_x"]) == [(0, 1, 2)]
    assert triads_from_channels(["q_w", "q_x", "q_y", "q_z"]) == []  # a quaternion is not a 3-vector
    assert triads_from_channels(["audio"]) == []


# ---- time warp, scaling, jitter, channel dropout ----------------------------------------------


def test_time_warp_identity_at_strength_zero():
    x = _data((B, C, T))
    assert torch.equal(TimeWarp(p=1.0, strength=0.0)(x, make_generator(0)), x)


def test_time_warp_path_monotone_with_fixed_endpoints():
    x = torch.arange(T, dtype=torch.float32).expand(B, C, T).contiguous()
    aug = TimeWarp(p=1.0, strength=0.5, n_knots=5)
    params = aug.sample(x, make_generator(0))
    path = params["path"]
    assert path.shape == (B, T)
    assert (path.diff(dim=1) > 0).all()
    assert torch.allclose(path[:, 0], torch.zeros(B)) and torch.allclose(path[:, -1], torch.full((B,), T - 1.0))
    y = aug.apply(x, params)  # a ramp warped is the path itself (linear interpolation is exact)
    assert torch.allclose(y, path[:, None, :].expand_as(y), atol=1e-4)
    z = aug(_data((B, C, T)), make_generator(0))
    assert torch.allclose(z[..., [0, -1]], _data((B, C, T))[..., [0, -1]], atol=1e-5)
    assert (path - torch.arange(T)).abs().amax(1).min() > 0.5  # it does distort


def test_scaling_factors():
    x = _data((B, C, T))
    params = RandomScaling(p=1.0, sigma=0.2, per_channel=True).sample(x, make_generator(0))
    assert params["factor"].shape == (B, C) and (params["factor"] > 0).all()
    y = RandomScaling(p=1.0, sigma=0.2)(x, make_generator(0))
    ratio = y / x
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), rtol=1e-4)  # one factor per sample


def test_jitter_and_noise_std():
    x = torch.zeros(64, 4, 1000)
    assert abs(float(Jitter(p=1.0, sigma=0.1)(x, make_generator(0)).std()) - 0.1) < 0.002
    assert abs(float(GaussianNoise(p=1.0)(x, make_generator(0)).std()) - 1e-3) < 2e-5


def test_channel_dropout_never_empties_and_always_drops():
    x = _data((512, C, T)) + 5.0  # no natural zeros
    for prob in (0.0, 0.3, 1.0):
        y = ChannelDropout(p=1.0, drop_prob=prob)(x, make_generator(0))
        zero = (y == 0).all(dim=2)
        assert (zero.sum(1) >= 1).all() and (zero.sum(1) <= C - 1).all()
        assert torch.equal(y[~zero.unsqueeze(-1).expand_as(y)], x[~zero.unsqueeze(-1).expand_as(x)])
        if prob == 1.0:
            assert (zero.sum(1) == C - 1).all()


def test_channel_dropout_groups_drop_together():
    x = _data((512, C, T)) + 5.0
    y = ChannelDropout(p=1.0, drop_prob=0.5, groups=TRIADS)(x, make_generator(0))
    zero = (y == 0).all(dim=2)
    assert torch.equal(zero[:, 0], zero[:, 1]) and torch.equal(zero[:, 0], zero[:, 2])
    assert torch.equal(zero[:, 3], zero[:, 5])
    assert (zero.float().sum(1) < C).all()
    single = _data((4, 1, T))
    assert torch.equal(ChannelDropout(p=1.0, drop_prob=1.0)(single, make_generator(0)), single)


# ---- spectrogram level -------------------------------------------------------------------------


def _runs(mask: torch.Tensor) -> torch.Tensor:
    """Number of contiguous True runs per row of a (B, L) bool mask."""
    m = mask.int()
    return (m.diff(dim=1, prepend=torch.zeros_like(m[:, :1])) == 1).sum(1)


@pytest.mark.parametrize("n_masks,max_width,min_width", [(1, 1, 1), (2, 4, 1), (3, 5, 3), (2, 50, 2)])
def test_masks_respect_count_and_width(n_masks, max_width, min_width):
    x = _data((256, 3, 17, 20)) + 5.0
    for cls, dim, length in ((TimeMasking, -1, 20), (FrequencyMasking, -2, 17)):
        aug = cls(p=1.0, n_masks=n_masks, max_width=max_width, min_width=min_width)
        params = aug.sample(x, make_generator(0))
        mask = params["mask"]
        assert mask.shape == (256, length)
        count = mask.sum(1)
        assert (count >= min(min_width, length)).all() and (count <= min(n_masks * max_width, length)).all()
        assert (_runs(mask) <= n_masks).all() and (_runs(mask) >= 1).all()
        y = aug.apply(x, params)
        zero = (y == 0).all(dim=1).all(dim=1 if dim == -1 else 2)  # (B, L): masked in every channel and bin
        assert torch.equal(zero, mask)
        if n_masks == 1:  # one band: its width is the masked count
            assert (_runs(mask) == 1).all() and (count <= max_width).all() and (count >= min_width).all()


def test_mask_mean_value():
    x = _data(SPEC) + 3.0
    aug = TimeMasking(p=1.0, n_masks=1, max_width=2, value="mean")
    params = aug.sample(x, make_generator(0))
    y = aug.apply(x, params)
    mean = x.mean(dim=(2, 3))
    for b in range(2):
        col = int(params["mask"][b].nonzero()[0])
        assert torch.allclose(y[b, :, :, col], mean[b][:, None].expand(-1, SPEC[2]))


@pytest.mark.parametrize("max_shift", [None, 3])
def test_time_roll_equals_torch_roll(max_shift):
    x = _data(SPEC)
    aug = TimeRoll(p=0.7, max_shift=max_shift)
    params = aug.sample(x, make_generator(0))
    y = aug.apply(x, params)
    shift = params["shift"]
    assert (shift[params["selected"]] != 0).all() and (shift[~params["selected"]] == 0).all()
    if max_shift is not None:
        assert shift.abs().max() <= max_shift
    for b in range(x.shape[0]):
        assert torch.equal(y[b], torch.roll(x[b], int(shift[b]), dims=-1))


def test_cutmix_lambda_and_labels():
    x = _data((64, 3, 17, 20))
    labels = F.one_hot(torch.arange(64) % 5, 5).float()
    aug = CutMix(p=0.6, n_time=4, n_freq=4, time_width=3, freq_width=2)
    out = aug.mix(x, make_generator(0), labels)
    assert (out.partner != torch.arange(64)).all()
    assert torch.equal(torch.sort(out.partner).values, torch.arange(64))
    replaced = (out.x != x).any(dim=1).float().mean(dim=(1, 2))  # random data: partner bins differ
    assert torch.allclose(out.lam, replaced)
    assert ((out.lam > 0) == (out.x != x).flatten(1).any(1)).all()
    assert out.lam.max() < 1
    assert torch.allclose(out.labels.sum(1), torch.ones(64))
    expected = (1 - out.lam)[:, None] * labels + out.lam[:, None] * labels[out.partner]
    assert torch.allclose(out.labels, expected)
    # the replaced content is the partner's
    mask = (out.x != x)
    assert torch.equal(out.x[mask], x[out.partner][mask])
    assert torch.equal(aug(x, make_generator(0)), out.x)
    with pytest.raises(WearspecError, match="one-hot"):
        aug.mix(x, make_generator(0), torch.arange(64))


def test_compose_with_labels_and_one_generator():
    x = _data(SPEC)
    labels = torch.full((SPEC[0], 4), 0.25)
    pipe = Compose([TimeRoll(p=1.0), CutMix(p=1.0), GaussianNoise(p=1.0)])
    y1, l1 = pipe.forward_with_labels(x, labels, make_generator(0))
    assert torch.equal(y1, pipe(x, make_generator(0)))
    assert torch.allclose(l1, labels) and len(pipe.transforms) == 3
    assert torch.equal(Compose([])(x, make_generator(0)), x)


# ---- config, factories, errors -------------------------------------------------------------------


def test_config_defaults_and_builders():
    cfg = AugmentConfig()
    cfg.validate()
    sensor = build_sensor_augment(cfg, channels=CHANNELS)
    names = [type(t).__name__ for t in sensor.transforms]
    assert names[0] == "RandomRotation3D" and sensor.transforms[0].triads == TRIADS
    spec = build_spec_augment(cfg)
    assert "CutMix" not in [type(t).__name__ for t in spec.transforms]  # off by default (SSL)
    x = _data((B, 6, T))
    assert build_sensor_augment(cfg, channels=CHANNELS[:6])(x, make_generator(0)).shape == x.shape
    off = {k: 0.0 for k in vars(cfg) if k.endswith("_p")}
    assert len(build_sensor_augment(AugmentConfig(**off)).transforms) == 0
    assert len(build_spec_augment(AugmentConfig(**off)).transforms) == 0
    with pytest.warns(UserWarning, match="triads"):
        pipe = build_sensor_augment(cfg, channels=["audio"])
    assert "RandomRotation3D" not in [type(t).__name__ for t in pipe.transforms]
    with pytest.raises(WearspecError, match="channel names or triads"):
        build_sensor_augment(cfg)
    drop = build_sensor_augment(AugmentConfig(channel_dropout_p=0.5), triads=TRIADS).transforms[-1]
    assert isinstance(drop, ChannelDropout) and drop.groups == [list(t) for t in TRIADS]


def test_config_loads_through_typed_config_and_validates():
    cfg = from_dict(AugmentConfig, {"rotation_p": 0, "time_roll_max": 4, "cutmix_p": 0.5})
    assert cfg.rotation_p == 0.0 and cfg.time_roll_max == 4
    with pytest.raises(WearspecError, match="jitter_p"):
        from_dict(AugmentConfig, {"jitter_p": 1.5})
    with pytest.raises(WearspecError, match="time_mask_width"):
        from_dict(AugmentConfig, {"time_mask_width": 0})


def test_bad_arguments_raise_wearspec_errors():
    with pytest.raises(WearspecError):
        RandomRotation3D([(0, 1)])
    with pytest.raises(WearspecError):
        RandomRotation3D([(0, 1, 2), (2, 3, 4)])
    with pytest.raises(WearspecError):
        Jitter(p=2.0)
    with pytest.raises(WearspecError, match="channels"):
        RandomRotation3D([(4, 5, 6)], p=1.0)(_data((2, 3, 8)), make_generator(0))
    with pytest.raises(WearspecError, match="dims"):
        CutMix()(_data((2, 8)), make_generator(0))


def test_large_batch_smoke():
    """4096 windows through both pipelines (a smoke run: no timing assertion)."""
    g = make_generator(0)
    cfg = AugmentConfig(cutmix_p=0.5, channel_dropout_p=0.2)
    x = _data((4096, 6, 250))
    y = build_sensor_augment(cfg, channels=CHANNELS[:6])(x, g)
    assert y.shape == x.shape and torch.isfinite(y).all()
    s = _data((4096, 6, 17, 25))
    z = build_spec_augment(cfg)(s, g)
    assert z.shape == s.shape and torch.isfinite(z).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name,factory,shape", ALL, ids=IDS)
def test_runs_on_cuda(name, factory, shape):
    x = _data(shape, device="cuda")
    aug = factory(0.7)
    a, b = aug(x, make_generator(0, "cuda")), aug(x, make_generator(0, "cuda"))
    assert a.device.type == "cuda" and a.shape == x.shape and torch.equal(a, b)
    with pytest.raises(WearspecError, match="generator"):
        aug(x, make_generator(0, "cpu"))
