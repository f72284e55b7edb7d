#!/usr/bin/env bash
# GPU checks in one command, for a machine with TensorFlow's GPU build (`pip install -e ".[gpu]"`).
# On one H100 the fp32 part took 2.5 minutes and the inference part 1.5 minutes, mostly graph
# building; bf16 + XLA compiles for longer (RetinaNet-ResNet18 about 2 minutes, RFBNet-VGG16 more).
# FULL=1 adds bf16 without XLA.
#   1. train-step images/s, fp32 vs mixed precision (bf16) + XLA, for
#      RetinaNet-ResNet18 and RFBNet-VGG16 at 320x320, batch 32, iou and mg side by side;
#   2. SavedModel latency/throughput at batch 1, 8 and 32 (bench/inference.py).
# Results: bench/results/gpu_*.json; tables on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY -c "import tensorflow as tf; g=tf.config.list_physical_devices('GPU'); print('GPUs:', g); assert g, 'no GPU visible to TensorFlow'"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
PAIRS="retinanet:resnet18 rfbnet:vgg16"
# In order of importance, so that a run cut short still leaves the main numbers.
$PY bench/train_step.py --pairs $PAIRS --batch 32 --steps 10 --out bench/results/gpu_train_fp32.json
$PY bench/train_step.py --pairs $PAIRS --batch 32 --steps 10 --precision mixed_bfloat16 --jit --out bench/results/gpu_train_bf16_xla.json
$PY bench/inference.py --pairs $PAIRS --batches 1 8 32 --reps 20 --out bench/results/gpu_inference.json
if [ "${FULL:-0}" = 1 ]; then  # bf16 without XLA, to separate the two effects (a few minutes more)
  $PY bench/train_step.py --pairs $PAIRS --batch 32 --steps 10 --precision mixed_bfloat16 --out bench/results/gpu_train_bf16.json
fi
