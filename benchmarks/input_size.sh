#!/usr/bin/env bash
# input_size sweep (issue 5): a model per input size, same protocol as the 224 model
# (25 epochs, early stopping on held-out ID images), exported FP32 and timed against eager.
#   SIZES="128" bash benchmarks/input_size.sh     (~18 min per size on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
BIN=${BIN:-.venv/bin}
SIZES=${SIZES:-128 160}
BUNDLES=()
for S in $SIZES; do
  $BIN/dlsr-train --data "$DATA/cifar10_train.npz" --out runs/cifar10-lite0-s$S --input-size $S --epochs 25 --patience 10 --preset paper --resume --quiet
  $BIN/dlsr-export --model runs/cifar10-lite0-s$S --out export/c10-fp32-s$S --n-verify 128 --verify-ood "$DATA/tinyimagenet_val_32.npz" --verify-ood "$DATA/dtd_subset10.npz" --force --quiet
  BUNDLES+=(export/c10-fp32-s$S)
done
$BIN/dlsr-bench "${BUNDLES[@]}" export/c10-fp32 --data "$DATA/cifar10_test.npz" \
  --ood tinyimagenet="$DATA/tinyimagenet_val_32.npz" --ood dtd="$DATA/dtd_subset10.npz" \
  --n-eval 300 --batch 1 --batch 32 --stem bench_cpu_input_size --quiet
