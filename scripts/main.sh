#!/usr/bin/env bash
# The main job: set up .venv, then `wearspec demo` on the embedded synthetic data — prepare, EsViT/DINO
# pretraining under torchrun (2 processes on a CPU, one per GPU), probe vs random init, DeSepTr fine-tuning
# from the SSL backbone, ONNX + INT8 bundle, a replayed stream, a TensorRT engine when tensorrt and a GPU
# are present, and a report: $OUT/report/report.html and report.md.
# Output: runs/default/ (WEARSPEC_OUT overrides it). Re-running skips finished steps and resumes training.
# Extra arguments are demo settings, e.g. `bash scripts/main.sh pretrain.optim.epochs=10`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
OUT="${WEARSPEC_OUT:-runs/default}"
.venv/bin/wearspec demo output="$OUT" "$@"
echo "main job done: open $OUT/report/report.html (or read $OUT/report/report.md)"
