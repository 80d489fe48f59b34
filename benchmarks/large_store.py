"""A store of 10⁷ windows: sampler memory and loader throughput at cohort scale.

    python benchmarks/large_store.py [--windows 10000000] [--batches 400] [--work DIR] [--json out.json]

1. Writes a store of ``--windows`` windows of 3 channels × 32 samples, float16 (192 bytes a window: ~1.9 GB
   for 10⁷), with ``StoreWriter`` in chunks, timed.
2. In a fresh process each (peak RSS from ``getrusage``), for the sampler as it is and for the previous one (one
   ``torch.randperm`` of the whole store per epoch, handed to the loader as a Python list):
   open the store, build the pretraining loader (``WindowDataset`` + ``ResumableSampler``, batch 256, shuffled,
   2 ranks' share of rank 0), read ``--batches`` batches; report the time to the first batch, windows/s after
   it, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
C, T = 3, 32


def write_store(path: Path, n: int) -> float:
    from wearspec.data.store import StoreWriter

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    chunk = 200_000
    with StoreWriter(path, channels=["acc_x", "acc_y", "acc_z"], rate=30.0, window=T, hop=T, dtype="float16") as w:
        for a in range(0, n, chunk):
            m = min(chunk, n - a)
            w.add(rng.standard_normal((m, C, T), dtype=np.float32), f"S{a // 1_000_000:03d}", f"R{a // chunk:05d}",
                  np.arange(m) * (T / 30.0))
    return time.perf_counter() - t0


def read(path: str, batches: int, legacy: bool) -> dict:
    """(In a fresh process.) The loader over the whole store: time to the first batch, windows/s, peak RSS."""
    import torch
    from torch.utils.data import DataLoader

    from wearspec.data.dataset import ResumableSampler, WindowDataset
    from wearspec.data.store import WindowStore

    class Legacy(ResumableSampler):  # the previous sampler: the whole order, as a list
        def __iter__(self):
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).numpy()
            return iter(perm[: self.num_samples * self.world][self.rank:: self.world][self.position:].tolist())

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    ds = WindowDataset(WindowStore(path))
    sampler = (Legacy if legacy else ResumableSampler)(len(ds), rank=0, world_size=2, seed=0, drop_last=True)
    loader = iter(DataLoader(ds, batch_size=256, sampler=sampler, drop_last=True, num_workers=0))
    next(loader)
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(batches):
        next(loader)
    rate = batches * 256 / (time.perf_counter() - t1)
    return {"sampler": "randperm + list (previous)" if legacy else "keyed, piecewise (current)",
            "first_batch_s": round(first, 2), "windows_per_s": round(rate), "peak_rss_mb": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "rss_after_imports_mb": round(rss0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=10_000_000)
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--read", default=None, help=argparse.SUPPRESS)  # internal: the subprocess part
    ap.add_argument("--legacy", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read:
        print(json.dumps(read(args.read, args.batches, args.legacy)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="large-store-"))
    store = work / f"store{args.windows}"
    result = {"windows": args.windows, "bytes_per_window": C * T * 2}
    if not (store / "manifest.json").is_file():
        result["write_s"] = round(write_store(store, args.windows), 1)
    result["store_gb"] = round(sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e9, 2)
    for legacy in (False, True):
        cmd = [sys.executable, __file__, "--read", str(store), "--batches", str(args.batches)] + (
            ["--legacy"] if legacy else [])
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True).stdout
        result["legacy" if legacy else "current"] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(result["legacy" if legacy else "current"]), flush=True)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    main()
