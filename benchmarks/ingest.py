"""Ingest speed and memory: ``prepare generic`` of one long CSV recording vs pyarrow's plain read.

Writes one recording as a CSV (``time,ax,ay,az``; default 1 day at 50 Hz = 4.32 M rows, a random
walk with 5 decimals), then runs each reader in its own process, so that each peak RSS
(``VmHWM``) is its own:

* ``pyarrow``: ``pyarrow.csv.read_csv`` of the file (the reference: a plain, multi-threaded read);
* ``prepare (parts)``: ``wearspec prepare generic`` as shipped (a file this size is read in 16 MiB
  parts — by pyarrow's streaming CSV reader when pyarrow is installed — and windowed as they arrive;
  5 s windows, 2.5 s hop, float32 store);
* ``prepare (numpy parts)``: the same with the numpy parser (what runs without pyarrow);
* ``prepare (whole)`` with ``--whole``: the same with the whole-table path forced (the file read at
  once), for comparison.

Printed: the best of ``--repeat`` runs in seconds, the largest peak RSS, and the ratios to pyarrow
(throughput = pyarrow time / prepare time), all measured side by side in one run.

    python benchmarks/ingest.py [--days 1] [--rate 50] [--repeat 3] [--whole] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
kind, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
if kind == "pyarrow":
    import pyarrow.csv
    rows = pyarrow.csv.read_csv(path).num_rows
else:
    from wearspec.config import load_config
    from wearspec.data.prepare import PrepareConfig, prepare
    from wearspec.data.readers import chunks, table_stream
    if kind == "whole":
        chunks.CHUNK_BYTES = 1 << 40
    if kind == "numpy":
        table_stream._arrow_csv = lambda: None
    store, _ = prepare("generic", path, out, load_config(PrepareConfig, overrides=["window.rate={rate}"]),
                       progress=False)
    rows = len(store)
seconds = time.perf_counter() - t
try:  # this process's own peak (ru_maxrss would also count the parent's memory at the fork)
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    rss_mb = int(hwm.split()[1]) / 1024
except OSError:
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "rss_mb": rss_mb, "count": rows}}))
"""


def write_csv(path: Path, days: float, rate: float, block: int = 1 << 16) -> int:
    """One recording, written block by block (memory stays small); returns the number of rows."""
    n = int(round(days * 86400 * rate))
    rng = np.random.default_rng(0)
    level = np.zeros(3)
    with open(path, "w") as f:
        f.write("time,ax,ay,az\n")
        for a in range(0, n, block):
            b = min(n, a + block)
            x = level + np.cumsum(rng.normal(scale=0.01, size=(b - a, 3)), axis=0)
            level = x[-1]
            t = np.arange(a, b) / rate
            rows = np.column_stack([t, x])
            f.write("\n".join(f"{r[0]:.4f},{r[1]:.5f},{r[2]:.5f},{r[3]:.5f}" for r in rows.tolist()) + "\n")
    return n


def run(kind: str, path: Path, out: Path, rate: float, repeat: int = 1) -> dict:
    """Best time (and the largest peak RSS) of ``repeat`` fresh processes."""
    code = _CHILD.format(root=str(ROOT), rate=rate)
    runs = []
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        res = subprocess.run([sys.executable, "-c", code, kind, str(path), str(out)], capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"{kind} failed:\n{res.stderr[-2000:]}")
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return {"seconds": min(r["seconds"] for r in runs), "rss_mb": max(r["rss_mb"] for r in runs),
            "count": runs[0]["count"], "runs": repeat}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=float, default=1.0, help="recording length in days")
    ap.add_argument("--rate", type=float, default=50.0, help="sampling rate in Hz (also the window rate)")
    ap.add_argument("--whole", action="store_true", help="also run prepare with the whole-table path forced (once)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per reader; the best time is reported")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = tmp / "rec.csv"
        t = time.perf_counter()
        n = write_csv(csv, args.days, args.rate)
        print(f"{csv.name}: {n:,} rows, {csv.stat().st_size / 1e6:.0f} MB (written in {time.perf_counter() - t:.0f} s)")
        results = {"pyarrow": run("pyarrow", csv, tmp / "none", args.rate, args.repeat),
                   "prepare (parts)": run("parts", csv, tmp / "store_parts", args.rate, args.repeat),
                   "prepare (numpy parts)": run("numpy", csv, tmp / "store_numpy", args.rate, args.repeat)}
        if args.whole:
            results["prepare (whole)"] = run("whole", csv, tmp / "store_whole", args.rate)
    ref = results["pyarrow"]
    print(f"\n{'reader':<22}{'seconds':>9}{'peak RSS MB':>13}{'throughput vs pyarrow':>24}{'RSS vs pyarrow':>16}")
    for name, r in results.items():
        print(f"{name:<22}{r['seconds']:>9.1f}{r['rss_mb']:>13.0f}{ref['seconds'] / r['seconds']:>23.2f}×"
              f"{r['rss_mb'] / ref['rss_mb']:>15.2f}×")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": n, "days": args.days, "rate": args.rate, **results}, indent=2))


if __name__ == "__main__":
    main()
