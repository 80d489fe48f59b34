"""The GPU throughput benchmark's own logic, run on the CPU with a tiny model (its numbers are not checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wearspec.config import load_config
from wearspec.data.prepare import PrepareConfig
from wearspec.data.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "pretrain_throughput.py"
TINY = ["backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "head.out_dim=128", "head.hidden_dim=32",
        "head.bottleneck_dim=16", "crops.n_local=2", "frontend.fit_windows=64"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tp") / "store"
    prepare("synthetic", None, out, load_config(PrepareConfig, None, ["synthetic.subjects=4",
                                                                      "synthetic.minutes_per_subject=1.5"]))
    return out


def _run(store: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--store", str(store), "--configs",
           str(ROOT / "configs" / "pretrain_vit_tiny.yaml"), "--amp", "none", "--out", str(tmp)]
    for item in TINY:
        cmd += ["--set", item]
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_flops_are_one_step_and_mfu_uses_the_peak(store, tmp_path):
    rows, stdout, explicit = {}, {}, []
    for batch, attention in ((16, "sdpa,explicit"), (8, "sdpa")):
        out = tmp_path / f"b{batch}.json"
        r = _run(store, tmp_path / f"w{batch}", "--batch-size", str(batch), "--warmup", "2", "--steps", "2",
                 "--log-every", "2", "--peak-tflops", "0.5,1", "--attention", attention, "--json", str(out))
        assert r.returncode == 0, r.stderr[-2000:]
        rows[batch], *more = json.loads(out.read_text())["results"]
        explicit += more
        stdout[batch] = r.stdout
        assert "| pretrain_vit_tiny.yaml | none | sdpa | False | " + str(batch) + " |" in r.stdout
    # the explicit attention: its own row, compared with SDPA's; the same FLOPs (counted once per config)
    (explicit,) = explicit
    assert explicit["attention"] == "explicit" and explicit["flops_per_step"] == rows[16]["flops_per_step"]
    assert explicit["speedup_vs_sdpa"] == pytest.approx(explicit["windows_per_s"] / rows[16]["windows_per_s"])
    assert rows[16]["speedup_vs_sdpa"] == 1.0
    assert "| pretrain_vit_tiny.yaml | none | explicit | False | 16 |" in stdout[16]
    for row in rows.values():
        assert row["windows_per_s"] > 0 and row["timed_steps"] == 2 and row["flops_per_step"] > 0
        assert row["mfu"] == pytest.approx(row["achieved_tflops"] / 0.5)  # fp32 row: the fp32 peak
        assert row["achieved_tflops"] == pytest.approx(row["flops_per_step"] * row["steps_per_s"] / 1e12)
    # the counted difference is one training step: it scales with the batch (set-up work would not)
    assert rows[16]["flops_per_step"] / rows[8]["flops_per_step"] == pytest.approx(2.0, rel=0.05)


def test_refuses_a_timed_span_beyond_the_first_epoch_and_bad_options(store, tmp_path):
    r = _run(store, tmp_path / "a", "--batch-size", "16", "--warmup", "10", "--steps", "100")
    assert r.returncode != 0 and "steps per epoch at batch 16" in r.stderr and "--unlabelled" in r.stderr
    r = _run(store, tmp_path / "b", "--warmup", "3", "--steps", "4", "--log-every", "2")
    assert r.returncode != 0 and "multiples of --log-every" in r.stderr
    r = _run(store, tmp_path / "c", "--peak-tflops", "fast")
    assert r.returncode != 0 and "--peak-tflops: expected two numbers" in r.stderr
    r = _run(store, tmp_path / "d", "--attention", "flash")
    assert r.returncode != 0 and "--attention: expected a comma-separated list of sdpa, explicit" in r.stderr


def test_ssl_benchmark_refuses_an_unknown_supervised_setting_before_making_data(tmp_path):
    out = tmp_path / "ssl"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ssl.py"), "--out", str(out),
                        "--set", "supervised:sed=1"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "WANDB_MODE": "offline"})
    assert r.returncode == 2
    assert "--set supervised:sed: unknown setting" in r.stderr.strip().splitlines()[-1]
    assert not out.exists()
