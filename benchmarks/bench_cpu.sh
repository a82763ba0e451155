#!/usr/bin/env bash
# CPU benchmark of the real-data model (issue 5): exports the bundles and runs dlsr-bench.
#   bash benchmarks/bench_cpu.sh          (needs runs/cifar10-lite0 from research/default_detector/real_data.sh)
#   EXPORT=0 bash benchmarks/bench_cpu.sh (time the bundles already exported)
# Writes benchmarks/results/bench_cpu.{json,md,png} (main table: K=2 FP32/FP16/INT8)
# and benchmarks/results/bench_cpu_steps.{json,md,png} (K = 1, 2, 3 sweep, FP32),
# benchmarks/results/ort_threads.{json,md} (ORT thread-pool variants, the profile behind
# the runtime's spin-wait setting).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RUN=${RUN:-runs/cifar10-lite0}
BIN=${BIN:-.venv/bin}
V=(--verify-ood "$DATA/tinyimagenet_val_32.npz" --verify-ood "$DATA/dtd_subset10.npz" --force --quiet)
if [ "${EXPORT:-1}" = 1 ]; then  # EXPORT=0 re-times the bundles already in export/
  $BIN/dlsr-export --model "$RUN" --out export/c10-fp32 --fused "${V[@]}"
  $BIN/dlsr-export --model "$RUN" --out export/c10-fp16 --fp16 "${V[@]}"
  $BIN/dlsr-export --model "$RUN" --out export/c10-int8 --int8 "${V[@]}"
  for K in 1 3; do
    $BIN/dlsr-export --model "$RUN" --out export/c10-fp32-k$K --steps $K --n-verify 128 "${V[@]}"
  done
fi
OOD=(--ood tinyimagenet="$DATA/tinyimagenet_val_32.npz" --ood dtd="$DATA/dtd_subset10.npz")
$BIN/python -m tools.collect_parity export/c10-fp32 export/c10-fp16 export/c10-int8 > benchmarks/results/parity.md
$BIN/dlsr-bench export/c10-fp32 export/c10-fp16 export/c10-int8 --data "$DATA/cifar10_test.npz" "${OOD[@]}" \
  --n-eval 300 --out benchmarks/results --stem bench_cpu --quiet
$BIN/dlsr-bench export/c10-fp32-k1 export/c10-fp32 export/c10-fp32-k3 --data "$DATA/cifar10_test.npz" "${OOD[@]}" \
  --n-eval 300 --batch 1 --batch 32 --out benchmarks/results --stem bench_cpu_steps --quiet
$BIN/python -m benchmarks ort_threads export/c10-fp32 --data "$DATA/cifar10_test.npz"
