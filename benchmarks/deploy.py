"""Deploy latency: PyTorch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8 on the CPU, side by side in one run;
PyTorch eager vs CUDA graphs (``torch.compile(mode="reduce-overhead")``) on a GPU when there is one; and an
ESTIMATE (not a measurement) of Jetson Orin latency from each model's FLOPs and bytes.

Models: the CPU-sized classifiers of the synthetic default data (6 channels × 250 samples at 50 Hz → 17 × 32
spectrograms, 7 classes): the CNN teacher (``configs/finetune_deseptr.yaml``: ResNet-18, width 16, small
stem), the DeSepTr SepTr student on the teacher's frozen stem (same config), a ViT student (``vit_tiny_cpu``,
4 × 4 patches, distillation token) and a Swin student (``swin_tiny_cpu``). ``vit_stem`` (not run by default)
is the same ViT student with ``teacher_stem: true`` (the DeSepTr option: the teacher's stem + first stage as
the patch embedding), so it sees one token per spectrogram bin (546 tokens instead of 42). Weights are
random (seeded), not trained: latency does not depend on the weight values (INT8 accuracy is not the point
here). The front end is fitted (normalisation statistics) on the store's windows, as ``wearspec finetune`` does.

Steps:

1. ``wearspec.data.prepare.prepare("synthetic", ...)`` with ``synthetic.subjects=6``,
   ``synthetic.minutes_per_subject=2`` → a small window store under ``--work``.
2. Each model → :func:`wearspec.deploy.export.export_classifier` with the store (the real export path: ONNX
   opset 17, onnxslim, op-set and parity gates, INT8 Q/DQ calibrated on the training subjects' windows) →
   a bundle with ``model.onnx`` and ``model.int8.onnx`` (the FP16 check is skipped: it writes no file). The
   calibration count is rounded down to a multiple of 32 (the export's calibration batch): ONNX Runtime's
   percentile calibrator fails on a ragged last batch (141 training windows here → 128).
3. CPU timing, ``torch.set_num_threads(--threads)`` and ``--threads`` ONNX Runtime intra-op threads:
   * eager: :class:`~wearspec.deploy.export.InferenceModule` (the graph that is exported: front end, model,
     fused heads, softmax) in eval mode under ``torch.inference_mode()``; numpy in, ``torch.from_numpy``,
     ``.numpy()`` out (the same numpy → numpy call as the ONNX Runtime backend);
   * ONNX Runtime FP32 / INT8: :class:`~wearspec.deploy.runtime.backends.OnnxRuntimeBackend` ``.infer``.
   Inputs are real windows of the store (batch 1 and batch 32). One shared timing loop, the one of
   :func:`wearspec.deploy.runtime.bench.benchmark` (host wall time of each call, ``time.perf_counter``):
   ``--rounds`` rounds; in each, every method runs ``--warmup`` untimed calls and then
   ``--iterations / --rounds`` timed calls, the method order rotating between rounds so that background load
   is shared alike. p50/p99 over all timed calls (:func:`~wearspec.deploy.runtime.bench.latency_summary`);
   speed-up = eager p50 / ONNX Runtime p50.
4. GPU (only when ``torch.cuda.is_available()``): eager vs ``torch.compile(mode="reduce-overhead")`` (CUDA
   graphs), batch 1 and 32, synchronised timing, the same rounds; otherwise "no GPU here: skipped".
5. Jetson ESTIMATE per window batch: FLOPs from ``torch.utils.flop_counter.FlopCounterMode`` on the
   InferenceModule (explicit attention; matmul/conv/attention only, elementwise ops not counted), split into
   the part the INT8 graph quantizes (Conv and constant-weight GEMMs of the model) and the rest (front end,
   attention products); bytes = weights (FP16: 2 B; INT8: 1 B for quantized Conv/Linear weights) + 2 × the
   outputs of conv / GEMM / attention / norm / softmax ops in FP16 (each written once and read once;
   pointwise ops assumed fused, no other fusion or cache reuse: an upper bound); kernels = the ONNX graph's
   Conv/MatMul/Gemm/LayerNormalization/Softmax/BatchNormalization/pooling nodes (a proxy for TensorRT's fused
   layers). Then
   ``latency = max(FLOPs_fp16 / (η·P_fp16) + FLOPs_int8 / (η·P_int8), bytes / (η_mem·BW)) + n_kernels·t_kernel
   + t_fixed`` with the published dense tensor-core peaks of the GPU (DLA not used: attention cannot run on
   it) and the assumptions of :data:`ASSUMPTIONS`. It is not a measurement: replace it by
   ``wearspec engine bench BUNDLE --backend tensorrt`` on the device.

    python benchmarks/deploy.py [--models cnn,septr,vit,swin] [--iterations 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from wearspec.config import load_config
from wearspec.data.prepare import PrepareConfig
from wearspec.data.frontend import FrontendConfig, build_frontend, ieee_fp32
from wearspec.data.prepare import prepare
from wearspec.data.splits import SplitConfig, make_splits
from wearspec.data.store import WindowStore
from wearspec.deploy.export import ExportConfig, InferenceModule, _export_mode, export_classifier
from wearspec.deploy.runtime.backends import OnnxRuntimeBackend
from wearspec.deploy.runtime.bench import latency_summary
from wearspec.finetune.recipe import FinetuneConfig
from wearspec.models.backbones import BackboneConfig
from wearspec.models.classifier import Classifier, classifier_meta
from wearspec.models.cnn import build_teacher
from wearspec.models.students import StudentConfig, build_student

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("cnn", "septr", "vit", "swin")
EXTRA_MODELS = ("vit_stem",)  # not run by default: the ViT student on the teacher's stem
BATCHES = (1, 32)
CPU_METHODS = ("eager", "ort_fp32", "ort_int8")

# ---- Jetson: published peaks (GPU only, dense tensor cores) and the assumptions of the estimate ---------------
# Spec-sheet figures are INT8 *sparse* TOPS of the whole module; dense = sparse / 2, FP16 dense = INT8 dense / 2.
# AGX Orin 64GB: 275 TOPS = GPU 170 (16 SM, 64 tensor cores, 1.3 GHz) + 2 DLA 105; Orin NX 16GB: 100 TOPS =
# GPU 60 (8 SM, 32 tensor cores, 918 MHz) + 2 DLA 40; Orin Nano 8GB: 40 TOPS = GPU only (8 SM, 625 MHz), 67 in
# the JetPack 6.2 "Super" mode (1.02 GHz, memory 102 GB/s).
JETSONS = {
    "Orin Nano 8GB": {"int8_tops": 20.0, "fp16_tflops": 10.0, "bw_gbs": 68.0,
                      "source": "40 TOPS INT8 sparse (GPU), 68 GB/s"},
    "Orin Nano 8GB Super": {"int8_tops": 33.5, "fp16_tflops": 16.75, "bw_gbs": 102.0,
                            "source": "67 TOPS INT8 sparse (GPU), 102 GB/s, JetPack 6.2 Super mode"},
    "Orin NX 16GB": {"int8_tops": 30.0, "fp16_tflops": 15.0, "bw_gbs": 102.4,
                     "source": "100 TOPS INT8 sparse = GPU 60 + DLA 40, 102.4 GB/s"},
    "AGX Orin 64GB": {"int8_tops": 85.0, "fp16_tflops": 42.5, "bw_gbs": 204.8,
                      "source": "275 TOPS INT8 sparse = GPU 170 + DLA 105, 204.8 GB/s"},
}
ASSUMPTIONS = {
    "compute_efficiency": 0.30,   # η: fraction of the dense tensor-core peak reached by small GEMMs/convs
    "memory_efficiency": 0.60,    # η_mem: fraction of the DRAM peak bandwidth
    "t_kernel_ms": 0.005,         # per fused TensorRT layer (launch + minimum kernel time, CUDA graphs off)
    "t_fixed_ms": 0.15,           # per inference: enqueue, host↔device copies of the tiny input/output, sync
}
KERNEL_OPS = ("Conv", "MatMul", "Gemm", "LayerNormalization", "Softmax", "BatchNormalization",
              "GlobalAveragePool", "MaxPool", "AveragePool", "ReduceMean")


# ---- data and models -------------------------------------------------------------------------------------
def make_store(work: Path) -> WindowStore:
    cfg = load_config(PrepareConfig, None, ["synthetic.subjects=6", "synthetic.minutes_per_subject=2"])
    store, _ = prepare("synthetic", None, work / "store", cfg, progress=False)
    return store


def make_classifier(name: str, store: WindowStore, seed: int = 0) -> tuple[Classifier, dict[str, Any]]:
    """(classifier in eval mode, classifier_meta) with random seeded weights and a fitted front end."""
    deseptr = load_config(FinetuneConfig, ROOT / "configs/finetune_deseptr.yaml")
    teacher_cfg = deseptr.teacher.cnn
    c, k, labels = store.n_channels, len(store.label_names), list(store.label_names)
    fe = build_frontend(FrontendConfig(), store.rate, store.window, store.channels)
    fe.fit(torch.from_numpy(store.read_batch(np.arange(min(len(store), 2048)))))
    size = tuple(fe.output_shape(c, store.window)[1:])
    torch.manual_seed(seed)
    teacher = build_teacher(teacher_cfg, c, k, size)
    if name == "cnn":
        clf, kind, cfg, stem = Classifier(fe, teacher), "teacher", teacher_cfg, None
    else:
        if name == "septr":
            cfg = deseptr.student.model
        elif name == "vit":  # vit_tiny_cpu on 4 × 4 patches (StudentConfig's default: no teacher stem)
            cfg = StudentConfig(arch="vit", backbone=BackboneConfig(name="vit_tiny_cpu"), distillation=True)
        elif name == "vit_stem":  # the ViT of configs/finetune_vit_ssl.yaml with the DeSepTr teacher stem
            cfg = load_config(FinetuneConfig, ROOT / "configs/finetune_vit_ssl.yaml", ["student.model.teacher_stem=true"]).student.model
        else:
            cfg = StudentConfig(arch="swin", backbone=BackboneConfig(name="swin_tiny_cpu"), distillation=True)
        cfg.validate()
        stem = teacher_cfg if cfg.teacher_stem else None
        clf, kind = Classifier(fe, build_student(cfg, c, size, k, teacher=teacher if stem else None)), "student"
    meta = classifier_meta(kind, cfg, fe.config(), c, size, k, labels, list(store.channels), store.rate,
                           store.window, store.hop, teacher_cnn=stem)
    return clf.eval(), meta


def describe_model(name: str, clf: Classifier, meta: dict) -> str:
    m = meta["model"]
    if name == "cnn":
        return f"ResNet-18 width {m['width']}, small stem"
    if name == "septr":
        s = m["septr"]
        patch = "×".join(str(v) for v in s["patch_size"])
        return f"SepTr d{s['embed_dim']}×{s['depth']}, {s['num_heads']} heads, {patch} patches of the teacher stem"
    b = clf.model.cfg.backbone.resolved()
    if name.startswith("vit"):
        embed = "teacher stem, 1×1" if clf.model.cfg.teacher_stem else f"patch {b['patch'][0]}×{b['patch'][1]}"
        return f"ViT d{b['embed_dim']}×{b['depth']}, {embed}"
    return f"Swin d{b['embed_dim']}, depths {tuple(b['depth'])}, window {tuple(b['window'])}"


# ---- timing ----------------------------------------------------------------------------------------------
def time_calls(fn: Callable[[], Any], iterations: int, clock=time.perf_counter) -> list[float]:
    """The timing loop of :func:`wearspec.deploy.runtime.bench.benchmark`: host wall time (ms) of each call."""
    out = []
    for _ in range(iterations):
        t0 = clock()
        fn()
        out.append((clock() - t0) * 1e3)
    return out


def measure(methods: dict[str, Callable[[], Any]], iterations: int, rounds: int, warmup: int) -> dict[str, dict]:
    """Interleaved rounds: each method ``warmup`` untimed + ``iterations // rounds`` timed calls per round, the
    order rotating; → {method: latency_summary + iterations + throughput-free figures}."""
    names, per = list(methods), max(1, iterations // rounds)
    lat: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = methods[name]
            for _ in range(warmup):
                fn()
            lat[name] += time_calls(fn, per)
    return {n: {**latency_summary(v), "iterations": len(v)} for n, v in lat.items()}


class TorchEager:
    """numpy (B, C, T) → numpy probabilities with the InferenceModule, as the ONNX Runtime backend's infer."""

    def __init__(self, module: nn.Module):
        self.module = module.eval()

    def infer(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(x)).numpy()


def cpu_bench(clf: Classifier, bundle: Path, inputs: dict[int, np.ndarray], args) -> dict[int, dict[str, dict]]:
    eager = TorchEager(InferenceModule(clf))
    fp32 = OnnxRuntimeBackend(bundle, "fp32", threads=args.threads)
    int8 = OnnxRuntimeBackend(bundle, "int8", threads=args.threads)
    out = {}
    try:
        for b, x in inputs.items():
            methods = {"eager": lambda x=x: eager.infer(x), "ort_fp32": lambda x=x: fp32.infer(x),
                       "ort_int8": lambda x=x: int8.infer(x)}
            out[b] = measure(methods, args.iterations, args.rounds, args.warmup)
    finally:
        fp32.close()
        int8.close()
    return out


def gpu_bench(clf: Classifier, inputs: dict[int, np.ndarray], args, device: str = "cuda") -> dict[int, dict]:
    """Eager vs torch.compile(mode="reduce-overhead") (CUDA graphs on CUDA), synchronised timing; both with
    IEEE float32 convolutions, as the front end needs (:func:`wearspec.data.frontend.ieee_fp32`)."""
    with ieee_fp32(device):
        return _gpu_bench(clf, inputs, args, device)


def _gpu_bench(clf: Classifier, inputs: dict[int, np.ndarray], args, device: str) -> dict[int, dict]:
    module = InferenceModule(clf).to(device).eval()
    compiled = torch.compile(module, mode="reduce-overhead")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = {}
    for b, x in inputs.items():
        xd = torch.from_numpy(x).to(device)

        def run(m, xd=xd):
            with torch.inference_mode():
                y = m(xd)
            sync()
            return y

        with torch.inference_mode():
            ref = module(xd)
            for _ in range(3):  # compile + CUDA-graph recording happen in the first calls
                got = compiled(xd)
        sync()
        err = float((got.float() - ref.float()).abs().max())
        res = measure({"eager": lambda: run(module), "compiled": lambda: run(compiled)},
                      args.iterations, args.rounds, args.warmup)
        res["max_abs_diff"] = err
        out[b] = res
    return out


# ---- FLOPs, bytes, kernels --------------------------------------------------------------------------------
# layer-like ops, at both levels a dispatch mode can see them: under inference_mode the composite ops (linear,
# conv2d, layer_norm …) reach the mode undecomposed; the op a mode intercepts runs below it, so none is counted twice
_LAYER_OPS = {"conv1d", "conv2d", "convolution", "_convolution", "linear", "matmul", "mm", "addmm", "bmm", "baddbmm",
              "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
              "layer_norm", "native_layer_norm", "softmax", "_softmax", "max_pool2d", "max_pool2d_with_indices",
              "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "mean"}  # BatchNorm: folded into the conv at build


class _ActivationBytes(TorchDispatchMode):
    """Sum of output elements of the layer-like aten ops (:data:`_LAYER_OPS`)."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in _LAYER_OPS:
            first = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(first, torch.Tensor):
                self.elements += first.numel()
        return out


def _quantized_weights(module: nn.Module) -> int:
    """Elements of the weights the INT8 graph quantizes: Conv/Linear of the model (not the front end)."""
    return sum(m.weight.numel() for name, m in module.named_modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and not name.startswith("frontend"))


def cost(clf: Classifier, x1: np.ndarray, onnx_file: Path) -> dict[str, Any]:
    """Per window (batch 1): FLOPs (total, INT8-quantizable), weight and activation elements, kernel count."""
    module = InferenceModule(clf).eval()
    x = torch.from_numpy(x1)
    with _export_mode(module, fused_attn=False), torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            module(x)
        acts = _ActivationBytes()
        with acts:
            module(x)
    per_module = counter.get_flop_counts()
    total = int(counter.get_total_flops())
    frontend = sum(int(v) for k, ops in per_module.items() if k.endswith(".frontend") or k == "frontend"
                   for v in ops.values())
    by_op = {str(op): int(v) for op, v in per_module.get("Global", {}).items()}
    attention = sum(v for op, v in by_op.items() if "bmm" in op or "attention" in op)
    quant = max(0, total - frontend - attention)
    weights = sum(p.numel() for p in module.parameters()) + sum(
        b.numel() for b in module.buffers() if b.is_floating_point())
    ops = [n.op_type for n in onnx.load(str(onnx_file), load_external_data=False).graph.node]
    kernels = sum(ops.count(o) for o in KERNEL_OPS)
    return {"flops": total, "flops_frontend": frontend, "flops_attention": attention, "flops_int8": quant,
            "flops_by_op": by_op, "params": sum(p.numel() for p in module.parameters()), "weights": weights,
            "weights_int8": _quantized_weights(module), "activation_elements": acts.elements,
            "kernels": kernels, "onnx_nodes": len(ops)}


def jetson_estimate(c: dict[str, Any], batch: int, precision: str, dev: dict[str, float]) -> dict[str, float]:
    a = ASSUMPTIONS
    flops = c["flops"] * batch
    f_int8 = c["flops_int8"] * batch if precision == "int8" else 0
    f_fp16 = flops - f_int8
    compute_s = (f_fp16 / (a["compute_efficiency"] * dev["fp16_tflops"] * 1e12)
                 + f_int8 / (a["compute_efficiency"] * dev["int8_tops"] * 1e12))
    w_bytes = 2 * c["weights"] - (c["weights_int8"] if precision == "int8" else 0)
    bytes_ = w_bytes + 2 * 2 * c["activation_elements"] * batch
    memory_s = bytes_ / (a["memory_efficiency"] * dev["bw_gbs"] * 1e9)
    overhead_ms = c["kernels"] * a["t_kernel_ms"] + a["t_fixed_ms"]
    ms = max(compute_s, memory_s) * 1e3 + overhead_ms
    return {"ms": ms, "compute_ms": compute_s * 1e3, "memory_ms": memory_s * 1e3, "overhead_ms": overhead_ms,
            "bytes": bytes_}


# ---- tables ----------------------------------------------------------------------------------------------
def _f(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def cpu_table(res: dict[str, dict]) -> str:
    lines = ["| model | batch | eager p50 / p99 (min) ms | ORT FP32 p50 / p99 (min) ms | ORT INT8 p50 / p99 (min) ms "
             "| FP32 / eager | INT8 / eager | INT8 / FP32 | FP32 / eager at min |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cell(m):
        return f"{_f(m['p50_ms'])} / {_f(m['p99_ms'])} ({_f(m['min_ms'])})"

    for name, r in res.items():
        for b, m in r["cpu"].items():
            e, f, q = m["eager"], m["ort_fp32"], m["ort_int8"]
            lines.append(f"| {name} | {b} | {cell(e)} | {cell(f)} | {cell(q)} | "
                         f"**{e['p50_ms'] / f['p50_ms']:.2f}×** | {e['p50_ms'] / q['p50_ms']:.2f}× | "
                         f"{f['p50_ms'] / q['p50_ms']:.2f}× | {e['min_ms'] / f['min_ms']:.2f}× |")
    return "\n".join(lines)


def model_table(res: dict[str, dict]) -> str:
    lines = ["| model | architecture | parameters | MFLOPs / window (INT8-quantized part) | ONNX nodes "
             "(kernel proxy) | Q/DQ nodes | bundle export s |", "|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        c, ex = r["cost"], r["export"]
        q = (ex.get("int8") or {})
        lines.append(f"| {name} | {r['arch']} | {c['params'] / 1e6:.3f} M | {c['flops'] / 1e6:.1f} "
                     f"({c['flops_int8'] / 1e6:.1f}) | {c['onnx_nodes']} ({c['kernels']}) | "
                     f"{q.get('quantize_linear', 0)} Q + {q.get('dequantize_linear', 0)} DQ | {ex['seconds']:.1f} |")
    return "\n".join(lines)


def gpu_table(res: dict[str, dict]) -> str:
    lines = ["| model | batch | eager p50 / p99 ms | compiled (CUDA graphs) p50 / p99 ms | speed-up | max abs diff |",
             "|---|---|---|---|---|---|"]
    for name, r in res.items():
        for b, m in (r.get("gpu") or {}).items():
            e, g = m["eager"], m["compiled"]
            lines.append(f"| {name} | {b} | {_f(e['p50_ms'])} / {_f(e['p99_ms'])} | {_f(g['p50_ms'])} / "
                         f"{_f(g['p99_ms'])} | {e['p50_ms'] / g['p50_ms']:.2f}× | {m['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def jetson_table(res: dict[str, dict]) -> str:
    devs = list(JETSONS)
    lines = ["| model | batch | precision | GFLOP | MB moved | " + " | ".join(f"{d} ms" for d in devs) + " |",
             "|---|---|---|---|---|" + "---|" * len(devs)]
    for name, r in res.items():
        for b in BATCHES:
            for prec in ("fp16", "int8"):
                est = [r["jetson"][d][str(b)][prec] for d in devs]
                lines.append(f"| {name} | {b} | {prec.upper()} | {r['cost']['flops'] * b / 1e9:.3f} | "
                             f"{est[0]['bytes'] / 1e6:.2f} | " + " | ".join(_f(e["ms"]) for e in est) + " |")
    return "\n".join(lines)


def jetson_caption() -> str:
    a = ASSUMPTIONS
    peaks = "; ".join(f"{d}: {v['fp16_tflops']:g} TFLOPS FP16 / {v['int8_tops']:g} TOPS INT8 dense, "
                      f"{v['bw_gbs']:g} GB/s ({v['source']})" for d, v in JETSONS.items())
    return ("ESTIMATE, NOT A MEASUREMENT (no Jetson was used). latency = max(FLOPs_fp16 / (η·P_fp16) + "
            "FLOPs_int8 / (η·P_int8), bytes / (η_mem·BW)) + n_kernels·t_kernel + t_fixed, with "
            f"η = {a['compute_efficiency']:.0%} of the dense GPU tensor-core peak, η_mem = "
            f"{a['memory_efficiency']:.0%} of the DRAM bandwidth, t_kernel = {a['t_kernel_ms'] * 1e3:.0f} µs per "
            f"fused layer (n_kernels = Conv/MatMul/Gemm/LayerNorm/Softmax/BatchNorm/pool nodes of the ONNX graph), "
            f"t_fixed = {a['t_fixed_ms']:.2f} ms per inference. FLOPs: FlopCounterMode (conv/GEMM/attention "
            "only); INT8 applies to the Conv and constant-weight GEMM FLOPs of the model (the INT8 graph's Q/DQ "
            "scope); front end and attention products stay FP16. Bytes: weights (2 B; 1 B for INT8-quantized "
            "Conv/Linear weights) + 2 × 2 B × the outputs of conv/GEMM/attention/norm/softmax/pool ops, i.e. "
            "pointwise ops fused but nothing else (no fused attention keeping the score matrices on chip, no reuse "
            "in the GPU L2): an upper bound on DRAM traffic. Shuffles (Reshape/Transpose/Slice/Concat) are not "
            "counted as kernels. GPU only, no DLA, no sparsity, maximum clocks of the mode. "
            f"Peaks: {peaks}. Replace with `wearspec engine bench BUNDLE --backend tensorrt` on the device.")


# ---- main ------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="comma list of cnn,septr,vit,swin (and vit_stem: the "
                   "ViT student on the teacher's stem)")
    p.add_argument("--iterations", type=int, default=300, help="timed calls per method and batch size")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds the iterations are split into")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls per method and round")
    p.add_argument("--threads", type=int, default=2, help="torch threads and ONNX Runtime intra-op threads")
    p.add_argument("--calibration-windows", type=int, default=256,
                   help="INT8 calibration windows (rounded down to a multiple of 32 the training subjects give)")
    p.add_argument("--work", default="/tmp/wearspec-bench-deploy", help="store and bundles (recreated)")
    p.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = p.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in names if m not in MODELS + EXTRA_MODELS]
    if bad or not names:
        p.error(f"--models: expected a comma list of {','.join(MODELS)}, got {args.models!r}")
    if args.iterations < 1 or args.rounds < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--iterations, --rounds, --threads must be ≥ 1 and --warmup ≥ 0")

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.time()
    store = make_store(work)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(store), size=max(BATCHES), replace=False))
    windows = store.read_batch(idx)
    inputs = {b: np.ascontiguousarray(windows[:b]) for b in BATCHES}
    # ONNX Runtime's histogram calibrators (percentile, entropy) fail on a ragged last calibration batch
    # ("inhomogeneous shape"), and export calibrates in batches of 32 on at most all training windows: keep the
    # count a multiple of 32 that the training subjects can give
    train = make_splits(store, np.arange(len(store)), SplitConfig())[0].train
    n_cal = min(args.calibration_windows, len(train)) // 32 * 32
    if n_cal < 32:
        p.error(f"--calibration-windows: need ≥ 32 calibration windows; the store's training subjects have "
                f"{len(train)}")
    print(f"store: {len(store)} windows × {store.n_channels} channels × {store.window} samples at {store.rate:g} Hz, "
          f"{len(store.label_names)} classes ({time.time() - t0:.1f} s); INT8 calibration on {n_cal} of the "
          f"{len(train)} training-subject windows", file=sys.stderr)

    import onnxruntime

    env = {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
           "onnx": onnx.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
           "threads": args.threads, "calibration_windows": n_cal, "load_avg_start": os.getloadavg(),
           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    results: dict[str, dict] = {}
    for name in names:
        clf, meta = make_classifier(name, store)
        bundle = work / "bundles" / name
        print(f"{name}: exporting to {bundle}", file=sys.stderr)
        summary = export_classifier(clf, meta, ExportConfig(output=str(bundle), int8=True, calibration_windows=n_cal,
                                                            fp16_check=False, overwrite=True), store)
        k = meta["num_classes"]
        r = {"arch": describe_model(name, clf, meta), "bundle": str(bundle), "input_size": meta["input_size"],
             "classes": k, "export": {"seconds": summary["seconds"], "opset": summary["opset"],
                                      "exporter": summary["exporter"], "ops": summary["ops"],
                                      "int8": {key: (summary["int8"] or {}).get(key) for key in
                                               ("quantize_linear", "dequantize_linear", "quantized",
                                                "calibration", "accuracy")}}}
        r["cost"] = cost(clf, inputs[1], bundle / "model.onnx")
        print(f"{name}: timing on the CPU", file=sys.stderr)
        r["cpu"] = cpu_bench(clf, bundle, inputs, args)
        if torch.cuda.is_available():
            print(f"{name}: timing on the GPU", file=sys.stderr)
            r["gpu"] = gpu_bench(clf, inputs, args)
        r["jetson"] = {d: {str(b): {prec: jetson_estimate(r["cost"], b, prec, dev) for prec in ("fp16", "int8")}
                           for b in BATCHES} for d, dev in JETSONS.items()}
        results[name] = r
    env["load_avg_end"] = os.getloadavg()
    env["seconds"] = round(time.time() - t0, 1)

    print(f"## CPU: PyTorch eager vs ONNX Runtime ({args.threads} threads, batch 1 and 32)\n")
    print(f"Random (untrained) weights, real store windows as inputs. {args.iterations} timed calls per method "
          f"and batch in {args.rounds} interleaved rounds (+{args.warmup} warm-up calls per round). "
          "Speed-ups are eager p50 / ORT p50 (target: ORT FP32 ≥ 2× eager at batch 1); the last column "
          "is the ratio of the fastest calls, the least disturbed by other load.\n")
    print(cpu_table(results) + "\n")
    print(model_table(results) + "\n")
    print("## GPU: PyTorch eager vs torch.compile(mode=\"reduce-overhead\")\n")
    if torch.cuda.is_available():
        print(f"{env['cuda']}\n")
        print(gpu_table(results) + "\n")
    else:
        print("no GPU here: skipped\n")
    print("## Jetson Orin latency ESTIMATE (not a measurement)\n")
    print(jetson_table(results) + "\n")
    print(jetson_caption() + "\n")
    print(f"load average {env['load_avg_start'][0]:.2f} at the start, {env['load_avg_end'][0]:.2f} at the end; "
          f"{env['seconds']:.0f} s in all")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"env": env, "assumptions": ASSUMPTIONS, "jetsons": JETSONS,
                                               "args": vars(args), "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
