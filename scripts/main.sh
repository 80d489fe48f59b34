#!/usr/bin/env bash
# The main job on the embedded default data: set up .venv, then run the pipeline that exists today.
#   1. prepare the synthetic data: 24 labelled subjects + 12 unlabelled ones (the pretraining pool)
#   2. inspect it (counts, spectrograms per class)
#   3. EsViT/DINO pretraining of a tiny ViT under torchrun with 2 processes (CPU: gloo)
#   4. linear probe and k-NN on held-out subjects S17–S24, pretrained vs randomly initialised
# Output: runs/default/ (WEARSPEC_OUT overrides it). Re-running resumes / skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
OUT="${WEARSPEC_OUT:-runs/default}"
EPOCHS="${WEARSPEC_EPOCHS:-4}"
TEST="[S17,S18,S19,S20,S21,S22,S23,S24]"
WS=.venv/bin/wearspec
$WS prepare synthetic -o "$OUT/store" synthetic.unlabelled_subjects=12
$WS inspect "$OUT/store" --png "$OUT/spectrograms.png"
.venv/bin/python -m torch.distributed.run --standalone --nproc_per_node=2 -m wearspec pretrain \
    --config configs/pretrain_vit_tiny.yaml store="$OUT/store" output="$OUT/pretrain" \
    exclude_subjects="$TEST" optim.epochs="$EPOCHS" optim.batch_size=32
for which in teacher random; do
    $WS probe --config configs/probe.yaml checkpoint="$OUT/pretrain" store="$OUT/store" \
        output="$OUT/probe-$which" which="$which" split.test_subjects="$TEST"
done
echo "main job done: $OUT (probe reports: $OUT/probe-teacher/report.json, $OUT/probe-random/report.json)"
