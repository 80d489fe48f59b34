"""Window-store benchmark: read throughput vs what a training step consumes, and peak RSS vs store size.

    python benchmarks/store.py [--windows 20000] [--json out.json]

1. Read rate: one shuffled epoch through ``DataLoader(WindowDataset, batch_size=256)`` with 0 and
   2 workers (windows/s).
2. Consumption: windows/s of one training step of a tiny ViT (timm, dim 96, depth 4) on the
   spectrogram front end's output, batch 64 — what a CPU pretraining step eats.
3. Memory: peak RSS of a process that reads a whole store in shuffled order, for a store of N and
   of 10×N windows (same process code, fresh subprocess each); target ratio ≤ 1.1. For contrast,
   the same read done by indexing ``np.memmap`` views, whose touched pages count as resident.
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
import torch

C, T, RATE = 6, 250, 50.0  # 5 s windows of a 6-axis IMU at 50 Hz


def make_store(path: Path, n: int, seed: int = 0) -> None:
    from wearspec.data.store import StoreWriter

    rng = np.random.default_rng(seed)
    with StoreWriter(path, channels=[f"ch{i}" for i in range(C)], rate=RATE, window=T, hop=T // 2,
                     label_names=["a", "b"], dtype="float32") as w:
        for s in range(0, n, 5000):
            k = min(5000, n - s)
            w.add(rng.standard_normal((k, C, T), dtype=np.float32), f"s{s // 5000}", f"r{s}",
                  np.arange(k) * 2.5, rng.integers(0, 2, k))


def read_epoch(store_path: Path, workers: int, batch: int = 256) -> float:
    from torch.utils.data import DataLoader

    from wearspec.data.dataset import WindowDataset

    ds = WindowDataset(store_path)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    n = 0
    for b in loader:
        n += b["x"].shape[0]
    return n / (time.perf_counter() - t0)


def train_step_rate(batch: int = 64, steps: int = 8) -> float:
    from timm.models.vision_transformer import VisionTransformer

    from wearspec.data.frontend import SpectrogramFrontend

    front = SpectrogramFrontend(n_fft=64, hop_length=16, power=1.0, log="log1p")
    x = torch.randn(batch, C, T)
    spec = front(x)
    f, n = spec.shape[-2:]
    model = VisionTransformer(img_size=(f - f % 4, n - n % 4), patch_size=4, in_chans=C, embed_dim=96, depth=4,
                              num_heads=3, num_classes=64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        s = front(x)[..., : f - f % 4, : n - n % 4]
        loss = model(s).logsumexp(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


def rss_probe(store_path: str, mode: str) -> None:
    """Read the whole store in shuffled batches of 256; print peak RSS (KiB).

    mode "store": WindowStore.read_batch (positioned reads, what the Dataset uses);
    mode "memmap": fancy indexing into np.memmap views of the shards (for contrast).
    """
    from wearspec.data.store import WindowStore

    st = WindowStore(store_path)
    order = np.random.default_rng(0).permutation(len(st))
    maps = [st.shard_array(s) for s in range(len(st.manifest["shards"]))]
    total = 0.0
    for a in range(0, len(order), 256):
        idx = order[a : a + 256]
        if mode == "store":
            x = st.read_batch(idx)
        else:
            s, r = np.divmod(idx, st.shard_windows)
            x = np.stack([maps[i][j] for i, j in zip(s, r)]).astype(np.float32)
        total += float(x[:, 0, 0].sum())
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def peak_rss_mib(store_path: Path, mode: str = "store") -> float:
    out = subprocess.run([sys.executable, __file__, "--rss-probe", str(store_path), "--rss-mode", mode],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=20000, help="windows in the small store (the large has 10×)")
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--rss-probe", help=argparse.SUPPRESS)
    ap.add_argument("--rss-mode", default="store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.rss_probe:
        return rss_probe(args.rss_probe, args.rss_mode)
    with tempfile.TemporaryDirectory() as d:
        small, large = Path(d) / "small", Path(d) / "large"
        make_store(small, args.windows)
        make_store(large, 10 * args.windows)
        mb = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20  # noqa: E731
        r0 = read_epoch(small, 0)
        r2 = read_epoch(small, 2)
        step = train_step_rate()
        rss_s, rss_l = peak_rss_mib(small), peak_rss_mib(large)
        mm_s, mm_l = peak_rss_mib(small, "memmap"), peak_rss_mib(large, "memmap")
        res = {
            "window": [C, T], "small_store_windows": args.windows, "small_store_mib": round(mb(small), 1),
            "large_store_mib": round(mb(large), 1),
            "read_windows_per_s_workers0": round(r0), "read_windows_per_s_workers2": round(r2),
            "train_step_windows_per_s": round(step, 1),
            "read_over_consumption": round(r0 / step, 1),
            "peak_rss_mib_small": round(rss_s, 1), "peak_rss_mib_large": round(rss_l, 1),
            "rss_ratio_large_over_small": round(rss_l / rss_s, 3),
            "contrast_memmap_peak_rss_mib_small": round(mm_s, 1), "contrast_memmap_peak_rss_mib_large": round(mm_l, 1),
            "contrast_memmap_rss_ratio": round(mm_l / mm_s, 3),
        }
    print(f"{'measure':44s} value")
    for k, v in res.items():
        print(f"{k:44s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
