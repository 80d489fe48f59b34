"""The training harness's parts that need no training run: the one RuntimeConfig (every key either recipe took),
``runtime.amp: auto`` resolved from fake CPU flags, the CPU bf16 warning, and progress lines on a fake clock."""

from __future__ import annotations

import io
import platform

import pytest
import torch

from wearspec.config import load_config
from wearspec.errors import WearspecError
from wearspec.finetune.recipe import FinetuneConfig
from wearspec.ssl.pretrain import PretrainConfig
from wearspec.training.progress import Progress, format_duration
from wearspec.training.runtime import RuntimeConfig, cpu_autocast_warning, cpu_has_native_bf16, resolve_amp

# every runtime key that pretraining's and fine-tuning's own RuntimeConfig accepted before they were one
OLD_KEYS = {"device": "cpu", "amp": "bf16", "compile": "false", "num_workers": "0", "seed": "3", "log_every": "5",
            "ckpt_every": "7", "keep_last": "4", "max_steps": "9", "logger": "console"}
CPU = torch.device("cpu")


def test_one_runtime_config_takes_every_old_key():
    pre = load_config(PretrainConfig, None, [f"runtime.{k}={v}" for k, v in OLD_KEYS.items()] + ["runtime.knn_every=2"])
    ft = load_config(FinetuneConfig, None, [f"runtime.{k}={v}" for k, v in OLD_KEYS.items()])
    for cfg in (pre, ft):
        assert isinstance(cfg.runtime, RuntimeConfig)
        assert (cfg.runtime.seed, cfg.runtime.keep_last, cfg.runtime.max_steps, cfg.runtime.amp) == (3, 4, 9, "bf16")
    assert pre.runtime.knn_every == 2
    # each recipe keeps its own defaults: 3 checkpoints in pretraining, 2 per fine-tuning stage; amp auto
    assert load_config(PretrainConfig, None, []).runtime.keep_last == 3
    assert load_config(FinetuneConfig, None, []).runtime.keep_last == 2
    assert RuntimeConfig().amp == "auto" and RuntimeConfig().progress_s == 30.0


def test_runtime_settings_are_checked_in_one_line():
    with pytest.raises(WearspecError, match="runtime.amp: expected auto, none, bf16 or fp16, got 'fp8'"):
        load_config(PretrainConfig, None, ["runtime.amp=fp8"]).validate()
    with pytest.raises(WearspecError, match="runtime.ckpt_every"):
        load_config(FinetuneConfig, None, ["store=x", "runtime.ckpt_every=0"]).validate()
    with pytest.raises(WearspecError, match="runtime.knn_every: the online k-NN check is a pretraining setting"):
        load_config(FinetuneConfig, None, ["store=x", "runtime.knn_every=1"]).validate()
    with pytest.raises(WearspecError, match=r"runtime.progress_s: expected a number > 0"):
        RuntimeConfig(progress_s=0).validate()


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: fpu sse2 avx2 {flags}\n")
    return path


@pytest.mark.parametrize("flags, expected", [("avx512f avx512_bf16", "bf16"), ("amx_tile amx_bf16", "bf16"),
                                             ("avx512f avx512_vnni", "none"), ("", "none")])
def test_amp_auto_on_a_cpu_follows_its_bf16_flags(tmp_path, flags, expected):
    info = _cpuinfo(tmp_path, flags)
    assert cpu_has_native_bf16(info) == (expected == "bf16")
    assert resolve_amp("auto", CPU, info) == expected
    # an explicit setting is taken as given (bf16 on such a CPU is warned about by the run, not changed)
    assert resolve_amp("bf16", CPU, info) == "bf16" and resolve_amp("none", CPU, info) == "none"


def test_amp_auto_elsewhere(tmp_path, monkeypatch):
    assert resolve_amp("auto", CPU, tmp_path / "no-such-file") == "none"  # not Linux, or unreadable: float32
    for supported, expected in ((True, "bf16"), (False, "none")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
        assert resolve_amp("auto", torch.device("cuda", 0)) == expected
    assert resolve_amp("auto", torch.device("mps")) == "none"
    with pytest.raises(WearspecError, match="runtime.amp=fp16 needs a CUDA device"):
        resolve_amp("fp16", CPU)


def test_cpu_autocast_warning_only_without_native_bf16(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert "no native bf16" in cpu_autocast_warning("cpu", torch.bfloat16)
    assert cpu_autocast_warning("cpu", None) is None and cpu_autocast_warning("cuda", torch.bfloat16) is None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_autocast_warning("cpu", torch.bfloat16) is None


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_lines_every_interval_when_not_a_terminal():
    clock, out = _Clock(), io.StringIO()  # StringIO is not a TTY
    p = Progress("teacher", total=100, start=20, windows_per_step=32, is_main=True, interval_s=30, stream=out,
                 clock=clock)
    for step in range(21, 61):  # 40 steps, one every 1.5 s: 60 s in all
        clock.t += 1.5
        p.update(step)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # at 30 s and at 60 s
    assert lines[-1] == "teacher: step 60/100 (60%), 21.3 windows/s, elapsed 1m00s, ETA 1m00s"
    p.close()
    assert len(out.getvalue().splitlines()) == 3  # and once at the end
    assert format_duration(3725) == "1h02m05s" and format_duration(9.4) == "9s"


def test_progress_other_ranks_are_quiet_and_a_terminal_gets_a_bar():
    clock, out = _Clock(), io.StringIO()
    p = Progress("pretrain", 10, 0, 8, is_main=False, interval_s=1, stream=out, clock=clock)
    for step in range(1, 11):
        clock.t += 5
        p.update(step)
    p.close()
    assert out.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    p = Progress("pretrain", 10, 0, 8, is_main=True, interval_s=1, stream=term, clock=clock)
    assert p.bar is not None and not p.lines
    for step in range(1, 11):
        clock.t += 5
        p.update(step)
    p.close()
    assert "pretrain: step" not in term.getvalue() and "10/10" in term.getvalue()
