"""How a training run executes: :class:`RuntimeConfig`, mixed precision and the model wrappers.

Runtime settings may change between a run and its resume (unlike the experiment settings, which a resumed run
must repeat). Pretraining and fine-tuning share them; ``knn_every`` is read by pretraining only.

Mixed precision: ``runtime.amp`` is ``auto`` (bf16 where the hardware computes it natively, float32
elsewhere; :func:`resolve_amp`), ``none``, ``bf16`` or ``fp16`` (CUDA only, with a GradScaler).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from wearspec.config import check_range
from wearspec.errors import WearspecError
from wearspec.models.backbones import set_fused_attn

AMP_MODES = ("auto", "none", "bf16", "fp16")
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# x86 flags (/proc/cpuinfo) of CPUs that compute bf16 matmuls natively
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass
class RuntimeConfig:
    """How a run executes; may change between a run and its resume (unlike the experiment settings)."""

    device: str = "auto"  # auto | cpu | cuda[:N]
    amp: str = "auto"  # auto: bf16 where native (bf16 GPUs, CPUs with AVX512-BF16/AMX), else none | bf16 | fp16
    compile: bool = False  # torch.compile the trained networks
    num_workers: int = 0  # DataLoader workers
    seed: int = 0
    log_every: int = 1  # steps between metrics.jsonl lines (loss, LR, windows/s, the recipe's statistics)
    ckpt_every: int = 200  # steps; a checkpoint is also written at every epoch end
    keep_last: int = 3  # checkpoints kept (fine-tuning keeps 2 per stage)
    max_steps: int = 0  # stop (with a checkpoint) after this many steps in total; 0 = run to the end
    logger: str = "console"  # console | wandb (offline unless WANDB_MODE says otherwise)
    knn_every: int = 0  # pretraining: epochs between online k-NN checks when the store has labels (0 = off)
    progress_s: float = 30.0  # seconds between progress lines when stderr is not a terminal (a bar on one)
    on_collapse: str = "stop"  # pretraining: a teacher still collapsed after warm-up stops the run (stop) or warns
    # minutes the training loop may take (0 = no budget): it measures its step time over its first steps and sizes
    # its schedule to end inside the budget (wearspec.training.budget); the chosen length is saved as budget_steps
    budget_min: float = 0.0
    budget_steps: int = 0  # the run's total steps as a budget fixed them (set by the run; 0 = from the epochs)

    def validate(self) -> None:
        if self.amp not in AMP_MODES:
            raise WearspecError(f"runtime.amp: expected auto, none, bf16 or fp16, got {self.amp!r}")
        for key, low, note in (("ckpt_every", 1, ""), ("log_every", 1, ""), ("max_steps", 0, "0 = run to the end"),
                               ("num_workers", 0, "0 = load in the main process"),
                               ("keep_last", 0, ""), ("knn_every", 0, "0 = off")):
            check_range(f"runtime.{key}", getattr(self, key), low, note=note)
        check_range("runtime.seed", self.seed, 0, 2**32 - 1)
        check_range("runtime.progress_s", self.progress_s, 0, low_open=True)
        if self.on_collapse not in ("stop", "warn"):
            raise WearspecError(f"runtime.on_collapse: expected stop or warn, got {self.on_collapse!r}")
        check_range("runtime.budget_min", self.budget_min, 0, note="0 = no budget")
        check_range("runtime.budget_steps", self.budget_steps, 0, note="0 = from the epochs")


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively: an x86 ``flags`` line of ``cpuinfo`` names ``avx512_bf16`` or
    ``amx_bf16``. Anything else (another architecture, no such file) is False: bf16 there is emulated."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            flags = set(line.split(":", 1)[1].split())
            return any(f in flags for f in NATIVE_BF16_FLAGS)
    return False


def resolve_amp(amp: str, device: torch.device, cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """``runtime.amp`` → the mode the run uses: none, bf16 or fp16. ``auto`` is bf16 on a CUDA GPU that supports
    it (``torch.cuda.is_bf16_supported()``) and on a CPU with native bf16 (:func:`cpu_has_native_bf16`), float32
    (none) elsewhere: emulated bf16 is slower than float32 and loses precision for nothing. fp16 needs CUDA."""
    if amp not in AMP_MODES:
        raise WearspecError(f"runtime.amp: expected auto, none, bf16 or fp16, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise WearspecError(f"runtime.amp=fp16 needs a CUDA device (got {device}); use bf16 or none")
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16(cpuinfo) else "none"
    return "none"


def attention_for_autocast(module: nn.Module, device_type: str, amp_dtype: torch.dtype | None) -> bool:
    """Pick the attention path that is fast for training under this autocast; returns whether the explicit
    path was chosen.

    On a CPU under bf16/fp16 autocast, PyTorch's fused CPU attention runs its backward ~10× slower than in
    float32 (``_scaled_dot_product_flash_attention_for_cpu_backward``; 35 ms vs 3 ms a call for the tiny
    ViT), which cancels the gain of the bf16 matmuls, while the explicit path's matmuls get it: a training
    step is then ~1.6× faster than in float32 (``benchmarks/pretrain_throughput.py --device cpu``). Anywhere
    else (CUDA, or no autocast) SDPA stays. The two paths compute the same attention."""
    explicit = device_type == "cpu" and amp_dtype is not None
    if explicit:
        set_fused_attn(module, False)
    return explicit


def cpu_autocast_warning(device_type: str, amp_dtype: torch.dtype | None) -> str | None:
    """A one-line warning when bf16 autocast runs on an x86 CPU without native bf16 (AVX512-BF16 or AMX):
    there the bf16 matmuls are emulated and a step is usually no faster than in float32. ``None`` otherwise."""
    if device_type != "cpu" or amp_dtype is None or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    native = any(getattr(torch.cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported",
                                                                 "_is_amx_tile_supported"))
    return None if native else ("runtime.amp=bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); training is "
                                "likely no faster than with runtime.amp=none")


def wrap(module: nn.Module, distributed: bool, compile: bool, ddp: bool = True) -> nn.Module:
    """The module a training step calls: DDP under several ranks (when ``ddp``; DDP gives every rank rank 0's
    weights when it is built), then ``torch.compile`` when ``runtime.compile``."""
    fwd = DDP(module) if ddp and distributed else module
    return torch.compile(fwd) if compile else fwd
