"""Spectrogram front end: raw sensor windows (B, C, T) → spectrograms (B, C, F, N), on the device.

The STFT is one strided ``Conv1d`` whose kernels are a windowed real DFT basis, applied to every channel
at once by folding the channels into the batch, (B, C, T) → (B·C, 1, T). It equals ``torch.stft`` /
``torchaudio`` to ~1e-7 (relative to the peak), is differentiable, and exports to ONNX with plain ops
(Slice, Concat, Conv, Mul, Add, Clip, Sqrt, MatMul, Log, …), no STFT/DFT op, so TensorRT parses it and a
deployed engine takes raw windows. The basis is *compact*: ``n_fft`` kernels (cosine rows of bins 0…F-1,
sine rows of bins 1…K), not 2·F, because the sine rows of DC and Nyquist are identically zero; for
``n_fft=64`` that is 64 SIMD-aligned output channels instead of 66 (a ~15 % faster convolution on CPU).

Pipeline (F = ``n_fft // 2 + 1`` or ``n_mels``; N = :meth:`SpectrogramFrontend.n_frames`):
(B, C, T) → centre padding → Conv1d (B·C, n_fft, N) → |X|² (B·C, F_stft, N) → sqrt if ``power=1`` → mel
→ log → (B, C, F, N) → per-channel ``(x - mean) / std`` once fitted.

Numerical choices:
* magnitude is ``sqrt(max(|X|², 1e-30))``: the gradient at an exactly zero bin is 0 instead of NaN, and
  a magnitude changes by at most 1e-15 (absolute);
* ``log="log"`` is ``log(max(x, log_floor))`` (not ``log(x + log_floor)``): values above the floor are
  exact, the output is bounded below by ``log(log_floor)``, the gradient below the floor is 0;
  ``log="log1p"`` is ``log(1 + x)``;
* fitted statistics are the population mean and standard deviation per channel over (batch, F, N),
  merged in float64; a standard deviation below 1e-8 is raised to 1e-8 (constant channels);
* computation is float32 (float64 for float64 input), also under autocast, and on CUDA without TF32
  (cuDNN would otherwise round the convolution to ~1e-3): keep the module in float32, no ``.half()``;
* on CPU without autograd the same ops run in cache-sized chunks written in place (1.3-4× faster: no
  ~50 MB of fresh buffers per batch); export, autograd and GPUs see the single-convolution graph.
"""

from __future__ import annotations

import inspect
import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wearspec.errors import WearspecError

WINDOWS = ("hann", "hamming")
PAD_MODES = ("reflect", "constant")
LOGS = ("none", "log1p", "log")
MAG_EPS = 1e-30  # clamp of |X|² before sqrt: finite gradient at 0, ≤ 1e-15 change in magnitude
STD_FLOOR = 1e-8


class SpectrogramFrontend(nn.Module):
    """Batched conv-DFT spectrogram of multi-channel windows: (B, C, T) float → (B, C, F, N) float32.

    Args:
        n_fft: DFT size (samples per frame), ≥ 2. F = ``n_fft // 2 + 1`` one-sided bins.
        hop_length: frame step in samples (default ``n_fft // 4``).
        win_length: window length ≤ ``n_fft`` (default ``n_fft``); a shorter window is zero-padded on
            both sides to ``n_fft``, centred as ``torch.stft`` does.
        window: ``"hann"`` or ``"hamming"``, periodic (as ``torch.hann_window``'s default).
        center: pad ``n_fft // 2`` samples on both sides so frame n is centred on sample n·hop.
        pad_mode: ``"reflect"`` or ``"constant"`` (zeros) padding when ``center``.
        power: 1.0 magnitude |X| or 2.0 power |X|².
        log: ``"none"``, ``"log1p"`` (log(1 + x)) or ``"log"`` (log(max(x, log_floor))).
        log_floor: floor of ``log="log"``.
        n_mels: 0 (linear frequency) or the number of mel bands F, from ``torchaudio.functional.
            melscale_fbanks(sample_rate, f_min, f_max (default sample_rate/2), mel_norm, mel_scale)``
            (torchaudio's meanings and defaults) applied to the power/magnitude spectrum.
        normalize: apply the fitted per-channel normalisation in :meth:`forward` (once :meth:`fit`).
        n_channels: channel count C, if known (sizes the statistics buffers; else set by :meth:`fit`).
        channel_names: optional channel names (their order is part of the model's contract).
    """

    cpu_chunk_elems = 1 << 19  # conv outputs per chunk of the CPU inference path (2 MB: cache-sized)

    def __init__(self, n_fft: int = 64, hop_length: int | None = None, win_length: int | None = None,
                 window: str = "hann", center: bool = True, pad_mode: str = "reflect", power: float = 2.0,
                 log: str = "none", log_floor: float = 1e-6, n_mels: int = 0, sample_rate: float | None = None,
                 f_min: float = 0.0, f_max: float | None = None, mel_norm: str | None = None,
                 mel_scale: str = "htk", normalize: bool = True, n_channels: int | None = None,
                 channel_names: Sequence[str] | None = None):
        super().__init__()
        hop_length = n_fft // 4 if hop_length is None else hop_length
        win_length = n_fft if win_length is None else win_length
        _check(isinstance(n_fft, int) and n_fft >= 2, "n_fft", "an integer ≥ 2", n_fft)
        _check(isinstance(hop_length, int) and hop_length >= 1, "hop_length", "an integer ≥ 1", hop_length)
        _check(isinstance(win_length, int) and 1 <= win_length <= n_fft, "win_length", f"1…{n_fft}", win_length)
        _check(window in WINDOWS, "window", " or ".join(WINDOWS), window)
        _check(pad_mode in PAD_MODES, "pad_mode", " or ".join(PAD_MODES), pad_mode)
        _check(power in (1.0, 2.0), "power", "1.0 (magnitude) or 2.0 (power)", power)
        _check(log in LOGS, "log", ", ".join(LOGS), log)
        _check(log_floor > 0, "log_floor", "> 0", log_floor)
        _check(isinstance(n_mels, int) and n_mels >= 0, "n_mels", "an integer ≥ 0", n_mels)
        _check(mel_norm in (None, "slaney") and mel_scale in ("htk", "slaney"), "mel_norm/mel_scale",
               "None or 'slaney' / 'htk' or 'slaney'", (mel_norm, mel_scale))
        if channel_names is not None:
            channel_names = [str(c) for c in channel_names]
            _check(n_channels in (None, len(channel_names)), "n_channels", "len(channel_names)", n_channels)
            n_channels = len(channel_names)
        _check(n_channels is None or (isinstance(n_channels, int) and n_channels >= 1), "n_channels", "≥ 1",
               n_channels)
        self.n_fft, self.hop_length, self.win_length, self.window = n_fft, hop_length, win_length, window
        self.center, self.pad_mode, self.power, self.log = center, pad_mode, float(power), log
        self.log_floor = float(log_floor)
        self.n_mels, self.f_min, self.mel_norm, self.mel_scale = n_mels, float(f_min), mel_norm, mel_scale
        self.sample_rate = None if sample_rate is None else float(sample_rate)
        self.f_max = None if f_max is None else float(f_max)
        self.normalize, self.n_channels, self.channel_names = bool(normalize), n_channels, channel_names
        self.register_buffer("dft_basis", self._dft_basis(), persistent=False)  # (n_fft, 1, n_fft)
        if n_mels:
            self.register_buffer("mel_fb", self._mel_fb(), persistent=False)  # (n_mels, F_stft)
        c = n_channels or 0
        self.register_buffer("norm_mean", torch.zeros(c))  # (C,) persistent: travels in checkpoints
        self.register_buffer("norm_std", torch.ones(c))  # (C,)
        self.register_buffer("norm_fitted", torch.tensor(False))
        self._fitted = False  # Python mirror of norm_fitted, so tracing/export sees a constant

    # ---- construction helpers -------------------------------------------------------------------
    def _dft_basis(self) -> torch.Tensor:
        """Compact windowed real-DFT kernels (n_fft, 1, n_fft): cos rows 0…F-1, then -sin rows 1…K."""
        n, f = self.n_fft, self.n_fft // 2 + 1
        fn = torch.hann_window if self.window == "hann" else torch.hamming_window
        w = fn(self.win_length, periodic=True, dtype=torch.float64)
        left = (n - self.win_length) // 2
        w = F.pad(w, (left, n - self.win_length - left))
        t = torch.arange(n, dtype=torch.float64)
        k = torch.arange(f, dtype=torch.float64)[:, None]
        ang = 2 * math.pi * torch.remainder(k * t, n) / n  # exact integer phase before scaling
        k_sin = (n - 1) // 2  # K: bins 1…K have a non-zero sine row (F-2 for even n_fft, F-1 for odd)
        basis = torch.cat([torch.cos(ang) * w, -torch.sin(ang[1:k_sin + 1]) * w])
        return basis.to(torch.float32)[:, None, :]

    def _mel_fb(self) -> torch.Tensor:
        _check(self.sample_rate is not None and self.sample_rate > 0, "sample_rate", "> 0 with n_mels",
               self.sample_rate)
        f_max = self.sample_rate / 2 if self.f_max is None else self.f_max
        _check(0 <= self.f_min < f_max <= self.sample_rate / 2, "f_min/f_max",
               f"0 ≤ f_min < f_max ≤ sample_rate/2 = {self.sample_rate / 2}", (self.f_min, f_max))
        from torchaudio.functional import melscale_fbanks  # lazy: only the mel variant needs it

        fb = melscale_fbanks(self.n_fft // 2 + 1, self.f_min, f_max, self.n_mels, self.sample_rate,
                             norm=self.mel_norm, mel_scale=self.mel_scale)  # (F_stft, n_mels)
        return fb.T.contiguous().to(torch.float32)

    def config(self) -> dict[str, Any]:
        """The hyper-parameters as a JSON-able dict; ``from_config(config())`` rebuilds the module."""
        keys = ("n_fft", "hop_length", "win_length", "window", "center", "pad_mode", "power", "log",
                "log_floor", "n_mels", "sample_rate", "f_min", "f_max", "mel_norm", "mel_scale", "normalize",
                "n_channels", "channel_names")
        cfg = {k: getattr(self, k) for k in keys}
        cfg["channel_names"] = None if self.channel_names is None else list(self.channel_names)
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SpectrogramFrontend":
        """Rebuild from :meth:`config`; load a ``state_dict`` afterwards to restore the statistics."""
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise WearspecError(f"frontend config: unknown keys {unknown}; expected some of {sorted(allowed)}")
        return cls(**config)

    # ---- shapes ---------------------------------------------------------------------------------
    @property
    def n_freqs(self) -> int:
        """F: number of output frequency rows (``n_mels`` if mel, else ``n_fft // 2 + 1``)."""
        return self.n_mels or self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """N: number of output frames for a window of ``n_samples`` samples."""
        pad = 2 * (self.n_fft // 2) if self.center else 0
        return (n_samples + pad - self.n_fft) // self.hop_length + 1

    def output_shape(self, n_channels: int, n_samples: int) -> tuple[int, int, int]:
        """(C, F, N) for input windows of shape (C, T)."""
        return n_channels, self.n_freqs, self.n_frames(n_samples)

    # ---- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B, C, F, N) float32 (float64 for float64 input), normalised once fitted."""
        spec = self.spectrogram(x)
        if self.normalize and self._fitted:
            mean = self.norm_mean.to(spec.dtype)[:, None, None]
            std = self.norm_std.to(spec.dtype)[:, None, None]
            spec = (spec - mean) / std
        return spec

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) → (B, C, F, N), without the normalisation (power/magnitude, mel, log)."""
        if not torch.jit.is_tracing():  # shapes are fixed while exporting; checking them there only warns
            self._check_input(x)
        with _full_precision(x.device):
            return self._spectrogram(x)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3:
            raise WearspecError(f"frontend: expected input of shape (B, C, T), got {tuple(x.shape)}")
        if self.n_channels is not None and x.shape[1] != self.n_channels:
            raise WearspecError(f"frontend: input has {x.shape[1]} channels, expected {self.n_channels}")
        t, p = x.shape[-1], (self.n_fft // 2 if self.center else 0)
        if self.center and self.pad_mode == "reflect" and t <= p:
            raise WearspecError(f"frontend: reflect padding needs T > n_fft // 2 = {p}, got T = {t}")
        if t + 2 * p < self.n_fft:
            raise WearspecError(f"frontend: window of {t} samples is too short for n_fft = {self.n_fft}")

    def _spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        if x.dtype != dtype:
            x = x.to(dtype)
        basis = self.dft_basis if self.dft_basis.dtype == dtype else self.dft_basis.to(dtype)
        n_samples = x.shape[-1]
        y = x.reshape(x.shape[0] * x.shape[1], 1, n_samples)  # (B·C, 1, T): one conv for all channels
        pad = 0
        if self.center and self.pad_mode == "reflect":  # as F.pad(mode="reflect"), 5× faster; Slice + Concat
            p = self.n_fft // 2
            y = torch.cat([y[..., 1:p + 1].flip(-1), y, y[..., -p - 1:-1].flip(-1)], dim=-1)
        elif self.center:  # zeros: the convolution's own padding (a Conv attribute in ONNX)
            pad = self.n_fft // 2
        if y.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled()) \
                and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            spec = self._power_cpu_inference(y, basis, pad)
        else:  # the graph that autograd, GPUs and ONNX see
            z = F.conv1d(y, basis, stride=self.hop_length, padding=pad)  # (B·C, n_fft, N): cos, then sin rows
            sq, f, k = z * z, self.n_fft // 2 + 1, (self.n_fft - 1) // 2
            parts = [sq[:, :1]]  # DC: cos² only
            if k:
                parts.append(sq[:, 1:k + 1] + sq[:, f:])  # bins 1…K: cos² + sin²
            if k + 1 < f:
                parts.append(sq[:, k + 1:f])  # Nyquist (even n_fft): cos² only
            spec = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (B·C, F_stft, N) = |X|²
            if self.power == 1.0:
                spec = torch.sqrt(torch.clamp_min(spec, MAG_EPS))
        spec = spec.reshape(x.shape[0], x.shape[1], spec.shape[-2], spec.shape[-1])  # (B, C, F_stft, N)
        if self.n_mels:
            fb = self.mel_fb if self.mel_fb.dtype == dtype else self.mel_fb.to(dtype)
            spec = torch.matmul(fb, spec)  # (n_mels, F_stft) @ (B, C, F_stft, N) → (B, C, n_mels, N)
        if self.log == "log1p":
            spec = torch.log1p(spec)
        elif self.log == "log":
            spec = torch.log(torch.clamp_min(spec, self.log_floor))
        return spec

    def _power_cpu_inference(self, y: torch.Tensor, basis: torch.Tensor, pad: int) -> torch.Tensor:
        """|X|^power (B·C, F_stft, N) like the graph path, without autograd, chunk by chunk in place."""
        f, k = self.n_fft // 2 + 1, (self.n_fft - 1) // 2
        n = (y.shape[-1] + 2 * pad - self.n_fft) // self.hop_length + 1
        out = torch.empty(y.shape[0], f, n, dtype=y.dtype, device=y.device)
        rows = max(1, self.cpu_chunk_elems // (self.n_fft * n))
        for y_c, o in zip(y.split(rows), out.split(rows)):
            z = F.conv1d(y_c, basis, stride=self.hop_length, padding=pad).square_()
            o[:, 0] = z[:, 0]
            if k:
                torch.add(z[:, 1:k + 1], z[:, f:], out=o[:, 1:k + 1])
            if k + 1 < f:
                o[:, k + 1:] = z[:, k + 1:f]
            if self.power == 1.0:
                o.clamp_min_(MAG_EPS).sqrt_()
        return out

    # ---- normalisation --------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, data: torch.Tensor | Iterable[Any], max_batches: int | None = None,
            chunk: int = 256) -> "SpectrogramFrontend":
        """Fit the per-channel mean/std of :meth:`spectrogram` output over (batch, F, N).

        ``data``: a tensor/array (B, C, T) or an iterable of batches (a DataLoader): each batch a
        tensor/array (B, C, T), a tuple/list whose first item is one, or a dict with key ``"x"``.
        Statistics are merged batch by batch in float64 (Chan's parallel update), so any number of
        batches works. Returns ``self``.
        """
        device = self.dft_basis.device
        if isinstance(data, torch.Tensor) or hasattr(data, "__array__"):
            whole = torch.as_tensor(data)
            data = (whole[i:i + chunk] for i in range(0, max(whole.shape[0], 1), chunk))
        count, mean, m2 = 0, None, None
        for i, batch in enumerate(data):
            if max_batches is not None and i >= max_batches:
                break
            batch = batch["x"] if isinstance(batch, dict) else batch[0] if isinstance(batch, (tuple, list)) else batch
            s = self.spectrogram(torch.as_tensor(batch).to(device)).to(torch.float64)  # (B, C, F, N)
            if not torch.isfinite(s).all():
                raise WearspecError(f"frontend.fit: batch {i} gives non-finite spectrogram values")
            if mean is not None and s.shape[1] != mean.numel():
                raise WearspecError(f"frontend.fit: batch {i} has {s.shape[1]} channels, expected {mean.numel()}")
            if (n := s.numel() // s.shape[1]) == 0:
                continue
            if mean is None:
                mean, m2 = s.new_zeros(s.shape[1]), s.new_zeros(s.shape[1])
            b_mean = s.mean(dim=(0, 2, 3))
            delta, total = b_mean - mean, count + n
            m2 = m2 + ((s - b_mean[:, None, None]) ** 2).sum(dim=(0, 2, 3)) + delta ** 2 * (count * n / total)
            mean, count = mean + delta * (n / total), total
        if mean is None:
            raise WearspecError("frontend.fit: no data (expected at least one non-empty batch (B, C, T))")
        self.set_normalization(mean, torch.sqrt(m2 / count))
        return self

    def set_normalization(self, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]) -> None:
        """Set the per-channel statistics (C,) directly (e.g. from a bundle) and mark the module fitted."""
        mean = torch.as_tensor(mean, dtype=torch.float64).flatten()
        std = torch.as_tensor(std, dtype=torch.float64).flatten().clamp_min(STD_FLOOR)
        if mean.shape != std.shape or (self.n_channels is not None and mean.numel() != self.n_channels):
            raise WearspecError(f"frontend: normalisation needs mean and std of shape ({self.n_channels or 'C'},), "
                                f"got {tuple(mean.shape)} and {tuple(std.shape)}")
        dev = self.norm_mean.device
        self.norm_mean = mean.to(dev, torch.float32)
        self.norm_std = std.to(dev, torch.float32)
        self.norm_fitted = torch.tensor(True, device=dev)
        self.n_channels, self._fitted = mean.numel(), True

    @property
    def fitted(self) -> bool:
        """Whether statistics are set (by :meth:`fit`, :meth:`set_normalization` or ``load_state_dict``)."""
        return self._fitted

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Statistics of an unfitted module have shape (0,): resize to the checkpoint's (C,) before loading.
        for name in ("norm_mean", "norm_std"):
            value = state_dict.get(prefix + name)
            if value is not None and getattr(self, name).shape != value.shape and self.n_channels is None:
                setattr(self, name, torch.empty_like(value, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._fitted = bool(self.norm_fitted)
        if self._fitted:
            self.n_channels = self.norm_mean.numel()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if v is not None) + f", fitted={self._fitted}"


@contextmanager
def ieee_fp32(device: torch.device | str) -> Iterator[None]:
    """On CUDA, float32 convolutions and matmuls in IEEE float32, not TF32 (PyTorch's default for cuDNN
    convolutions), restored after; elsewhere nothing. The front end sets it for itself in eager mode; a
    ``torch.compile``-d graph that contains the front end cannot (flags are not set inside a graph), so run
    such a graph inside it: TF32 would put ~1e-3 relative error into the spectrogram's DFT."""
    if torch.device(device).type != "cuda":
        yield
        return
    conv, mm = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    old = conv.fp32_precision, mm.fp32_precision
    conv.fp32_precision = mm.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, mm.fp32_precision = old


@contextmanager
def _full_precision(device: torch.device) -> Iterator[None]:
    """Plain float32 inside: autocast off; on CUDA and in eager mode, :func:`ieee_fp32`."""
    with ExitStack() as stack:
        if torch.is_autocast_enabled(device.type):
            stack.enter_context(torch.autocast(device.type, enabled=False))
        if not torch.compiler.is_compiling():
            stack.enter_context(ieee_fp32(device))
        yield


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise WearspecError(f"frontend.{name}: expected {expected}, got {got!r}")


def auto_stft(window: int) -> tuple[int, int]:
    """Default (n_fft, hop) for windows of ``window`` samples: a power-of-two ``n_fft`` of about
    1/8 of the window (8…1024) and 75 % overlap, which gives ~32 time frames per window (e.g.
    5 s at 50 Hz → n_fft 32, hop 8, 17 × 32 bins)."""
    n_fft = 2 ** int(round(math.log2(max(8.0, window / 8.0))))
    n_fft = max(8, min(1024, n_fft))
    return n_fft, max(1, n_fft // 4)


@dataclass
class FrontendConfig:
    """Spectrogram settings of a recipe (0 = automatic from the store's window length)."""

    n_fft: int = 0
    hop_length: int = 0
    window: str = "hann"
    power: float = 1.0
    log: str = "log1p"
    n_mels: int = 0
    normalize: bool = True
    fit_windows: int = 2048  # windows used to fit the per-channel normalisation statistics

    def validate(self) -> None:
        _check(self.n_fft >= 0 and self.hop_length >= 0, "n_fft/hop_length", "≥ 0 (0 = auto)",
               (self.n_fft, self.hop_length))
        _check(self.n_mels >= 0, "n_mels", "≥ 0 (0 = linear frequency bins)", self.n_mels)
        _check(self.window in WINDOWS, "window", " or ".join(WINDOWS), self.window)
        _check(self.power in (1.0, 2.0), "power", "1 (magnitude) or 2 (power)", self.power)
        _check(self.log in ("none", "log1p", "log"), "log", "none, log1p or log", self.log)
        _check(self.fit_windows >= 1, "fit_windows", "≥ 1", self.fit_windows)


def build_frontend(cfg: FrontendConfig, rate: float, window: int, channels: Sequence[str]) -> "SpectrogramFrontend":
    """A front end for windows of ``window`` samples at ``rate`` Hz with these channels (unfitted)."""
    cfg.validate()
    n_fft, hop = auto_stft(window)
    n_fft = cfg.n_fft or n_fft
    hop = cfg.hop_length or (n_fft // 4 if cfg.n_fft else hop)
    _check(n_fft <= window, "n_fft", f"at most the window's {window} samples (0 = auto)", n_fft)
    _check(hop <= window, "hop_length", f"at most the window's {window} samples (0 = auto)", hop)
    return SpectrogramFrontend(
        n_fft=n_fft, hop_length=hop, window=cfg.window, power=cfg.power, log=cfg.log, n_mels=cfg.n_mels,
        sample_rate=rate if cfg.n_mels else None, normalize=cfg.normalize, n_channels=len(channels),
        channel_names=list(channels),
    )
