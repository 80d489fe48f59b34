"""Many recordings: ``wearspec prepare generic`` of a folder of CSV files with ``jobs=1`` vs ``jobs=2``.

    python benchmarks/many_files.py [--files 200] [--minutes 30] [--rate 50] [--jobs 1,2] [--json out.json]

Writes ``--files`` CSV recordings (``time,ax,ay,az``, a random walk, ``--minutes`` each at ``--rate`` Hz), then
runs the command a user would (``wearspec prepare generic DIR -o OUT jobs=N``, 5 s windows, 2.5 s hop), once per
``--jobs`` value, each in a fresh process into a fresh store: wall seconds, rows/s and the speed-up over the first
value. A re-run into the finished store (nothing left to do) is timed too.
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


def write_files(folder: Path, files: int, minutes: float, rate: float) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    n = int(round(minutes * 60 * rate))
    rng = np.random.default_rng(0)
    for k in range(files):
        x = np.cumsum(rng.normal(scale=0.01, size=(n, 3)), axis=0)
        t = np.arange(n) / rate
        np.savetxt(folder / f"P{k:04d}.csv", np.column_stack([t, x]), fmt=["%.4f", "%.5f", "%.5f", "%.5f"],
                   delimiter=",", header="time,ax,ay,az", comments="")
    return files * n


def prepare(folder: Path, out: Path, jobs: int) -> float:
    cmd = [sys.executable, "-m", "wearspec", "prepare", "generic", str(folder), "-o", str(out), f"jobs={jobs}",
           "window.length_s=5", "window.hop_s=2.5"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(f"jobs={jobs} failed:\n{res.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--jobs", default="1,2")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="many-files-"))
    t0 = time.perf_counter()
    rows = write_files(work / "in", args.files, args.minutes, args.rate)
    result = {"files": args.files, "rows": rows, "mb": round(sum(f.stat().st_size for f in (work / "in").iterdir())
                                                              / 1e6), "write_s": round(time.perf_counter() - t0, 1)}
    base = None
    for jobs in (int(j) for j in args.jobs.split(",")):
        out = work / f"store_jobs{jobs}"
        shutil.rmtree(out, ignore_errors=True)
        s = prepare(work / "in", out, jobs)
        again = prepare(work / "in", out, jobs)
        base = base or s
        result[f"jobs={jobs}"] = {"seconds": round(s, 1), "rows_per_s": round(rows / s), "speedup": round(base / s, 2),
                                  "rerun_s": round(again, 1)}
        print(json.dumps({f"jobs={jobs}": result[f"jobs={jobs}"]}), flush=True)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
