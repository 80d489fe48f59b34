"""Batched on-device views vs per-sample CPU views: full DINO training steps per second.

Both paths run the same training step on the same model (the recipe's student + EMA teacher with DINO
heads, e.g. ``vit_tiny_cpu``; DINO view loss, AdamW, gradient clipping, EMA update) with the same batch,
crop sizes and augmentation settings (from ``--config``, default ``configs/pretrain_vit_tiny.yaml``); only
the way the multi-crop views are made differs:

* **batched** (wearspec): the DataLoader yields raw windows (B, C, T); ``ViewMaker`` augments the batch
  (rotation, scaling, time warp, jitter), computes the spectrogram with ``SpectrogramFrontend``, crops
  every view with ``MultiCrop`` and applies the spectrogram augmentations (time roll, masks, noise), all
  batched tensor ops with one seeded generator;
* **per-sample** (the classic way): a ``Dataset.__getitem__`` that makes the views of one window at a
  time: per window and copy, numpy rotation (Rodrigues), scaling, time warp (``np.interp``), jitter, a
  ``torch.stft`` of the window (the same Hann/centre/reflect settings, magnitude, log1p and normalisation
  as the front end), then per view a random time crop resized with ``F.interpolate`` (bilinear) and numpy
  time roll, time/frequency masks and noise; the DataLoader's default collate stacks the views. Measured
  with ``num_workers=0`` and with ``--workers`` worker processes (default 1: the VM has 2 cores).

Reported: training steps/s and windows/s of each path (median over interleaved rounds), the view-making
time alone per batch, and the ratio batched / per-sample. Both paths use ``torch.set_num_threads(--threads)``
for the model.

    python benchmarks/augment_path.py [--config configs/pretrain_vit_tiny.yaml] [--steps 6] [--rounds 3]
                                      [--batch-size 64] [--workers 1] [--threads 1] [--json PATH]
    # on a GPU: the model step is fast there, so the CPU's per-sample view making is what limits it
    python benchmarks/augment_path.py --device cuda --amp bf16 --config configs/pretrain_vit_small_gpu.yaml \
                                      --batch-size 256 --workers 4 --threads 4 --steps 20
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wearspec.config import from_dict, load_config, to_dict  # noqa: E402
from wearspec.data.prepare import PrepareConfig  # noqa: E402
from wearspec.data.augment import AugmentConfig, build_sensor_augment, build_spec_augment, make_generator  # noqa: E402
from wearspec.data.augment import triads_from_channels  # noqa: E402
from wearspec.data.dataset import WindowDataset  # noqa: E402
from wearspec.data.frontend import build_frontend  # noqa: E402
from wearspec.data.prepare import prepare  # noqa: E402
from wearspec.data.store import WindowStore  # noqa: E402
from wearspec.evaluate.features import resolve_device  # noqa: E402
from wearspec.models.backbones import BackboneConfig, build_backbone  # noqa: E402
from wearspec.models.encoder import SpectrogramEncoder  # noqa: E402
from wearspec.ssl.heads import DINOHead  # noqa: E402
from wearspec.ssl.losses import DINOLoss  # noqa: E402
from wearspec.ssl.model import SSLNet, ViewMaker  # noqa: E402
from wearspec.ssl.multicrop import MultiCrop  # noqa: E402
from wearspec.ssl.pretrain import PretrainConfig  # noqa: E402
from wearspec.training.runtime import attention_for_autocast  # noqa: E402
from wearspec.training.schedules import ema_update, param_groups  # noqa: E402


# -- the per-sample path ------------------------------------------------------------------------------
def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation (3, 3), axis uniform, Haar angle density restricted to ≤ max_deg (numpy)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    th_max = math.radians(max_deg)
    target = rng.random() * (th_max - math.sin(th_max))
    lo, hi = 0.0, th_max
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mid - math.sin(mid) < target else (lo, mid)
    th = 0.5 * (lo + hi)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * k @ k


class PerSampleViews(Dataset):
    """``__getitem__(i)`` → the multi-crop views of window i as a tuple of (C, F_v, N_v) float32 tensors,
    made one window at a time (numpy + per-window torch.stft + per-view F.interpolate)."""

    def __init__(self, store: WindowStore, indices: np.ndarray, frontend, aug: AugmentConfig, crops, view_sizes,
                 seed: int = 0):
        self.store, self.indices, self.aug, self.crops, self.view_sizes = store, indices, aug, crops, view_sizes
        self.triads = triads_from_channels(store.channels)
        self.n_fft, self.hop = frontend.n_fft, frontend.hop_length
        self.window = torch.hann_window(self.n_fft)
        self.mean = frontend.norm_mean.clone().view(-1, 1, 1)
        self.std = frontend.norm_std.clone().view(-1, 1, 1)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices)

    def _sensor(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = self.aug
        x = x.astype(np.float64, copy=True)
        if rng.random() < a.rotation_p:
            r = _rotation(rng, a.rotation_max_deg)
            for t in self.triads:
                x[list(t)] = r @ x[list(t)]
        if rng.random() < a.scaling_p:
            x *= math.exp(a.scaling_sigma * rng.normal())
        if rng.random() < a.time_warp_p:
            t = x.shape[1]
            speed = np.interp(np.linspace(0, 1, t), np.linspace(0, 1, a.time_warp_knots),
                              np.exp(a.time_warp_strength * rng.normal(size=a.time_warp_knots)))
            path = np.cumsum(speed) - speed[0]
            path *= (t - 1) / path[-1]
            x = np.stack([np.interp(path, np.arange(t), ch) for ch in x])
        if rng.random() < a.jitter_p:
            x += a.jitter_sigma * rng.normal(size=x.shape)
        return x.astype(np.float32)

    def _spectrogram(self, x: np.ndarray) -> torch.Tensor:
        z = torch.stft(torch.from_numpy(x), self.n_fft, self.hop, window=self.window, center=True,
                       pad_mode="reflect", return_complex=True)
        return (torch.log1p(z.abs()) - self.mean) / self.std  # (C, F, N)

    def _crop(self, spec: torch.Tensor, scale, size, rng: np.random.Generator) -> torch.Tensor:
        n = spec.shape[-1]
        width = n * rng.uniform(*scale)
        start = (n - width) * rng.random()
        a, b = int(math.floor(start)), min(n, int(math.ceil(start + width)) + 1)
        return F.interpolate(spec[None, :, :, a:b], size=tuple(size), mode="bilinear", align_corners=False)[0]

    def _spec_aug(self, v: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        a, v = self.aug, v.numpy().copy()
        if rng.random() < a.time_roll_p:
            v = np.roll(v, int(rng.integers(1, v.shape[-1])), axis=-1)
        for p, n_masks, width, axis in ((a.time_mask_p, a.time_masks, a.time_mask_width, -1),
                                        (a.freq_mask_p, a.freq_masks, a.freq_mask_width, -2)):
            if rng.random() < p:
                for _ in range(n_masks):
                    w = int(rng.integers(1, min(width, v.shape[axis]) + 1))
                    s = int(rng.integers(0, v.shape[axis] - w + 1))
                    sl = [slice(None)] * v.ndim
                    sl[axis] = slice(s, s + w)
                    v[tuple(sl)] = 0.0
        if rng.random() < a.noise_p:
            v += (a.noise_sigma * rng.normal(size=v.shape)).astype(np.float32)
        return torch.from_numpy(v)

    def __getitem__(self, k: int):
        rng = np.random.default_rng([self.seed, int(k)])
        x = self.store.read(int(self.indices[k]))
        specs = [self._spectrogram(self._sensor(x, rng)) for _ in range(self.crops.n_global)]
        views = []
        for v, size in enumerate(self.view_sizes):
            is_global = v < self.crops.n_global
            src = specs[v] if is_global else specs[(v - self.crops.n_global) % self.crops.n_global]
            scale = self.crops.global_scale if is_global else self.crops.local_scale
            views.append(self._spec_aug(self._crop(src, scale, size, rng), rng))
        return tuple(views)


# -- the shared training step -------------------------------------------------------------------------
def build(cfg: PretrainConfig, store: WindowStore):
    frontend = build_frontend(cfg.frontend, store.rate, store.window, store.channels)
    frontend.fit(torch.from_numpy(store.read_batch(np.arange(min(len(store), cfg.frontend.fit_windows)))))
    input_size = frontend.output_shape(store.n_channels, store.window)[1:]

    def net(drop_path: float) -> SSLNet:
        b = from_dict(BackboneConfig, {**to_dict(cfg.backbone), "drop_path_rate": drop_path})
        backbone = build_backbone(b, store.n_channels, input_size)
        h = cfg.head
        head = DINOHead(backbone.embed_dim, h.out_dim, h.hidden_dim, h.bottleneck_dim, h.nlayers, h.norm_last_layer)
        return SSLNet(SpectrogramEncoder(frontend, backbone), head)

    torch.manual_seed(0)
    student, teacher = net(cfg.backbone.drop_path_rate), net(0.0)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    multicrop = MultiCrop(cfg.crops, input_size=input_size)
    views = ViewMaker(frontend, build_sensor_augment(cfg.augment, channels=store.channels), multicrop,
                      build_spec_augment(cfg.augment), cfg.crops.n_global)
    return frontend, student, teacher, multicrop, views


def make_step(cfg: PretrainConfig, student: SSLNet, teacher: SSLNet, amp: str = "none"):
    """One DINO training step on the views (the recipe's order); returns the loss as a float, which waits for
    the device, so a step's wall-clock is all of its work. ``amp="bf16"``: autocast as ``runtime.amp=bf16``."""
    dev = next(student.parameters()).device
    loss_fn = DINOLoss(cfg.head.out_dim, cfg.crops.n_global, cfg.loss.student_temp, cfg.loss.center_momentum).to(dev)
    no_decay = {f"encoder.backbone.{n}" for n in student.encoder.backbone.no_weight_decay()}
    opt = torch.optim.AdamW(param_groups(student, cfg.optim.weight_decay, no_decay_names=no_decay), lr=1e-4)
    amp_dtype = torch.bfloat16 if amp == "bf16" else None
    for net in (student, teacher):
        attention_for_autocast(net, dev.type, amp_dtype)  # as run_pretrain does
    student.train()
    teacher.train(False)

    def step(crops: list[torch.Tensor]) -> float:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp_dtype is not None):
            s = student(crops)
            with torch.no_grad():
                t = teacher(crops[: cfg.crops.n_global])
            loss = loss_fn(s["cls"], t["cls"], cfg.loss.teacher_temp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.optim.clip_grad)
        opt.step()
        ema_update(teacher, student, cfg.optim.momentum_teacher)
        loss_fn.update_center(t["cls"])
        return loss.detach().item()

    return step


def run_path(name: str, loader, make_views, step, n_steps: int, sync=lambda: None) -> dict:
    """Time ``n_steps`` full steps (data → views → train step) after one untimed step (worker start-up);
    returns steps/s and the time spent waiting for / making the views per step. ``sync``: waits for the
    device (``torch.cuda.synchronize`` on a GPU, where the views are made asynchronously) before the view
    time is read; ``step`` ends in ``.item()``, so the step rate needs no extra wait."""
    it = iter(loader)
    step(make_views(next(it)))
    t_views = 0.0
    t0 = time.perf_counter()
    for _ in range(n_steps):
        tv = time.perf_counter()
        crops = make_views(next(it))
        sync()
        t_views += time.perf_counter() - tv
        step(crops)
    wall = time.perf_counter() - t0
    return {"path": name, "steps_per_s": n_steps / wall, "view_s_per_step": t_views / n_steps}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "pretrain_vit_tiny.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pretraining config override")
    ap.add_argument("--batch-size", type=int, default=0, help="0: the config's optim.batch_size")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per path and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers of the second per-sample row")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the training step")
    ap.add_argument("--device", default="cpu", help="cpu | cuda[:N] | auto: where the model trains and the batched "
                    "views are made (the per-sample views are always made on the CPU, then copied over)")
    ap.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast of the training step")
    ap.add_argument("--store", type=Path, default=None, help="window store (default: the synthetic data, prepared)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(PretrainConfig, args.config, args.set)
    bs = args.batch_size or cfg.optim.batch_size

    with tempfile.TemporaryDirectory() as tmp:
        store_path = args.store or Path(tmp) / "store"
        if args.store is None:
            prepare("synthetic", None, store_path, PrepareConfig(), progress=False)
        store = WindowStore(store_path)
        frontend, student, teacher, multicrop, view_maker = build(cfg, store)
        n_needed = bs * (args.steps + 1)
        idx = np.resize(np.random.default_rng(0).permutation(len(store)), n_needed)
        per_sample = PerSampleViews(store, idx, frontend, cfg.augment, cfg.crops, multicrop.view_sizes())  # CPU copy
        dev = resolve_device(args.device)
        student.to(dev)  # the front end is the student's: the batched views are made on `dev`
        teacher.to(dev)
        step = make_step(cfg, student, teacher, args.amp)
        gen = make_generator(0, dev)
        pin = dev.type == "cuda"
        sync = (lambda: torch.cuda.synchronize(dev)) if pin else (lambda: None)  # noqa: E731
        raw_loader = lambda: DataLoader(WindowDataset(store, idx), batch_size=bs, shuffle=False, drop_last=True,  # noqa: E731
                                        pin_memory=pin)
        to_dev = lambda b: [v.to(dev, non_blocking=True) for v in b]  # noqa: E731
        paths = {
            "batched (ViewMaker, on device)": (raw_loader, lambda b: view_maker(b["x"].to(dev, non_blocking=True), gen)),
            "per-sample (Dataset, 0 workers)": (lambda: DataLoader(per_sample, batch_size=bs, num_workers=0,
                                                                   pin_memory=pin), to_dev),
            f"per-sample (Dataset, {args.workers} workers)": (
                lambda: DataLoader(per_sample, batch_size=bs, num_workers=args.workers, prefetch_factor=2,
                                   pin_memory=pin), to_dev),
        }
        if args.workers == 0:
            paths.pop(f"per-sample (Dataset, {args.workers} workers)")
        # the views of both paths have the same shapes
        shapes_b = [tuple(v.shape) for v in view_maker(torch.from_numpy(store.read_batch(idx[:bs])).to(dev), gen)]
        shapes_p = [tuple(v.shape) for v in next(iter(DataLoader(per_sample, batch_size=bs)))]
        assert shapes_b == shapes_p, (shapes_b, shapes_p)
        rows: dict[str, list[dict]] = {k: [] for k in paths}
        for r in range(args.rounds):
            order = list(paths) if r % 2 == 0 else list(paths)[::-1]
            for name in order:
                make_loader, make_views = paths[name]
                rows[name].append(run_path(name, make_loader(), make_views, step, args.steps, sync))
                print(f"round {r + 1} {name}: {rows[name][-1]['steps_per_s']:.3f} steps/s", flush=True)

    summary = []
    for name, rs in rows.items():
        sps = statistics.median(r["steps_per_s"] for r in rs)
        summary.append({"path": name, "steps_per_s": sps, "windows_per_s": sps * bs,
                        "view_s_per_step": statistics.median(r["view_s_per_step"] for r in rs),
                        "rounds": [round(r["steps_per_s"], 4) for r in rs]})
    base = summary[0]["steps_per_s"]
    print(f"\nmodel {cfg.backbone.name} student + EMA teacher, DINO head out_dim {cfg.head.out_dim}; batch {bs}; "
          f"views {shapes_b[0][2:]} × {cfg.crops.n_global} + {shapes_b[-1][2:]} × {cfg.crops.n_local}; "
          f"device {dev}{f' ({torch.cuda.get_device_name(dev)})' if dev.type == 'cuda' else ''}, amp {args.amp}; "
          f"torch threads {args.threads}; median of {args.rounds} rounds × {args.steps} steps\n")
    print("| path | training steps/s | windows/s | view making per step | batched speed-up |")
    print("|---|---|---|---|---|")
    for s in summary:
        s["speedup_of_batched"] = base / s["steps_per_s"]
        ratio = "–" if s is summary[0] else f"{s['speedup_of_batched']:.2f}×"
        print(f"| {s['path']} | {s['steps_per_s']:.3f} | {s['windows_per_s']:.1f} | {1e3 * s['view_s_per_step']:.0f} ms "
              f"| {ratio} |")
    result = {"config": str(args.config), "overrides": args.set, "batch_size": bs, "threads": args.threads,
              "device": str(dev), "amp": args.amp,
              "steps": args.steps, "rounds": args.rounds, "view_shapes": shapes_b, "results": summary}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
