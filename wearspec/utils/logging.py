"""Run logging: console, ``metrics.jsonl`` always; wandb only when asked.

Only rank 0 writes. ``metrics.jsonl`` holds one JSON object per line with a ``step``; when a run
resumes from step k, lines written after k by the interrupted run are dropped so the file reads as
one uninterrupted run. wandb is imported lazily and runs offline unless ``WANDB_MODE`` says
otherwise (online mode without a network hangs for minutes).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from wearspec.utils.io import write_text


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class RunLogger:
    """``log(step, **metrics)`` to metrics.jsonl (+ wandb); ``info(msg)`` to the console."""

    def __init__(self, out_dir: str | os.PathLike, *, is_main: bool = True, backend: str = "console",
                 config: dict | None = None, resume_step: int | None = None, project: str = "wearspec",
                 run_name: str | None = None):
        self.is_main = is_main
        self.path = Path(out_dir) / "metrics.jsonl"
        self._wandb = None
        if not is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = []
            if resume_step is not None:
                for line in self.path.read_text().splitlines():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash
                    if rec.get("step", 0) <= resume_step:
                        keep.append(line)
            write_text(self.path, "".join(line + "\n" for line in keep))
        self._file = open(self.path, "a", buffering=1)
        if backend == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")
            try:
                import wandb
            except ImportError:
                from wearspec.errors import WearspecError

                raise WearspecError("logger=wandb: the wandb package is not installed (pip install wandb)") from None
            self._wandb = wandb.init(project=project, name=run_name, dir=str(Path(out_dir)), config=config,
                                     resume="allow", id=run_name)
        elif backend != "console":
            from wearspec.errors import WearspecError

            raise WearspecError(f"logger: expected console or wandb, got {backend!r}")

    def log(self, step: int, **metrics: Any) -> None:
        if not self.is_main:
            return
        rec = {"step": int(step), "time": round(time.time(), 3), **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(rec) + "\n")
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in rec.items() if isinstance(v, (int, float))}, step=int(step))

    def info(self, msg: str) -> None:
        if self.is_main:
            print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.is_main:
            return
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a metrics.jsonl (lines cut by a crash are skipped)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
