"""Latency and throughput of a backend, measured like ``trtexec``.

For each batch size: random windows of the backend's input shape, ``warmup`` untimed calls, then timed calls
until both ``iterations`` calls and ``duration_s`` seconds are done. Each latency is host wall time of one
``backend.infer`` call (for TensorRT: host→device copy, enqueue, device→host copy, synchronise), so it is what
an application sees. Reported per batch size: mean/p50/p90/p99/min/max latency in ms and throughput in
windows per second (batch × calls / total timed time). Works with any :class:`~.backends.Backend`.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from wearspec.errors import WearspecError

COLUMNS = (("batch", "batch", "{:d}"), ("iterations", "iters", "{:d}"), ("mean_ms", "mean ms", "{:.3f}"),
           ("p50_ms", "p50 ms", "{:.3f}"), ("p90_ms", "p90 ms", "{:.3f}"), ("p99_ms", "p99 ms", "{:.3f}"),
           ("max_ms", "max ms", "{:.3f}"), ("throughput", "windows/s", "{:.1f}"))


def latency_summary(latencies_ms: Sequence[float]) -> dict:
    """mean/p50/p90/p99/min/max (ms) of a list of latencies; NaN when it is empty."""
    lat = np.asarray(latencies_ms, dtype=np.float64)
    if lat.size == 0:
        nan = float("nan")
        return {"mean_ms": nan, "p50_ms": nan, "p90_ms": nan, "p99_ms": nan, "min_ms": nan, "max_ms": nan}
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    return {"mean_ms": float(lat.mean()), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "min_ms": float(lat.min()), "max_ms": float(lat.max())}


def benchmark(backend, batch_sizes: Sequence[int] = (1, 8, 32), warmup: int = 10, iterations: int = 100,
              duration_s: float = 0.0, seed: int = 0,
              clock: Callable[[], float] = time.perf_counter) -> list[dict]:
    """Benchmark ``backend.infer`` per batch size; returns one dict per batch size (see module docstring).

    Batch sizes outside a TensorRT engine's profile are refused (rebuild with a larger ``--max-batch``).
    """
    if warmup < 0 or iterations < 1 or duration_s < 0:
        raise WearspecError(f"benchmark: expected warmup >= 0, iterations >= 1, duration >= 0; got warmup={warmup}"
                            f" iterations={iterations} duration={duration_s}")
    max_batch = getattr(backend, "max_batch", None)
    for b in batch_sizes:
        if not isinstance(b, (int, np.integer)) or b < 1:
            raise WearspecError(f"benchmark: batch sizes must be positive integers, got {b!r}")
        if max_batch is not None and b > max_batch:
            raise WearspecError(f"benchmark: batch {b} exceeds the engine's profile maximum {max_batch}; "
                                "rebuild the engine with a larger max batch or bench smaller batches")
    rng = np.random.default_rng(seed)
    info = backend.describe() if hasattr(backend, "describe") else {}
    rows = []
    for b in batch_sizes:
        x = rng.standard_normal((int(b),) + tuple(backend.input_shape)).astype(np.float32)
        for _ in range(warmup):
            backend.infer(x)
        latencies = []
        start = clock()
        while len(latencies) < iterations or clock() - start < duration_s:
            t0 = clock()
            backend.infer(x)
            latencies.append((clock() - t0) * 1e3)
        total = clock() - start
        row = {"backend": info.get("backend", type(backend).__name__), "precision": info.get("precision"),
               "batch": int(b), "iterations": len(latencies), "warmup": warmup, "total_s": total}
        row.update(latency_summary(latencies))
        row["throughput"] = int(b) * len(latencies) / total if total > 0 else float("inf")
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table (one line per batch size) of :func:`benchmark` results, with a header line."""
    head = ""
    if rows:
        head = f"{rows[0].get('backend', '?')} {rows[0].get('precision') or ''}".strip() + "\n"
    cells = [[title for _, title, _ in COLUMNS]]
    for row in rows:
        cells.append([fmt.format(row[key]) for key, _, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return head + "\n".join(lines)
