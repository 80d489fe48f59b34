#!/usr/bin/env bash
# The main job on the embedded default data: set up .venv, then run the pipeline.
# Output: runs/default/ (window store, spectrogram grid).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
OUT="${WEARSPEC_OUT:-runs/default}"
.venv/bin/wearspec prepare synthetic -o "$OUT/store" "$@"
.venv/bin/wearspec inspect "$OUT/store" --png "$OUT/spectrograms.png"
