#!/usr/bin/env bash
# input_size sweep (issue 5): a model per input size, same protocol as the 224 model
# (25 epochs, early stopping on held-out ID images), evaluated on the full test sets
# (research/default_detector/results/real_s<SIZE>.*), exported FP32 and timed against eager together
# with the 224 bundle (research/default_detector/results/bench_cpu_input_size.*).
#   SIZES="128 160" bash research/default_detector/input_size.sh   (~18 min per size on 2 CPU cores,
#                                                    plus ~5 min of evaluation per size)
#   EXPORT=0 / EVAL=0 / BENCH=0 skip those steps (training resumes or returns at once
#   when the run is complete).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data}
BIN=${BIN:-.venv/bin}
SIZES=${SIZES:-128 160}
OOD=(--ood tinyimagenet="$DATA/tinyimagenet_val_32.npz" --ood dtd="$DATA/dtd_subset10.npz")
BUNDLES=()
for S in $SIZES; do
  $BIN/dlsr-train --data "$DATA/cifar10_train.npz" --out runs/cifar10-lite0-s$S --input-size $S --native-size 32 --epochs 25 --patience 10 --preset paper --resume --quiet
  if [ "${EXPORT:-1}" = 1 ]; then
    $BIN/dlsr-export --model runs/cifar10-lite0-s$S --out export/c10-fp32-s$S --n-verify 128 --verify-ood "$DATA/tinyimagenet_val_32.npz" --verify-ood "$DATA/dtd_subset10.npz" --force --quiet
  fi
  if [ "${EVAL:-1}" = 1 ]; then
    $BIN/dlsr-eval --model runs/cifar10-lite0-s$S --id "$DATA/cifar10_test.npz" "${OOD[@]}" --out research/default_detector/results --stem real_s$S --quiet
  fi
  BUNDLES+=(export/c10-fp32-s$S)
done
if [ "${BENCH:-1}" = 1 ]; then
  $BIN/dlsr-bench "${BUNDLES[@]}" export/c10-fp32 --data "$DATA/cifar10_test.npz" "${OOD[@]}" \
    --n-eval 300 --batch 1 --batch 32 --out research/default_detector/results --stem bench_cpu_input_size --quiet
fi
