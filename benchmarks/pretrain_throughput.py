"""Pretraining throughput on one device: windows/s and model FLOPs utilisation (MFU) of the real recipe.

For every config (default: ``configs/pretrain_vit_small_gpu.yaml`` and ``configs/pretrain_swin_tiny_gpu.yaml``:
ViT-S and Swin-T with their DINO and region heads, 2 global + 8 local crops) and every precision of ``--amp``
(``none`` = fp32, ``bf16`` = autocast) and every attention of ``--attention`` (``sdpa``: timm's fused path through
``F.scaled_dot_product_attention``, the default; ``explicit``: timm's softmax path), optionally also with
``runtime.compile=true`` (``--compile``):

* **windows/s**: ``run_pretrain`` runs ``--warmup + --steps`` steps on the synthetic default data in a fresh
  output folder (one process, this device). The rate is taken from ``metrics.jsonl`` between the line at step
  ``--warmup`` and the last one, so CUDA start-up, cuDNN autotuning and compilation are left out. The timed
  steps must lie inside the first epoch (an epoch end writes a checkpoint): the script says so when the
  store is too small for the batch (raise ``--unlabelled``).
* **FLOPs per step**, counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` around two fresh
  runs of ``run_pretrain`` that stop after 1 and 2 steps; the difference is one training step (student
  forward + backward of every view, teacher forward of the global views, heads, losses). The set-up's
  front-end fit is in both and cancels. Counted once per config, in fp32 (autocast changes the precision
  of the same operations, not their number). Attention is counted through PyTorch's math kernel (the counter
  does not see every fused kernel); the FLOPs are the same whatever kernel runs.
* **MFU** = FLOPs per step × steps/s / peak. Peak: ``--peak-tflops FP32,BF16``, else the dense peak of a
  known GPU by name (H100 SXM / H200: 67 fp32, 989 bf16; H100 PCIe: 51, 756; A100: 19.5, 312 TFLOP/s).
  fp32 runs with TF32 matmuls off (PyTorch's default), so its MFU is against the fp32 (non-tensor-core) peak.

Also reported: peak GPU memory per run and the bf16 / fp32 speed-up per config.

    python benchmarks/pretrain_throughput.py [--device cuda] [--amp none,bf16] [--compile] [--steps 40]
        [--warmup 20] [--batch-size 0] [--unlabelled 100] [--json PATH]
    # a CPU smoke run of the same code (no known peak: MFU is left out unless --peak-tflops is given):
    python benchmarks/pretrain_throughput.py --device cpu --configs configs/pretrain_vit_tiny.yaml --amp none \
        --steps 4 --warmup 2 --log-every 2 --unlabelled 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as ``python benchmarks/pretrain_throughput.py``, this folder is sys.path[0]: drop it (its ssl.py would
# shadow the standard library's ssl) and put the repository first.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from timm.layers import set_fused_attn as timm_set_fused_attn, use_fused_attn  # noqa: E402

from benchmarks._common import make_store, save_results  # noqa: E402
from wearspec.config import load_config  # noqa: E402
from wearspec.data.store import WindowStore  # noqa: E402
from wearspec.evaluate.features import resolve_device  # noqa: E402
from wearspec.ssl.pretrain import PretrainConfig, run_pretrain  # noqa: E402

DEFAULT_CONFIGS = [ROOT / "configs" / "pretrain_vit_small_gpu.yaml", ROOT / "configs" / "pretrain_swin_tiny_gpu.yaml"]
# Dense peak TFLOP/s (fp32 without tensor cores, bf16 tensor cores), by a substring of the device name; the
# first match wins, so the more specific names come first.
PEAKS = [("H100 PCIe", (51.2, 756.0)), ("H100 NVL", (60.0, 835.0)), ("H100", (66.9, 989.4)),
         ("H200", (66.9, 989.4)), ("A100", (19.5, 312.0))]


def peak_tflops(device: torch.device, given: str | None) -> tuple[float, float] | None:
    """(fp32, bf16) peak TFLOP/s: ``--peak-tflops FP32,BF16``, else by GPU name; None when unknown."""
    if given:
        try:
            fp32, bf16 = (float(v) for v in given.split(","))
        except ValueError:
            raise SystemExit(f"--peak-tflops: expected two numbers FP32,BF16 (TFLOP/s), got {given!r}")
        return fp32, bf16
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((p for key, p in PEAKS if key in name), None)


def run_config(path: Path, store: Path, out: Path, device: str, amp: str, compile_: bool, max_steps: int,
               log_every: int, batch_size: int, overrides: list[str]) -> PretrainConfig:
    cfg = load_config(PretrainConfig, path, overrides)
    cfg.store, cfg.output = str(store), str(out)
    if batch_size:
        cfg.optim.batch_size = batch_size
    r = cfg.runtime
    r.device, r.amp, r.compile, r.max_steps, r.log_every = device, amp, compile_, max_steps, log_every
    r.ckpt_every, r.knn_every, r.logger, r.keep_last = 10 ** 9, 0, "console", 1
    if out.exists():
        shutil.rmtree(out)
    run_pretrain(cfg)
    return cfg


def flops_per_step(path: Path, store: Path, work: Path, device: str, batch_size: int, overrides: list[str]) -> int:
    """Model FLOPs of one training step: counted runs of 2 and 1 steps, subtracted (see the module docstring).
    Counted once per config, in fp32: autocast changes the precision of the same operations, not their count."""
    totals = []
    for steps in (1, 2):
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            run_config(path, store, work / f"flops{steps}", device, "none", False, steps, 1, batch_size, overrides)
        totals.append(counter.get_total_flops())
    return totals[1] - totals[0]


def steady_rate(run_dir: Path, warmup: int, global_batch: int) -> dict:
    """steps/s and windows/s between the metrics line at step ``warmup`` and the last line."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r and "time" in r]
    start = next((r for r in rows if r["step"] == warmup), None)
    last = rows[-1] if rows else None
    if start is None or last is None or last["step"] <= warmup:
        raise SystemExit(f"{run_dir / 'metrics.jsonl'}: no line at step {warmup} and after it; make --warmup and "
                         "--steps multiples of --log-every")
    steps_per_s = (last["step"] - start["step"]) / (last["time"] - start["time"])
    return {"steps_per_s": steps_per_s, "windows_per_s": steps_per_s * global_batch,
            "timed_steps": last["step"] - start["step"]}


def check_first_epoch(path: Path, store: Path, args: argparse.Namespace) -> None:
    """Exit with a clear message unless the timed steps end inside the first epoch (an epoch end checkpoints)."""
    cfg = load_config(PretrainConfig, path, args.set)
    batch = args.batch_size or cfg.optim.batch_size
    per_epoch = len(WindowStore(store)) // batch
    if args.warmup + args.steps > per_epoch:
        raise SystemExit(f"{store}: {per_epoch} steps per epoch at batch {batch}, fewer than --warmup + --steps = "
                         f"{args.warmup + args.steps}; raise --unlabelled (≈143 windows a subject) or lower --steps")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", type=Path, nargs="+", default=DEFAULT_CONFIGS, help="pretraining configs")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--amp", default="none,bf16", help="comma-separated precisions: none (fp32), bf16")
    ap.add_argument("--compile", action="store_true", help="also time every precision with runtime.compile=true")
    ap.add_argument("--attention", default="sdpa",
                    help="comma-separated: sdpa (timm's fused attention), explicit (timm's softmax path). On a CPU "
                         "under bf16 autocast every run takes the explicit path (models.backbones."
                         "attention_for_autocast), so there the two are the same")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps first (start-up, autotuning, compiling)")
    ap.add_argument("--log-every", type=int, default=10, help="metrics.jsonl line every this many steps")
    ap.add_argument("--batch-size", type=int, default=0, help="per device; 0: the config's optim.batch_size")
    ap.add_argument("--unlabelled", type=int, default=100,
                    help="unlabelled synthetic subjects added to the 24 labelled ones (≈143 windows each)")
    ap.add_argument("--store", type=Path, default=None, help="a window store instead of the synthetic data")
    ap.add_argument("--peak-tflops", default=None, metavar="FP32,BF16", help="device peak for the MFU")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (every config)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.warmup % args.log_every or args.steps % args.log_every or args.steps < 1:
        ap.error("--warmup and --steps must be multiples of --log-every (and --steps ≥ 1)")
    amps = [a.strip() for a in args.amp.split(",") if a.strip()]
    if not amps or set(amps) - {"none", "bf16"}:
        ap.error(f"--amp: expected a comma-separated list of none, bf16; got {args.amp!r}")
    attentions = [a.strip() for a in args.attention.split(",") if a.strip()]
    if not attentions or set(attentions) - {"sdpa", "explicit"}:
        ap.error(f"--attention: expected a comma-separated list of sdpa, explicit; got {args.attention!r}")
    device = resolve_device(args.device)
    peak = peak_tflops(device, args.peak_tflops)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (PyTorch's default; made explicit)
    rows, fused_default = [], use_fused_attn()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        store = args.store or make_store(work / "store", args.unlabelled, 0).path
        for path in args.configs:
            check_first_epoch(path, store, args)
            flops = flops_per_step(path, store, work, str(device), args.batch_size, args.set)
            for amp, attention, compile_ in itertools.product(amps, attentions,
                                                              [False, True] if args.compile else [False]):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                run_dir = work / f"{path.stem}-{amp}-{attention}{'-compile' if compile_ else ''}"
                timm_set_fused_attn(attention == "sdpa")  # read by the backbones when they are built
                try:
                    cfg = run_config(path, store, run_dir, str(device), amp, compile_, args.warmup + args.steps,
                                     args.log_every, args.batch_size, args.set)
                finally:
                    timm_set_fused_attn(fused_default)
                rate = steady_rate(run_dir, args.warmup, cfg.optim.batch_size)
                row = {"config": path.name, "backbone": cfg.backbone.name, "amp": amp, "attention": attention,
                       "compile": compile_,
                       "batch": cfg.optim.batch_size, "views": [cfg.crops.n_global, cfg.crops.n_local],
                       **rate, "flops_per_step": flops,
                       "achieved_tflops": flops * rate["steps_per_s"] / 1e12,
                       "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2 ** 30
                                           if device.type == "cuda" else None)}
                if peak:
                    row["mfu"] = row["achieved_tflops"] / (peak[1] if amp == "bf16" else peak[0])
                rows.append(row)
                print(f"{path.name} amp={amp} attention={attention} compile={compile_}: "
                      f"{rate['windows_per_s']:.0f} windows/s, {flops / 1e9:.1f} GFLOP/step, {row['achieved_tflops']:.2f} TFLOP/s"
                      + (f", MFU {100 * row['mfu']:.1f} %" if "mfu" in row else ""), flush=True)
                shutil.rmtree(run_dir, ignore_errors=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\ndevice {device} ({name}); peak TFLOP/s fp32/bf16: {peak or 'unknown'}; timed steps {args.steps} "
          f"after {args.warmup}; torch {torch.__version__}\n")
    print("| config | amp | attention | compile | batch | windows/s | GFLOP/step | TFLOP/s | MFU | peak memory "
          "| vs fp32 | vs sdpa |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def ratio(row: dict, **other) -> float | None:
        base = next((r for r in rows if all(r[k] == other.get(k, row[k])
                                            for k in ("config", "amp", "attention", "compile"))), None)
        return row["windows_per_s"] / base["windows_per_s"] if base else None

    for row in rows:
        row["speedup_vs_fp32"], row["speedup_vs_sdpa"] = ratio(row, amp="none"), ratio(row, attention="sdpa")
        mem = f"{row['peak_memory_gib']:.1f} GiB" if row["peak_memory_gib"] is not None else "–"
        mfu = f"{100 * row['mfu']:.1f} %" if "mfu" in row else "–"
        fp32, sdpa = (f"{r:.2f}×" if r else "–" for r in (row["speedup_vs_fp32"], row["speedup_vs_sdpa"]))
        print(f"| {row['config']} | {row['amp']} | {row['attention']} | {row['compile']} | {row['batch']} "
              f"| {row['windows_per_s']:.0f} | {row['flops_per_step'] / 1e9:.1f} | {row['achieved_tflops']:.2f} "
              f"| {mfu} | {mem} | {fp32} | {sdpa} |")
    return save_results(args.json, {"device": str(device), "device_name": name, "peak_tflops": peak,
                                    "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()},
                                    "results": rows})


if __name__ == "__main__":
    main()
