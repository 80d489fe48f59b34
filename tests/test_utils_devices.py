"""Device handling that matters on GPUs, checked on the CPU: which device each process gets, RNG states that
cross device types on resume, and a loss scaler switched on at resume."""

from __future__ import annotations

import warnings

import pytest
import torch

from wearspec.errors import WearspecError
from wearspec.utils import distributed as du
from wearspec.utils.checkpoint import load_scaler_state
from wearspec.utils.seed import restore_rank_rng, rng_state, set_rng_state


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend two CUDA GPUs are visible (torch.device("cuda", i) needs no GPU to be made)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_each_process_gets_its_local_rank_gpu(two_gpus):
    assert du.resolve_device("auto", local_rank=1, world_size=2) == torch.device("cuda", 1)
    assert du.resolve_device("cuda", local_rank=0, world_size=2) == torch.device("cuda", 0)
    assert du.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert du.resolve_device("cpu", local_rank=3, world_size=4) == torch.device("cpu")


@pytest.mark.parametrize("name, local_rank, world, expected", [
    ("auto", 2, 4, "LOCAL_RANK=2 needs GPU 2, but 2 GPU(s) are visible"),
    ("cuda", 3, 4, "start at most 2 process(es) per node"),
    ("cuda:1", 0, 2, "under torchrun every process needs its own GPU"),
    ("cuda:2", 0, 1, "2 GPU(s) are visible (cuda:0 … cuda:1)"),
    ("cuda:x", 0, 1, "expected auto, cpu or cuda[:N]"),
    ("gpu", 0, 1, "expected auto, cpu or cuda[:N]"),
])
def test_device_errors_are_one_line(two_gpus, name, local_rank, world, expected):
    with pytest.raises(WearspecError) as e:
        du.resolve_device(name, local_rank, world)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_generator_state_restores_exactly_on_the_same_device_type():
    g = torch.Generator().manual_seed(5)
    torch.rand(3, generator=g)
    saved = rng_state(g)
    assert saved["generator_device"] == "cpu"
    expected = torch.rand(4, generator=g)
    g2 = torch.Generator().manual_seed(99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same device type: no warning
        set_rng_state(saved, g2)
    assert torch.equal(torch.rand(4, generator=g2), expected)


def test_generator_state_from_another_device_type_reseeds_deterministically():
    """A run saved on a GPU and resumed on the CPU: the 16-byte CUDA generator state cannot be set on a CPU
    generator, so the generator is re-seeded from its seed and the saved state, with a warning."""
    saved = {**rng_state(None), "generator": torch.arange(16, dtype=torch.uint8), "generator_device": "cuda"}
    draws = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        with pytest.warns(UserWarning, match=r"ckpt-00000004\.pt: the view generator's state was saved on cuda"):
            restore_rank_rng([saved], 0, 1, g, "ckpt-00000004.pt")
        draws.append(torch.rand(4, generator=g))
    assert torch.equal(draws[0], draws[1])  # deterministic
    assert not torch.equal(draws[0], torch.rand(4, generator=torch.Generator().manual_seed(7)))  # not a restart
    other = {**saved, "generator": torch.arange(1, 17, dtype=torch.uint8)}
    g = torch.Generator().manual_seed(7)
    with pytest.warns(UserWarning):
        set_rng_state(other, g)
    assert not torch.equal(torch.rand(4, generator=g), draws[0])  # another checkpoint, another stream


def test_fp16_scaler_resumes_from_a_run_without_one():
    """float32/bf16 runs save a disabled scaler's {}; a resume with fp16 starts from a fresh scale."""
    off = torch.amp.GradScaler("cpu", enabled=False)
    assert off.state_dict() == {}
    on = torch.amp.GradScaler("cpu", init_scale=1024.0)
    load_scaler_state(on, off.state_dict())  # GradScaler.load_state_dict({}) would raise
    assert on.get_scale() == 1024.0
    trained = torch.amp.GradScaler("cpu", init_scale=256.0)
    fresh = torch.amp.GradScaler("cpu")
    load_scaler_state(fresh, trained.state_dict())
    assert fresh.get_scale() == 256.0
