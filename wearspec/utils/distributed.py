"""One process or many: ``torchrun`` environment, process group, small collective helpers.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) :func:`init_distributed` joins the
process group (nccl on GPU, gloo on CPU) and picks ``cuda:LOCAL_RANK``; alone it does nothing.
Every helper here is a no-op (or the identity) when no group is initialised.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from wearspec.errors import WearspecError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``auto`` → ``cuda:LOCAL_RANK`` when a GPU exists, else ``cpu``; ``cuda`` without a GPU, a
    LOCAL_RANK without its GPU, and ``cuda:N`` for several processes (all on one GPU) are errors."""
    requested = name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise WearspecError(f"runtime.device={name}: no CUDA GPU is available (use cpu or auto)")
        n_gpus = torch.cuda.device_count()
        if name == "cuda":
            if local_rank >= n_gpus:
                raise WearspecError(f"runtime.device={requested}: process LOCAL_RANK={local_rank} needs GPU "
                                    f"{local_rank}, but {n_gpus} GPU(s) are visible; start at most {n_gpus} "
                                    "process(es) per node (--nproc_per_node) or use runtime.device=cpu")
            return torch.device("cuda", local_rank)
        if world_size > 1:
            raise WearspecError(f"runtime.device={name}: under torchrun every process needs its own GPU; use "
                                "runtime.device=cuda (or auto), which gives each process cuda:LOCAL_RANK")
        try:
            index = int(name.split(":")[1])
        except (IndexError, ValueError):
            raise WearspecError(f"runtime.device: expected auto, cpu or cuda[:N], got {name!r}") from None
        if not 0 <= index < n_gpus:
            raise WearspecError(f"runtime.device={name}: {n_gpus} GPU(s) are visible (cuda:0 … cuda:{n_gpus - 1})")
        return torch.device("cuda", index)
    if name != "cpu":
        raise WearspecError(f"runtime.device: expected auto, cpu or cuda[:N], got {name!r}")
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Join the ``torchrun`` process group if there is one. Idempotent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # the current device is the one the CUDA RNG state and collectives use
    if world <= 1:
        return DistInfo(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is not None and "MASTER_ADDR" in os.environ:
            # After `torchrun --max-restarts` restarts the workers, the rendezvous store can still hold
            # the previous round's peer addresses, and gloo/nccl then connect to dead processes
            # ("connection refused"). A key prefix per restart round keeps every round apart.
            agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            tcp = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                                is_master=(not agent and rank == 0), timeout=timeout)
            kwargs.update(store=dist.PrefixStore(f"wearspec/round_{restart}", tcp), rank=rank, world_size=world)
        dist.init_process_group(**kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """In-place mean over ranks (returns ``t``)."""
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def param_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in order: equal digests ⇔ bitwise-identical replicas."""
    import hashlib

    h = hashlib.sha256()
    for p in module.parameters():
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
