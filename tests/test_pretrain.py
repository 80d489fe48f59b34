"""Pretraining: outputs, exact resume, NaN stop, config checks, torchrun with 2 ranks, a killed rank, 2 nodes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wearspec.config import load_config
from wearspec.data.prepare import prepare
from wearspec.data.store import WindowStore
from wearspec.data.prepare import PrepareConfig
from wearspec.errors import WearspecError
from wearspec.models.encoder import encoder_from_checkpoint
from wearspec.ssl.pretrain import PretrainConfig, run_pretrain
from wearspec.utils.checkpoint import list_checkpoints, load_checkpoint
from wearspec.utils.logging import read_metrics

TINY = [
    "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "head.out_dim=128",
    "head.hidden_dim=32", "head.bottleneck_dim=16", "optim.batch_size=16", "crops.n_local=2",
    "runtime.log_every=1", "frontend.fit_windows=64", "runtime.device=cpu",
]
# the overrides that pick each backbone family (TINY is a ViT)
ARCH = {"vit": [], "swin": ["backbone.name=swin_tiny_cpu"]}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pt") / "store"
    cfg = load_config(PrepareConfig, None, ["synthetic.subjects=4", "synthetic.minutes_per_subject=1.5"])
    prepare("synthetic", None, out, cfg)
    return out


def _cfg(store, out, *extra):
    return load_config(PretrainConfig, None, [f"store={store}", f"output={out}", *TINY, *extra])


def test_outputs_checkpoints_and_export(store, tmp_path):
    out = tmp_path / "run"
    summary = run_pretrain(_cfg(store, out, "optim.epochs=2", "runtime.ckpt_every=4", "runtime.keep_last=2"))
    assert summary["finished"] and summary["steps"] == summary["total_steps"]
    for name in ("config.yaml", "metrics.jsonl", "teacher_encoder.safetensors", "encoder.json", "curves.png"):
        assert (out / name).is_file(), name
    ckpts = list_checkpoints(out / "checkpoints")
    assert len(ckpts) == 2 and ckpts[-1].name == f"ckpt-{summary['steps']:08d}.pt"
    state = load_checkpoint(ckpts[-1])  # weights_only=True
    for key in ("student_net", "teacher_net", "optimizer", "scaler", "view_loss", "region_loss", "sampler", "rng",
                "encoder", "config", "step", "epoch"):
        assert key in state, key
    assert state["view_loss"]["center"].abs().sum() > 0
    fingerprint = WindowStore(store).manifest["fingerprint"]
    assert fingerprint and state["data"] == {"store_fingerprint": fingerprint, "windows": len(WindowStore(store))}
    recs = read_metrics(out / "metrics.jsonl")
    steps = [r for r in recs if "loss" in r]
    assert len(steps) == summary["steps"] and all(r["windows_per_s"] > 0 for r in steps)
    assert {"entropy", "kl_uniform", "kl_center", "lr", "teacher_temp", "used_fraction"} <= set(steps[-1])
    assert all(r["replicas_in_sync"] for r in recs if r.get("event") == "checkpoint")
    # runtime.amp (auto by default) is recorded as resolved
    runtime = [r for r in recs if r.get("event") == "runtime"]
    assert len(runtime) == 1 and runtime[0]["amp_setting"] == "auto" and runtime[0]["amp"] == summary["amp"]
    enc, meta = encoder_from_checkpoint(ckpts[-1], "teacher")
    assert meta["channels"][:3] == ["acc_x", "acc_y", "acc_z"]
    from safetensors.torch import load_file

    exported = load_file(str(out / "teacher_encoder.safetensors"))
    for k, v in enc.state_dict().items():
        assert torch.equal(exported[k], v), k
    # a finished run re-run does nothing more
    assert run_pretrain(_cfg(store, out, "optim.epochs=2", "runtime.ckpt_every=4"))["steps"] == summary["steps"]


def test_resume_is_bitwise_exact(store, tmp_path, monkeypatch):
    common = ["optim.epochs=2", "runtime.ckpt_every=100"]
    a = tmp_path / "a"
    run_pretrain(_cfg(store, a, *common))
    b = tmp_path / "b"
    first = run_pretrain(_cfg(store, b, *common, "runtime.max_steps=7"))
    assert first["steps"] == 7 and not first["finished"]
    assert [p.name for p in list_checkpoints(b / "checkpoints")] == ["ckpt-00000007.pt"]
    import wearspec.training.harness as harness_module  # resume (the checkpoint load) is the harness's

    mapped = []

    def spy(path, map_location="cpu"):
        mapped.append(map_location)
        return load_checkpoint(path, map_location)

    monkeypatch.setattr(harness_module, "load_checkpoint", spy)
    run_pretrain(_cfg(store, b, *common))
    # loaded to the CPU on any device: RNG states must stay CPU byte tensors (load_state_dict moves the rest)
    assert mapped == ["cpu"]
    sa = load_checkpoint(list_checkpoints(a / "checkpoints")[-1])
    sb = load_checkpoint(list_checkpoints(b / "checkpoints")[-1])
    assert sa["step"] == sb["step"]
    for part in ("student_net", "teacher_net"):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), (part, k)
    assert torch.equal(sa["view_loss"]["center"], sb["view_loss"]["center"])
    # metrics of the resumed run read as one run: every step once
    steps = [r["step"] for r in read_metrics(b / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, sa["step"] + 1))


def test_non_finite_loss_stops_without_saving(store, tmp_path, monkeypatch):
    from wearspec.ssl import losses

    out = tmp_path / "nan"
    run_pretrain(_cfg(store, out, "optim.epochs=2", "runtime.max_steps=3"))
    real = losses.DINOLoss.forward
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        v = real(self, *a, **k)
        return v * float("nan") if calls["n"] >= 2 else v

    monkeypatch.setattr(losses.DINOLoss, "forward", flaky)
    with pytest.raises(WearspecError, match=r"non-finite loss at step 4 .* newest checkpoint .* is intact"):
        run_pretrain(_cfg(store, out, "optim.epochs=2", "runtime.ckpt_every=1"))
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["ckpt-00000003.pt", "ckpt-00000004.pt"]
    load_checkpoint(out / "checkpoints" / "ckpt-00000004.pt")


def test_bad_inputs(store, tmp_path):
    with pytest.raises(WearspecError, match="store: the window store to pretrain on is required"):
        run_pretrain(load_config(PretrainConfig, None, [f"output={tmp_path}/x", *TINY]))
    with pytest.raises(WearspecError, match="exclude_subjects: 'nobody' is not a subject"):
        run_pretrain(_cfg(store, tmp_path / "x", "exclude_subjects=[nobody]"))
    with pytest.raises(WearspecError, match="give no full batch of 4096"):
        run_pretrain(_cfg(store, tmp_path / "x", "optim.batch_size=4096"))
    with pytest.raises(WearspecError, match="loss.centering: expected ema or sinkhorn"):
        run_pretrain(_cfg(store, tmp_path / "x", "loss.centering=median"))
    with pytest.raises(WearspecError, match="loss.koleo_weight"):
        run_pretrain(_cfg(store, tmp_path / "x", "loss.koleo_weight=-1"))
    with pytest.raises(WearspecError, match="runtime.amp=fp16 needs a CUDA device"):
        run_pretrain(_cfg(store, tmp_path / "x", "runtime.amp=fp16"))
    assert not (tmp_path / "x").exists()
    out = tmp_path / "changed"
    run_pretrain(_cfg(store, out, "optim.epochs=2", "runtime.max_steps=2"))
    with pytest.raises(WearspecError, match="used different 'optim' settings"):
        run_pretrain(_cfg(store, out, "optim.epochs=3"))
    other = tmp_path / "store2"  # the same path, prepared again with other content: resume must refuse it
    shutil.copytree(store, other)
    run_pretrain(_cfg(other, tmp_path / "on2", "optim.epochs=2", "runtime.max_steps=2"))
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps(dict(manifest, fingerprint="0123456789abcdef")))
    with pytest.raises(WearspecError, match=r"ckpt-00000002.pt: this run was trained on another store"):
        run_pretrain(_cfg(other, tmp_path / "on2", "optim.epochs=2"))


def test_sinkhorn_targets_and_koleo_train_and_log(store, tmp_path):
    from wearspec.training.schedules import teacher_temperature_schedule

    out = tmp_path / "sk"
    # a teacher-temperature warm-up longer than the run: cut at the run's end, as the first epoch of a longer run
    summary = run_pretrain(_cfg(store, out, "optim.epochs=1", "loss.centering=sinkhorn", "loss.koleo_weight=0.1",
                                "loss.warmup_teacher_temp=0.04", "loss.teacher_temp=0.07",
                                "loss.warmup_teacher_temp_epochs=3"))
    assert summary["finished"]
    steps = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert len(steps) == summary["steps"] and all(r["loss_koleo"] is not None for r in steps)
    assert all(torch.isfinite(torch.tensor([r["loss"], r["loss_koleo"]])).all() for r in steps)
    assert (out / "teacher_encoder.safetensors").is_file()
    expected = teacher_temperature_schedule(0.04, 0.07, 3, total_epochs=1, steps_per_epoch=summary["steps"])
    assert [r["teacher_temp"] for r in steps] == pytest.approx(list(expected))
    assert steps[-1]["teacher_temp"] < 0.05


def test_bf16_on_cpu_trains_through_the_explicit_attention(store, tmp_path, sdpa_calls):
    """bf16 autocast on a CPU: finite losses, and no attention goes through SDPA (its CPU backward is slow in
    bf16); in float32 SDPA is used."""
    for amp, arch in (("bf16", "vit"), ("bf16", "swin"), ("none", "vit")):
        sdpa_calls["n"] = 0
        out = tmp_path / f"{amp}_{arch}"
        summary = run_pretrain(_cfg(store, out, "optim.epochs=1", "runtime.max_steps=2", f"runtime.amp={amp}",
                                    *ARCH[arch]))
        assert summary["steps"] == 2
        steps = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
        assert steps and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
        assert (sdpa_calls["n"] == 0) == (amp == "bf16"), (amp, arch, sdpa_calls["n"])


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_cuda_bf16_pretraining_uses_sdpa_and_resumes(store, tmp_path, sdpa_calls, arch):
    """On a GPU, bf16 autocast keeps timm's fused attention (SDPA), the losses are finite, and a stopped run
    resumes from its checkpoint to the end."""
    out = tmp_path / arch
    base = ["optim.epochs=1", "runtime.device=cuda", "runtime.amp=bf16", "runtime.ckpt_every=2", *ARCH[arch]]
    first = run_pretrain(_cfg(store, out, *base, "runtime.max_steps=2"))
    assert first["steps"] == 2 and not first["finished"] and sdpa_calls["n"] > 0
    rest = run_pretrain(_cfg(store, out, *base))
    assert rest["finished"] and rest["steps"] == rest["total_steps"]
    recs = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in recs if r.get("event") == "resumed"] == [2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in recs if "loss" in r)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_cuda_compiled_pretraining(store, tmp_path, arch):
    out = tmp_path / "compiled"
    summary = run_pretrain(_cfg(store, out, "optim.epochs=1", "runtime.max_steps=3", "runtime.device=cuda",
                                "runtime.amp=bf16", "runtime.compile=true", *ARCH[arch]))
    assert summary["steps"] == 3
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in read_metrics(out / "metrics.jsonl") if "loss" in r)


# -- torchrun ------------------------------------------------------------------------------------


def _torchrun(store, out, extra, *, max_restarts=0, port_env=None, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"--max-restarts={max_restarts}", "-m", "wearspec", "pretrain", f"store={store}", f"output={out}",
           *TINY, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


@pytest.mark.slow
def test_torchrun_two_ranks_stay_in_sync(store, tmp_path):
    out = tmp_path / "ddp"
    p = _torchrun(store, out, ["optim.epochs=2", "runtime.ckpt_every=3"])
    text, _ = p.communicate(timeout=600)
    assert p.returncode == 0, text[-3000:]
    recs = read_metrics(out / "metrics.jsonl")
    syncs = [r for r in recs if r.get("event") == "checkpoint"]
    assert syncs and all(len(r["replica_digests"]) == 2 and r["replicas_in_sync"] for r in syncs)
    state = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert len(state["rng"]) == 2  # the RNG state of every rank
    assert not torch.equal(state["rng"][0]["generator"], state["rng"][1]["generator"])
    assert "2 rank(s) (gloo)" in text


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl with one rank per GPU needs 2 CUDA GPUs")
def test_torchrun_on_gpus_uses_nccl(store, tmp_path):
    """One rank per GPU, nccl, the replicas in sync at every checkpoint."""
    out = tmp_path / "nccl"
    n = torch.cuda.device_count()
    p = _torchrun(store, out, ["optim.epochs=1", "runtime.max_steps=4", "runtime.ckpt_every=2",
                               "runtime.device=cuda", "runtime.amp=bf16"], nproc=n)
    text, _ = p.communicate(timeout=600)
    assert p.returncode == 0, text[-3000:]
    assert f"{n} rank(s) (nccl)" in text
    syncs = [r for r in read_metrics(out / "metrics.jsonl") if r.get("event") == "checkpoint"]
    assert syncs and all(r["replicas_in_sync"] for r in syncs)


@pytest.mark.slow
def test_torchrun_survives_a_killed_rank(store, tmp_path):
    out = tmp_path / "kill"
    every = 4
    p = _torchrun(store, out, ["optim.epochs=8", f"runtime.ckpt_every={every}"], max_restarts=1)
    killed_at = None
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
        if steps and steps[-1] >= 10:
            workers = subprocess.run(["pgrep", "-f", "-P", str(p.pid), "wearspec"], capture_output=True,
                                     text=True).stdout.split()
            if len(workers) >= 2:
                killed_at = steps[-1]
                os.kill(int(workers[-1]), signal.SIGKILL)
                break
        time.sleep(0.05)
    assert killed_at is not None, "the run ended before a rank could be killed"
    text, _ = p.communicate(timeout=600)
    assert p.returncode == 0, text[-3000:]
    recs = read_metrics(out / "metrics.jsonl")
    resumed = [r for r in recs if r.get("event") == "resumed"]
    assert len(resumed) == 1 and resumed[0]["step"] >= killed_at - every
    final = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert final["step"] == max(r["step"] for r in recs) and (out / "teacher_encoder.safetensors").exists()
    assert json.loads(text.strip().splitlines()[-1])["finished"]


def _node(store, out, port, extra):
    """One node's ``torchrun`` agent of a 2-node run (1 process each) that meets the other at a c10d
    rendezvous on this machine, as two machines would at ``--rdzv-endpoint``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=wearspec-test",
           "--max-restarts=0", "-m", "wearspec", "pretrain", f"store={store}", f"output={out}", *TINY, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def _two_nodes(store, outs, extra):
    import socket

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = [_node(store, out, port, extra) for out in outs]
    texts = [p.communicate(timeout=600)[0] for p in nodes]
    return [p.returncode for p in nodes], "\n".join(texts)


@pytest.mark.slow
def test_torchrun_two_nodes_through_a_rendezvous(store, tmp_path):
    """Two nodes (LOCAL_RANK 0 on both): global ranks shard and checkpoint; a node that does not see the shared
    output folder stops every rank with one clear line and changes nothing; the shared run then resumes."""
    out = tmp_path / "shared"
    base = ["optim.epochs=2", "runtime.ckpt_every=3"]
    codes, text = _two_nodes(store, [out, out], [*base, "runtime.max_steps=3"])
    assert codes == [0, 0], text[-3000:]
    assert "2 rank(s) (gloo)" in text
    ckpts = list_checkpoints(out / "checkpoints")
    assert [c.name for c in ckpts] == ["ckpt-00000003.pt"]
    state = load_checkpoint(ckpts[0])
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["generator"], state["rng"][1]["generator"])

    codes, text = _two_nodes(store, [out, tmp_path / "not_shared"], base)
    assert codes[0] != 0 and codes[1] != 0
    assert "the output folder must be one that every node shares" in text, text[-3000:]
    assert list_checkpoints(out / "checkpoints") == ckpts and not (tmp_path / "not_shared" / "checkpoints").exists()

    codes, text = _two_nodes(store, [out, out], base)
    assert codes == [0, 0], text[-3000:]
    recs = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in recs if r.get("event") == "resumed"] == [3]
    syncs = [r for r in recs if r.get("event") == "checkpoint"]
    assert len(syncs) >= 2 and all(len(r["replica_digests"]) == 2 and r["replicas_in_sync"] for r in syncs)


def test_ranks_must_agree_on_the_store_and_the_checkpoint(store, tmp_path, monkeypatch):
    """What every rank checks before it resumes (the other rank's view faked): the same store fingerprint and
    the same newest checkpoint, else one line naming the rank; nothing is loaded or written."""
    from wearspec.utils import distributed as du

    import wearspec.utils.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "AGREE_WAIT_S", 0.0)
    out = tmp_path / "run"
    run_pretrain(_cfg(store, out, "optim.epochs=1", "runtime.max_steps=2", "runtime.ckpt_every=2"))
    fingerprint = WindowStore(store).manifest["fingerprint"]
    for other, expected in (((fingerprint, None), "rank 1 sees none .after 5 looks, 0 s apart.; the output folder"),
                            (("0" * 16, "ckpt-00000002.pt"), "rank 1 reads another window store")):
        monkeypatch.setattr(du, "all_gather_objects", lambda obj, other=other: [obj, other])
        before = _listing(out)
        with pytest.raises(WearspecError, match=expected):
            run_pretrain(_cfg(store, out, "optim.epochs=1"))
        assert _listing(out) == before
    # a checkpoint that another node sees only on its second look (a shared folder's listing cache): resumed
    looks = []

    def late(obj):
        looks.append(obj)
        return [obj, (fingerprint, None if len(looks) == 1 else obj[1])]

    monkeypatch.setattr(du, "all_gather_objects", late)
    assert ckpt.agreed_latest_checkpoint(out / "checkpoints", WindowStore(store)).name == "ckpt-00000002.pt"
    assert len(looks) == 2


def _listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_online_knn_and_wandb_offline(store, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "knn"
    run_pretrain(_cfg(store, out, "optim.epochs=1", "runtime.knn_every=1", "runtime.logger=wandb"))
    knn = [r for r in read_metrics(out / "metrics.jsonl") if "knn_macro_f1" in r]
    assert len(knn) == 1 and 0.0 <= knn[0]["knn_macro_f1"] <= 1.0
    assert any((out / "wandb").glob("offline-run-*"))


def test_epochs_of_a_fixed_number_of_steps_resume_bitwise(store, tmp_path):
    """optim.steps_per_epoch: epochs shorter than a pass (a fresh shuffle each), resumed across an epoch edge."""
    common = ["optim.epochs=3", "optim.steps_per_epoch=2", "optim.warmup_epochs=1", "runtime.ckpt_every=100"]
    a = run_pretrain(_cfg(store, tmp_path / "a", *common))
    assert a["total_steps"] == a["steps"] == 6
    ckpts = list_checkpoints(tmp_path / "a" / "checkpoints")
    assert [load_checkpoint(p)["epoch"] for p in ckpts] == [1, 2, 3]  # a checkpoint at each 2-step epoch's end
    run_pretrain(_cfg(store, tmp_path / "b", *common, "runtime.max_steps=3"))
    run_pretrain(_cfg(store, tmp_path / "b", *common))
    sa, sb = (load_checkpoint(list_checkpoints(tmp_path / r / "checkpoints")[-1]) for r in "ab")
    for k in sa["teacher_net"]:
        assert torch.equal(sa["teacher_net"][k], sb["teacher_net"][k]), k
    with pytest.raises(WearspecError, match="optim.steps_per_epoch"):
        run_pretrain(_cfg(store, tmp_path / "c", "optim.steps_per_epoch=-1"))
