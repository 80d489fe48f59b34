#!/usr/bin/env bash
# The checks that need a CUDA GPU, in parts that each take well under 10 minutes on one H100-class GPU:
#
#   scripts/gpu-checks.sh OUT PART...      PART: env tests throughput compile augment (or all)
#
#   env         GPU, driver and package versions                          -> OUT/env.txt
#   tests       the whole test suite, GPU tests included                   -> OUT/tests.txt
#   throughput  windows/s and MFU of ViT-S and Swin-T pretraining, fp32 vs bf16, SDPA vs the explicit attention
#               (benchmarks/pretrain_throughput.py)                        -> OUT/throughput.{txt,json}
#   compile     the same in bf16, eager vs torch.compile                   -> OUT/compile.{txt,json}
#   augment     the batched on-device view path vs per-sample views in DataLoader workers, ViT-S in bf16
#               (benchmarks/augment_path.py)                               -> OUT/augment.{txt,json}
#
# It runs from the checkout without installing it (PYTHONPATH), with .venv/bin/python when there is one, else
# $PYTHON or python3: that Python needs torch, torchvision, torchaudio, timm, numpy, scipy, onnx, onnxruntime,
# PyYAML, tqdm, safetensors, matplotlib and pytest; wandb is not needed. The numbers go into BENCHMARKS.md
# (the SSL sections) with the device's name and the torch version that the outputs record.
set -uo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/gpu-checks.sh OUT PART... (PART: env, tests, throughput, compile, augment, all)"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
out=$1
shift
parts=("$@")
[ "${parts[*]}" = all ] && parts=(env tests throughput compile augment)
for part in "${parts[@]}"; do
    case $part in env | tests | throughput | compile | augment) ;; *) echo "unknown part '$part'; $usage" >&2; exit 2 ;; esac
done
py=${PYTHON:-python3}
[ -x .venv/bin/python ] && py=.venv/bin/python
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "scripts/gpu-checks.sh: $py sees no CUDA GPU (torch.cuda.is_available() is False)" >&2
    exit 1
fi
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=offline TMPDIR="$work"
rc=0
for part in "${parts[@]}"; do
    echo "== $part"
    case $part in
    env)
        { nvidia-smi; "$py" -c "import sys, torch, timm, numpy, onnxruntime as ort
print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda,
      '| timm', timm.__version__, '| numpy', numpy.__version__, '| onnxruntime', ort.__version__)
print('gpu', torch.cuda.get_device_name(), '| bf16', torch.cuda.is_bf16_supported())"; } 2>&1 | tee "$out/env.txt"
        ;;
    tests)
        HOME="$work" "$py" -m pytest -q -ra -p no:cacheprovider tests 2>&1 | tee "$out/tests.txt"
        ;;
    throughput)
        "$py" benchmarks/pretrain_throughput.py --device cuda --amp none,bf16 --attention sdpa,explicit \
            --json "$out/throughput.json" 2>&1 | grep -v '^step ' | tee "$out/throughput.txt"
        ;;
    compile)
        "$py" benchmarks/pretrain_throughput.py --device cuda --amp bf16 --compile \
            --json "$out/compile.json" 2>&1 | grep -v '^step ' | tee "$out/compile.txt"
        ;;
    augment)
        "$py" benchmarks/augment_path.py --device cuda --amp bf16 --config configs/pretrain_vit_small_gpu.yaml \
            --batch-size 256 --workers 4 --threads 4 --steps 20 --json "$out/augment.json" 2>&1 | tee "$out/augment.txt"
        ;;
    esac
    status=${PIPESTATUS[0]}
    [ "$status" -eq 0 ] || { echo "scripts/gpu-checks.sh: part '$part' failed (exit $status)" >&2; rc=1; }
done
exit $rc
