"""The CLI end to end on tiny settings: prepare → finetune → export → engine bench (ONNX Runtime) → stream."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from wearspec.cli import main
from wearspec.data.store import WindowStore

FT = ["runtime.device=cpu", "frontend.fit_windows=64", "teacher.cnn.width=8", "teacher.epochs=2",
      "teacher.batch_size=16", "student.epochs=2", "student.batch_size=16", "student.model.septr.embed_dim=16",
      "student.model.septr.depth=1", "student.model.septr.num_heads=2"]


@pytest.mark.slow
def test_finetune_export_bench_stream(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["prepare", "synthetic", "-o", str(store), "synthetic.subjects=5",
                 "synthetic.minutes_per_subject=1.5"]) == 0
    ft = tmp_path / "ft"
    assert main(["finetune", "--config", "configs/finetune_deseptr.yaml", f"store={store}", f"output={ft}",
                 *FT]) == 0
    report = json.loads((ft / "report.json").read_text())
    assert "student" in report["stages"] or "student" in json.dumps(report)
    capsys.readouterr()
    bundle = tmp_path / "bundle"
    student = next(ft.glob("*/student"))
    assert main(["export", f"checkpoint={student}", f"store={store}", f"output={bundle}",
                 "calibration_windows=64"]) == 0
    spec = json.loads((bundle / "bundle.json").read_text())
    assert (bundle / "model.onnx").is_file() and (bundle / "model.int8.onnx").is_file()
    assert spec["onnx"]["opset"] == 17 and spec["input"]["channels"][0] == "acc_x"
    capsys.readouterr()
    assert main(["engine", "bench", str(bundle), "--backend", "onnxruntime", "--batch-sizes", "1,4",
                 "--iterations", "5", "--warmup", "1"]) == 0
    assert "p99" in capsys.readouterr().out
    # a replayed recording: 3 windows' worth of samples of one subject, one row per sample
    st = WindowStore(store)
    first = np.flatnonzero(st.subjects == 0)[:6]
    rows = np.concatenate([st.read(int(i)).T[: st.hop] for i in first[:-1]] + [st.read(int(first[-1])).T])
    src = tmp_path / "replay.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(st.channels)
        w.writerows(rows.tolist())
    assert main(["stream", str(bundle), "--source", str(src), "--smoothing", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "time_s,label,probability"
    expected = 1 + (len(rows) - st.window) // spec["input"]["hop"]
    assert len(out) - 1 == expected
    assert all(line.split(",")[1] in spec["output"]["labels"] for line in out[1:])
