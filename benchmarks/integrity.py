"""Integrity benchmark: what verifying checksums costs, on a 1 GB store and on a short pretraining run.

    python benchmarks/integrity.py [--gb 1.0] [--steps 60] [--repeats 1] [--out out/integrity] [--json r.json]

1. A store of ``--gb`` GB (6 × 250 float32 windows, 4096 per shard), written with its per-shard SHA-256. Then,
   side by side on the same files: a plain read of every byte; SHA-256 alone; BLAKE2b alone (the alternative
   digest); ``WindowStore.verify`` (SHA-256 and the NaN/Inf scan in one pass) from disk (pages dropped with
   ``posix_fadvise``) and from the page cache; and ``verify`` again in the same process (cached: nothing re-read).
2. A short EsViT/DINO pretraining run (``configs/pretrain_vit_tiny.yaml``, ``--steps`` steps on the synthetic
   default store), timed with verification (store verified at start, checkpoints hashed when written) and without
   (those calls replaced by no-ops), alternating, ``--repeats`` times each; plus the seconds spent inside the
   verification calls themselves, which the wall-time difference only estimates through the noise.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, before benchmarks/ (ssl.py)
if sys.path[1:2] == [str(Path(__file__).resolve().parent)]:
    sys.path.pop(1)

import torch  # noqa: E402

from benchmarks._common import CONFIGS, Timer, load_pretrain_config, make_store, save_results  # noqa: E402
from wearspec.data.store import StoreWriter, WindowStore  # noqa: E402
from wearspec.data import verify as verify_mod  # noqa: E402
from wearspec.ssl.pretrain import run_pretrain  # noqa: E402
from wearspec.utils import checkpoint as ckpt_mod  # noqa: E402
from wearspec.utils.integrity import sha256_file  # noqa: E402

C, T = 6, 250


def big_store(path: Path, gb: float) -> WindowStore:
    if path.exists():
        shutil.rmtree(path)
    n = int(gb * 1e9 / (C * T * 4))
    rng = np.random.default_rng(0)
    block = rng.standard_normal((4096, C, T), dtype=np.float32)
    with StoreWriter(path, channels=[f"ch{i}" for i in range(C)], rate=50.0, window=T, hop=T // 2) as w:
        for s in range(0, n, 4096):
            k = min(4096, n - s)
            w.add(block[:k] + s, f"s{s // 40960}", f"r{s}", np.arange(k) * 2.5)
    return WindowStore(path)


def drop_cache(store: WindowStore) -> None:
    for f, _, _ in store._shards:
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def _blake2b(path: Path) -> str:
    h, buf = hashlib.blake2b(), bytearray(4 << 20)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(memoryview(buf)[:n])
    return h.hexdigest()


def plain_read(store: WindowStore) -> None:
    buf = bytearray(4 << 20)
    for f, _, _ in store._shards:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


def store_table(out: Path, gb: float) -> dict:
    with Timer() as tw:
        store = big_store(out / "store_1gb", gb)
    size = sum(f.stat().st_size for f, _, _ in store._shards)
    rows = {"write (with inline SHA-256)": tw.wall}

    def timed(name, fn, cold):
        if cold:
            drop_cache(store)
        verify_mod._VERIFIED.clear()
        t0 = time.perf_counter()
        fn()
        rows[name] = time.perf_counter() - t0

    timed("plain read, page cache", lambda: plain_read(store), False)
    timed("SHA-256 only, page cache", lambda: [sha256_file(f) for f, _, _ in store._shards], False)
    timed("BLAKE2b only, page cache (the alternative)", lambda: [_blake2b(f) for f, _, _ in store._shards], False)
    timed("verify (SHA-256 + NaN scan), page cache", store.verify, False)
    timed("plain read, from disk", lambda: plain_read(store), True)
    timed("verify, from disk", store.verify, True)
    t0 = time.perf_counter()
    store.verify()  # the shards verified above: cached in this process
    rows["verify again in the same process"] = time.perf_counter() - t0
    print(f"\n1. store: {size / 1e9:.2f} GB in {len(store._shards)} shards")
    print(f"{'step':44s} {'seconds':>8s} {'GB/s':>7s} {'× plain read':>13s}")
    base = rows["plain read, page cache"]
    for name, s in rows.items():
        print(f"{name:44s} {s:8.2f} {size / 1e9 / max(s, 1e-9):7.2f} {s / base:13.2f}")
    shutil.rmtree(out / "store_1gb")
    return {"bytes": size, "shards": len(store._shards), "seconds": rows}


class Counting:
    """Wraps the verification entry points, adding up their seconds; ``off`` makes them no-ops."""

    def __init__(self):
        self.real = (WindowStore.verify, ckpt_mod.check_sidecar, ckpt_mod.sha256_file, ckpt_mod.write_sidecar)
        self.seconds = 0.0

    def _timed(self, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0
        return wrapper

    def set(self, on: bool) -> None:
        verify, check, digest, write = self.real
        if on:
            WindowStore.verify = self._timed(verify)
            ckpt_mod.check_sidecar, ckpt_mod.sha256_file = self._timed(check), self._timed(digest)
            ckpt_mod.write_sidecar = self._timed(write)
        else:
            WindowStore.verify = lambda self: {}
            ckpt_mod.check_sidecar, ckpt_mod.sha256_file = (lambda p: False), (lambda p: "0" * 64)
            ckpt_mod.write_sidecar = lambda p, d=None: d


def pretrain_table(out: Path, steps: int, repeats: int) -> dict:
    store_dir = out / "synthetic"
    store = make_store(store_dir, unlabelled=24, seed=0)
    size = sum(f.stat().st_size for f, _, _ in store._shards)
    count = Counting()
    runs = {"with": [], "without": []}
    for i in range(repeats * 2 + 1):
        mode = "with" if i % 2 else "without"  # run 0: warm-up (imports, allocator), not counted
        count.set(mode == "with")
        count.seconds = 0.0
        verify_mod._VERIFIED.clear()
        run_dir = out / f"run_{i}"
        shutil.rmtree(run_dir, ignore_errors=True)
        cfg = load_pretrain_config(CONFIGS["vit"], store_dir, run_dir, [],
                                   [f"runtime.max_steps={steps if i else 3}", "runtime.ckpt_every=25"])
        with Timer() as t:
            run_pretrain(cfg)
        if i:
            runs[mode].append({"wall_s": t.wall, "verify_s": count.seconds})
            print(f"   run {i} {mode:7s} verification: {t.wall:6.1f} s wall, {count.seconds:.3f} s in verification")
        shutil.rmtree(run_dir)
    count.set(True)
    w = float(np.median([r["wall_s"] for r in runs["with"]]))
    wo = float(np.median([r["wall_s"] for r in runs["without"]]))
    v = float(np.median([r["verify_s"] for r in runs["with"]]))
    print(f"\n2. pretraining: {steps} steps on {len(store)} windows ({size / 1e6:.0f} MB store), median of {repeats}")
    print(f"{'':34s} {'seconds':>8s} {'of the run':>11s}")
    print(f"{'run with verification':34s} {w:8.1f} {1:11.3f}")
    print(f"{'run without':34s} {wo:8.1f} {wo / w:11.3f}")
    print(f"{'inside the verification calls':34s} {v:8.3f} {v / w:11.4f}")
    return {"steps": steps, "store_bytes": size, "windows": len(store), "runs": runs, "with_s": w, "without_s": wo,
            "verify_s": v}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=1.0, help="size of the store of part 1")
    ap.add_argument("--steps", type=int, default=60, help="optimiser steps of each pretraining run")
    ap.add_argument("--repeats", type=int, default=1, help="runs with and without verification, each")
    ap.add_argument("--out", type=Path, default=Path("out/integrity"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--skip-store", action="store_true")
    ap.add_argument("--skip-pretrain", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the VM is shared: one thread per process avoids OpenMP spin-waits
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    if not args.skip_store:
        results["store"] = store_table(args.out, args.gb)
    if not args.skip_pretrain:
        results["pretrain"] = pretrain_table(args.out, args.steps, args.repeats)
    save_results(args.json, results)


if __name__ == "__main__":
    main()
