"""SpectrogramFrontend: agreement with torch.stft / torchaudio, gradients, normalisation, ONNX export."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchaudio

from wearspec.data.frontend import SpectrogramFrontend
from wearspec.errors import WearspecError

TOL = 1e-5
# ops TensorRT 10.3 parses and that a conv-DFT front end needs; no STFT / DFT
ALLOWED_OPS = {"Conv", "Mul", "Add", "Sub", "Div", "Sqrt", "Log", "Pad", "Slice", "Reshape", "Transpose", "Concat",
               "Unsqueeze", "Squeeze", "Shape", "Gather", "Constant", "ConstantOfShape", "MatMul", "Max", "Clip",
               "Pow", "Identity", "Cast", "Expand", "Neg"}


def _signal(b: int = 3, c: int = 4, t: int = 400, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    time = torch.arange(t) / 50.0
    tone = torch.sin(2 * torch.pi * 3.0 * time) + 0.5 * torch.sin(2 * torch.pi * 11.0 * time)
    return tone + 0.3 * torch.randn(b, c, t, generator=g)


def _stft_ref(x: torch.Tensor, fe: SpectrogramFrontend) -> torch.Tensor:
    """Reference (B, C, F, N) from torch.stft with the front end's settings."""
    win = (torch.hann_window if fe.window == "hann" else torch.hamming_window)(fe.win_length)
    z = torch.stft(x.reshape(-1, x.shape[-1]), fe.n_fft, fe.hop_length, fe.win_length, win, center=fe.center,
                   pad_mode=fe.pad_mode, onesided=True, return_complex=True)
    return (z.abs() ** fe.power).reshape(x.shape[0], x.shape[1], *z.shape[-2:])


def _assert_close(a: torch.Tensor, b: torch.Tensor, power: float = 2.0) -> None:
    """max|a-b| / max|b| ≤ TOL, and elementwise |a-b|/|b| ≤ TOL on bins above 1 % of the peak power."""
    assert a.shape == b.shape, (a.shape, b.shape)
    a, b = a.double(), b.double()
    err = (a - b).abs()
    assert err.max() / b.abs().max() <= TOL, float(err.max() / b.abs().max())
    big = b.abs() >= 0.01 ** (1 / power) * b.abs().max()
    assert big.sum() > 0
    assert (err[big] / b.abs()[big]).max() <= TOL, float((err[big] / b.abs()[big]).max())


STFT_CASES = [
    dict(n_fft=64, hop_length=16),
    dict(n_fft=64, hop_length=16, power=1.0),
    dict(n_fft=64, hop_length=16, center=False),
    dict(n_fft=64, hop_length=8, pad_mode="constant", power=1.0),
    dict(n_fft=64, hop_length=16, win_length=40, window="hamming"),
    dict(n_fft=63, hop_length=10, win_length=31, center=False, power=1.0),  # odd n_fft, odd window
    dict(n_fft=128, hop_length=25, window="hamming", pad_mode="constant"),
    dict(n_fft=2, hop_length=1),
]


@pytest.mark.parametrize("cfg", STFT_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_matches_torch_stft(cfg):
    fe = SpectrogramFrontend(**cfg)
    x = _signal()
    out = fe(x)
    assert out.shape == (3, 4, fe.n_freqs, fe.n_frames(400)) and out.dtype == torch.float32
    _assert_close(out, _stft_ref(x, fe), fe.power)


@pytest.mark.parametrize("power", [1.0, 2.0])
@pytest.mark.parametrize("center", [True, False])
def test_matches_torchaudio_spectrogram(power, center):
    fe = SpectrogramFrontend(n_fft=50, hop_length=12, win_length=48, power=power, center=center)
    ta = torchaudio.transforms.Spectrogram(n_fft=50, hop_length=12, win_length=48, power=power, center=center)
    x = _signal(2, 6, 333)
    _assert_close(fe(x), ta(x), power)


@pytest.mark.parametrize("norm,scale", [(None, "htk"), ("slaney", "slaney")])
@pytest.mark.parametrize("power", [1.0, 2.0])
def test_mel_matches_torchaudio(norm, scale, power):
    kw = dict(n_fft=64, hop_length=16, power=power, n_mels=20, f_min=0.5, f_max=24.0)
    fe = SpectrogramFrontend(**kw, sample_rate=50.0, mel_norm=norm, mel_scale=scale)
    ta = torchaudio.transforms.MelSpectrogram(sample_rate=50, **kw, norm=norm, mel_scale=scale)
    x = _signal(2, 3, 300)
    out = fe(x)
    assert out.shape == (2, 3, 20, fe.n_frames(300)) and fe.n_freqs == 20
    ref = ta(x)
    err = (out - ref).abs().max() / ref.abs().max()
    assert err <= TOL, float(err)


def test_log_variants_match_formula():
    x = _signal()
    x[0, 0] = 0.0  # an exactly zero spectrum: the floor matters
    for power in (1.0, 2.0):
        kw = dict(n_fft=32, hop_length=8, power=power)
        lin = SpectrogramFrontend(**kw)(x)
        ref = _stft_ref(x, SpectrogramFrontend(**kw))
        big = ref >= 0.01 ** (1 / power) * ref.max()  # log turns relative error into absolute error
        out = SpectrogramFrontend(**kw, log="log1p")(x)
        assert torch.allclose(out, torch.log1p(lin), rtol=1e-6, atol=1e-7)
        assert (out - torch.log1p(ref))[big].abs().max() <= TOL
        out = SpectrogramFrontend(**kw, log="log", log_floor=1e-6)(x)
        assert torch.allclose(out, torch.log(lin.clamp_min(1e-6)), rtol=1e-6, atol=1e-7)
        assert (out - torch.log(ref))[big].abs().max() <= TOL
        assert torch.all(out[0, 0] == np.float32(np.log(np.float32(1e-6))))  # log(max(0, floor))
        assert out.min() >= np.log(1e-6) - 1e-6


@pytest.mark.parametrize("cfg", [dict(power=1.0), dict(power=1.0, log="log"), dict(power=2.0, log="log1p"),
                                 dict(power=1.0, log="log", n_mels=8, sample_rate=50.0)])
def test_gradient_finite_including_zero_window(cfg):
    fe = SpectrogramFrontend(n_fft=32, hop_length=8, **cfg)
    x = _signal(2, 3, 128).requires_grad_()
    with torch.no_grad():
        x[1, 2] = 0.0  # an all-zero channel window: |X| = 0 everywhere there
    fe(x).square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0].abs().sum() > 0


def test_gradcheck_float64():
    fe = SpectrogramFrontend(n_fft=8, hop_length=2, power=1.0, log="log1p")
    x = torch.randn(1, 2, 20, dtype=torch.float64, requires_grad=True)
    assert fe(x).dtype == torch.float64
    assert torch.autograd.gradcheck(fe, (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_autocast_keeps_float32():
    fe = SpectrogramFrontend(n_fft=32, hop_length=8, log="log1p")
    x = _signal()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fe(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, fe(x), rtol=0, atol=1e-6)


def test_shapes_non_square():
    for cfg, t in [(dict(n_fft=64, hop_length=16), 1000), (dict(n_fft=32, hop_length=4, center=False), 200),
                   (dict(n_fft=128, hop_length=10, n_mels=40, sample_rate=100.0), 640)]:
        fe = SpectrogramFrontend(**cfg)
        out = fe(torch.randn(2, 5, t))
        assert out.shape == (2, *fe.output_shape(5, t))
    assert SpectrogramFrontend(n_fft=64, hop_length=16).output_shape(6, 1000) == (6, 33, 63)


def test_bad_arguments_and_inputs():
    for bad in (dict(n_fft=1), dict(win_length=100), dict(window="blackman"), dict(power=3.0), dict(log="db"),
                dict(pad_mode="circular"), dict(n_mels=10), dict(n_mels=10, sample_rate=50.0, f_max=40.0)):
        with pytest.raises(WearspecError):
            SpectrogramFrontend(**bad)
    fe = SpectrogramFrontend(n_fft=64, n_channels=3)
    with pytest.raises(WearspecError, match="shape"):
        fe(torch.randn(3, 100))
    with pytest.raises(WearspecError, match="channels"):
        fe(torch.randn(2, 4, 100))
    with pytest.raises(WearspecError, match="reflect"):
        fe(torch.randn(2, 3, 20))
    with pytest.raises(WearspecError, match="unknown keys"):
        SpectrogramFrontend.from_config({"n_fft": 64, "hop": 16})


def test_config_round_trip():
    fe = SpectrogramFrontend(n_fft=48, hop_length=12, win_length=40, window="hamming", power=1.0, log="log",
                             n_mels=12, sample_rate=50.0, channel_names=["ax", "ay", "az"])
    cfg = fe.config()
    assert cfg["n_channels"] == 3 and cfg["channel_names"] == ["ax", "ay", "az"]
    again = SpectrogramFrontend.from_config(cfg)
    assert again.config() == cfg
    x = _signal(2, 3, 200)
    assert torch.equal(again(x), fe(x))


def _direct_stats(fe: SpectrogramFrontend, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = fe.spectrogram(x).double()
    return s.mean(dim=(0, 2, 3)), s.std(dim=(0, 2, 3), unbiased=False)


def test_fit_over_batches_equals_direct_stats():
    fe = SpectrogramFrontend(n_fft=32, hop_length=8, log="log1p")
    x = _signal(10, 4, 256) * torch.tensor([1.0, 5.0, 0.1, 20.0])[:, None] + torch.tensor([0, 1, -2, 9.0])[:, None]
    mean, std = _direct_stats(fe, x)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.arange(10)), batch_size=3)
    assert not fe.fitted
    fe.fit(loader)  # (x, y) tuples of uneven sizes 3, 3, 3, 1
    assert fe.fitted and fe.n_channels == 4
    assert torch.allclose(fe.norm_mean.double(), mean, rtol=1e-6)
    assert torch.allclose(fe.norm_std.double(), std, rtol=1e-6)
    for data in (x, x.numpy(), [{"x": x[:5]}, {"x": x[5:]}]):  # whole tensor, array, dict batches
        other = SpectrogramFrontend(n_fft=32, hop_length=8, log="log1p").fit(data)
        assert torch.allclose(other.norm_mean, fe.norm_mean, rtol=1e-6)
        assert torch.allclose(other.norm_std, fe.norm_std, rtol=1e-6)
    out = fe(x).double()
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (out.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-5
    assert fe.fit([x[:2]], max_batches=1).fitted
    with pytest.raises(WearspecError, match="no data"):
        SpectrogramFrontend(n_fft=32).fit([])


def test_stats_travel_in_state_dict():
    fe = SpectrogramFrontend(n_fft=32, hop_length=8, log="log", normalize=True).fit(_signal(6, 4, 256))
    sd = fe.state_dict()
    assert {"norm_mean", "norm_std", "norm_fitted"} <= set(sd) and sd["norm_mean"].shape == (4,)
    assert "dft_basis" not in sd  # recomputed from the hyper-parameters
    x = _signal(2, 4, 256, seed=1)
    for fresh in (SpectrogramFrontend(n_fft=32, hop_length=8, log="log"),  # unsized: resized on load
                  SpectrogramFrontend.from_config(fe.config())):
        assert not fresh.fitted
        fresh.load_state_dict(sd)
        assert fresh.fitted and torch.equal(fresh.norm_mean, fe.norm_mean)
        assert torch.equal(fresh(x), fe(x))
    raw = SpectrogramFrontend(n_fft=32, hop_length=8, log="log", normalize=False)
    raw.load_state_dict(sd)
    assert torch.equal(raw(x), fe.spectrogram(x))
    with pytest.raises(RuntimeError):  # a sized module refuses statistics for other channels
        SpectrogramFrontend(n_fft=32, hop_length=8, n_channels=3).load_state_dict(sd)


ONNX_CASES = {
    "power-reflect": dict(n_fft=64, hop_length=16),
    "mel-log-norm": dict(n_fft=64, hop_length=16, win_length=48, power=1.0, log="log", n_mels=16,
                         sample_rate=50.0, pad_mode="constant"),
    "log1p-nocenter-odd": dict(n_fft=33, hop_length=8, window="hamming", center=False, log="log1p"),
}


def _export(fe: SpectrogramFrontend, path, dynamo: bool):
    x = _signal(2, 6, 500)
    kw = (dict(dynamic_shapes={"x": {0: torch.export.Dim("batch")}}) if dynamo
          else dict(dynamic_axes={"x": {0: "batch"}, "spec": {0: "batch"}}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, still best here
        torch.onnx.export(fe.eval(), (x,), str(path), input_names=["x"], output_names=["spec"], opset_version=17,
                          dynamo=dynamo, **kw)


def _check_onnx(fe: SpectrogramFrontend, path) -> None:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    ops = [n.op_type for n in model.graph.node]
    assert set(ops) <= ALLOWED_OPS, set(ops) - ALLOWED_OPS
    assert ops.count("Conv") == 1  # the whole STFT is one convolution
    assert not set(ops) & {"STFT", "DFT", "MelWeightMatrix"}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        x = _signal(b, 6, 500, seed=b)
        got = sess.run(None, {"x": x.numpy()})[0]
        want = fe(x).numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= TOL * max(np.abs(want).max(), 1.0)


@pytest.mark.parametrize("name", list(ONNX_CASES))
def test_onnx_export_torchscript_opset17(name, tmp_path):
    fe = SpectrogramFrontend(**ONNX_CASES[name])
    if name == "mel-log-norm":
        fe.fit(_signal(8, 6, 500, seed=7))
    path = tmp_path / f"{name}.onnx"
    _export(fe, path, dynamo=False)
    _check_onnx(fe, path)


@pytest.mark.slow
def test_onnx_export_dynamo(tmp_path):
    fe = SpectrogramFrontend(**ONNX_CASES["mel-log-norm"]).fit(_signal(8, 6, 500, seed=7))
    path = tmp_path / "dynamo.onnx"
    _export(fe, path, dynamo=True)
    _check_onnx(fe, path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    fe = SpectrogramFrontend(n_fft=64, hop_length=16, power=1.0, log="log", n_mels=16, sample_rate=50.0)
    x = _signal(4, 6, 1000)
    fe.fit(x)
    want = fe(x)
    fe_gpu = fe.to("cuda")
    got = fe_gpu(x.cuda())
    assert got.device.type == "cuda"
    assert (got.cpu() - want).abs().max() <= TOL * want.abs().max()
    ref = _stft_ref(x, SpectrogramFrontend(n_fft=64, hop_length=16))
    _assert_close(SpectrogramFrontend(n_fft=64, hop_length=16).cuda()(x.cuda()).cpu(), ref)


@pytest.mark.parametrize("cfg", [dict(n_fft=64, hop_length=16), dict(n_fft=63, hop_length=7, power=1.0),
                                 dict(n_fft=2, hop_length=1, pad_mode="constant"),
                                 dict(n_fft=32, hop_length=8, power=1.0, log="log", n_mels=8, sample_rate=50.0)])
def test_cpu_inference_path_equals_autograd_path(cfg):
    """Without autograd the CPU forward runs in chunks written in place; it must equal the graph path."""
    fe = SpectrogramFrontend(**cfg)
    fe.cpu_chunk_elems = 3000  # many chunks and a ragged last one
    x = _signal(40, 7, 300)
    with torch.inference_mode():
        fast = fe(x)
    graph = fe(x.clone().requires_grad_())
    assert graph.requires_grad and not fast.requires_grad
    assert torch.allclose(fast, graph.detach(), rtol=1e-6, atol=1e-7)
