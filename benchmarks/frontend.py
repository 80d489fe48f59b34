"""SpectrogramFrontend vs scipy.signal.stft vs torchaudio.transforms.Spectrogram, side by side in one run.

All three compute the same power spectrogram of the same batch (default: 256 windows × 6 channels ×
1000 samples, n_fft 64, hop 16, periodic Hann window of 64, centred frames with reflect padding,
|X|², one-sided → (256, 6, 33, 63)). Timing: several rounds; in each, every method runs as a block
(warm-up calls, then timed calls), block order rotating between rounds so background load is shared
alike; the median over all timed calls is reported with the minor page faults per call (fresh large
buffers cost page faults on CPU, which is often the difference between runs). Torch paths run under
``torch.inference_mode()`` with ``torch.set_num_threads(--threads)``; scipy is given the numpy array
(conversion not timed) and computes |Z|² from its complex output. A second front-end row times the
autograd graph (input with requires_grad: one convolution, as in training and in ONNX); the ratios use
the first row. On CUDA the torch paths are timed again with synchronisation (scipy stays on the CPU).

    python benchmarks/frontend.py [--json results.json] [--batch 256 --channels 6 --samples 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.signal
import torch
import torchaudio

from wearspec.data.frontend import SpectrogramFrontend


def _time(fns: dict, rounds: int, repeats: int, warmup: int, sync) -> dict[str, dict[str, float]]:
    """Median seconds per call and minor page faults per call of each function.

    Each round runs every method as a block (``warmup`` untimed calls, then ``repeats`` timed calls),
    so each reaches its own steady allocator state, as in a loop that calls it; the block order
    rotates between rounds so that background load is shared alike.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    faults: dict[str, int] = {name: 0 for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[name]
            for _ in range(warmup):
                fn()
            sync()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - t0)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    n = rounds * repeats
    return {name: {"s": statistics.median(v), "faults": faults[name] / n} for name, v in times.items()}


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((args.batch, args.channels, args.samples)).astype(np.float32)
    n_fft, hop = args.n_fft, args.hop
    fe = SpectrogramFrontend(n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode="reflect", power=2.0)
    ta = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop, power=2.0, center=True, pad_mode="reflect")

    def scipy_power():
        # boundary="even" is reflect padding of n_fft//2; padded=False: the same N frames as torch
        _, _, z = scipy.signal.stft(x_np, window="hann", nperseg=n_fft, noverlap=n_fft - hop, boundary="even",
                                    padded=False, return_onesided=True, axis=-1)
        return z.real ** 2 + z.imag ** 2

    results: dict = {"settings": {"batch": args.batch, "channels": args.channels, "samples": args.samples,
                                  "n_fft": n_fft, "hop_length": hop, "window": "hann (periodic)", "center": True,
                                  "pad_mode": "reflect", "power": 2.0, "threads": args.threads,
                                  "rounds": args.rounds, "repeats": args.repeats, "warmup": args.warmup},
                     "versions": {"torch": torch.__version__, "torchaudio": torchaudio.__version__,
                                  "scipy": scipy.__version__, "python": platform.python_version()},
                     "devices": {}}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    for dev in devices:
        x = torch.from_numpy(x_np).to(dev)
        x_grad = x.clone().requires_grad_()
        fe_d, ta_d = fe.to(dev), ta.to(dev)
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        with torch.inference_mode():
            ref = ta_d(x).cpu().numpy()
            out = fe_d(x).cpu().numpy()
            scale = scipy.signal.get_window("hann", n_fft).sum() ** 2  # scipy's 'spectrum' scaling undone
            errs = {"frontend": _rel_err(out, ref), "torchaudio": 0.0, "scipy": _rel_err(scipy_power() * scale, ref)}
            errs["frontend_graph"] = errs["frontend"]

            def frontend_graph():  # the single-conv graph that autograd, training and ONNX export use
                with torch.inference_mode(False), torch.enable_grad():
                    return fe_d(x_grad)

            fns = {"frontend": lambda: fe_d(x), "frontend_graph": frontend_graph, "torchaudio": lambda: ta_d(x)}
            if dev == "cpu":
                fns["scipy"] = scipy_power
            timed = _time(fns, args.rounds, args.repeats, args.warmup, sync)
        med = {name: t["s"] for name, t in timed.items()}
        rows = {name: {"median_ms": 1e3 * t, "windows_per_s": args.batch / t, "rel_err_vs_torchaudio": errs[name],
                       "page_faults_per_call": timed[name]["faults"]} for name, t in med.items()}
        ratios = {"frontend_vs_torchaudio": med["torchaudio"] / med["frontend"]}
        if "scipy" in med:
            ratios["frontend_vs_scipy"] = med["scipy"] / med["frontend"]
        name = torch.cuda.get_device_name() if dev == "cuda" else f"cpu ({torch.get_num_threads()} torch threads)"
        results["devices"][dev] = {"device": name, "results": rows, "ratios": ratios, "output_shape": list(out.shape)}
    return results


def print_table(res: dict) -> None:
    s = res["settings"]
    print(f"SpectrogramFrontend benchmark: {s['batch']} windows × {s['channels']} channels × {s['samples']} samples, "
          f"n_fft={s['n_fft']}, hop={s['hop_length']}, {s['window']}, center=True ({s['pad_mode']}), power=2")
    print(f"torch {res['versions']['torch']}, torchaudio {res['versions']['torchaudio']}, scipy "
          f"{res['versions']['scipy']}; median of {s['rounds']} rounds × {s['repeats']} calls (each block after "
          f"{s['warmup']} warm-up calls, block order rotating)")
    labels = {"frontend": "SpectrogramFrontend (conv-DFT)", "frontend_graph": "  same, autograd graph (input grad)",
              "torchaudio": "torchaudio Spectrogram",
              "scipy": "scipy.signal.stft + |Z|^2 (1 thread)"}
    for dev, d in res["devices"].items():
        print(f"\n[{dev}] {d['device']}, output {tuple(d['output_shape'])}")
        print(f"{'method':<38}{'median ms':>11}{'windows/s':>12}{'faults/call':>13}{'max rel err':>13}")
        for name, r in d["results"].items():
            print(f"{labels[name]:<38}{r['median_ms']:>11.2f}{r['windows_per_s']:>12,.0f}"
                  f"{r['page_faults_per_call']:>13,.0f}{r['rel_err_vs_torchaudio']:>13.1e}")
        print("ratios (speed-up of the front end): " + ", ".join(
            f"{k.replace('_', ' ')} = {v:.2f}×" for k, v in d["ratios"].items()))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256, help="windows per batch")
    p.add_argument("--channels", type=int, default=6, help="channels per window (e.g. 3-axis acc + gyro)")
    p.add_argument("--samples", type=int, default=1000, help="samples per window (e.g. 10 s at 100 Hz)")
    p.add_argument("--n-fft", type=int, default=64, help="DFT size: 64 samples = 0.64 s at 100 Hz")
    p.add_argument("--hop", type=int, default=16, help="frame step in samples (75 %% overlap)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--rounds", type=int, default=5, help="rounds; each times every method as a block")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per method per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before each block")
    p.add_argument("--cpu-only", action="store_true", help="skip the CUDA table")
    p.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    res = run(args)
    print_table(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
