#!/usr/bin/env bash
# GPU checks in one command, for a machine with TensorFlow's GPU build (`pip install ".[gpu]"`),
# meant to finish in under 8 minutes on one H100 (most of it graph building and XLA compiling):
#   1. train-step images/s at 320x320, batch 32, fp32 and mixed bf16 + XLA, for RetinaNet-ResNet18
#      and FSSD-VGG16, IoU-anchor and Mutual Guidance side by side (the MG/IoU step ratio), with
#      the GPU's peak allocation (bench/train_step.py);
#   2. SavedModel latency at batch 1 and 8 (bench/inference.py).
# FULL=1 adds bf16 without XLA. Each part writes bench/results/gpu_*.json; the last step merges
# them into bench/results/gpu.json. Without a GPU it stops at once with one line and exit code 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! $PY - <<'PYEOF' 2>/dev/null
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
sys.exit(0 if tf.config.list_physical_devices("GPU") else 1)
PYEOF
then
  echo "bench/gpu.sh: TensorFlow sees no GPU on this machine; run it where nvidia-smi lists one, with pip install \".[gpu]\"" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
PAIRS="retinanet:resnet18 fssd:vgg16"
# In order of importance, so that a run cut short still leaves the main numbers.
$PY bench/train_step.py --pairs $PAIRS --batch 32 --steps 10 --out bench/results/gpu_train_fp32.json
$PY bench/train_step.py --pairs $PAIRS --batch 32 --steps 10 --precisions mixed_bfloat16 --jit --out bench/results/gpu_train_bf16_xla.json
$PY bench/inference.py --pairs $PAIRS --batches 1 8 --reps 20 --out bench/results/gpu_inference.json
if [ "${FULL:-0}" = 1 ]; then  # bf16 without XLA, to separate the two effects (a few minutes more)
  $PY bench/train_step.py --pairs $PAIRS --batch 32 --steps 10 --precisions mixed_bfloat16 --out bench/results/gpu_train_bf16.json
fi
$PY - <<'PYEOF'
import glob, json, os
parts = {os.path.basename(p)[4:-5]: json.load(open(p))
         for p in sorted(glob.glob("bench/results/gpu_*.json"))}
json.dump(parts, open("bench/results/gpu.json", "w"), indent=2)
print("wrote bench/results/gpu.json:", ", ".join(parts))
PYEOF
