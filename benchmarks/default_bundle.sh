#!/usr/bin/env bash
# Issue 11: export the default bundle (headline sum_mfsim_gauss_layer, density heads in the
# graph) from a scale run in FP32 / FP16 / INT8, collect each export's parity, and time it
# against PyTorch eager with dlsr-bench (batch 1 and 32, interleaved rounds).
#   RUN=runs/c50k bash benchmarks/default_bundle.sh
# Writes benchmarks/results/parity_default.md, parity_<bundle>.json and bench_cpu_default.{json,md,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RUN=${RUN:-runs/c50k}
NAME=${NAME:-$(basename "$RUN")}
BIN=${BIN:-.venv/bin}
V=(--verify-ood "$DATA/tinyimagenet_val_32.npz" --verify-ood "$DATA/dtd_subset10.npz" --force --quiet)
if [ "${EXPORT:-1}" = 1 ]; then
  $BIN/dlsr-export --model "$RUN" --out "export/$NAME-fp32" "${V[@]}"
  $BIN/dlsr-export --model "$RUN" --out "export/$NAME-fp16" --fp16 "${V[@]}"
  $BIN/dlsr-export --model "$RUN" --out "export/$NAME-int8" --int8 "${V[@]}" || echo "INT8 export failed its parity check (see above)"
  $BIN/dlsr-export --model "$RUN" --out "export/$NAME-int8w" --int8 --int8-scheme weight-only "${V[@]}" \
    || echo "INT8 weight-only export failed its parity check (see above)"
  $BIN/dlsr-export --model "$RUN" --out "export/$NAME-int8ov" --int8 --int8-scheme openvino "${V[@]}" \
    || echo "INT8 OpenVINO export failed its parity check (see above)"
  # the speed / accuracy trade the default guard refuses (issue 13): NNCF INT8 backbone blocks >= 1,
  # exported at a relaxed parity budget (2 % flips per score, rank 0.995, AUROC 0.5 pts) that
  # dlsr-bench prints next to its rows; not a default, a measurement of what the guard costs
  $BIN/dlsr-export --model "$RUN" --out "export/$NAME-int8ov-bb1" --int8 --int8-scheme openvino \
    --int8-backbone-from 1 --flip-rate 0.02 --rank-corr 0.995 --auroc-change 0.005 "${V[@]}" \
    || echo "INT8 OpenVINO backbone export failed even the relaxed parity check (see above)"
fi
B=("export/$NAME-fp32" "export/$NAME-fp16")
[ -f "export/$NAME-int8/manifest.json" ] && B+=("export/$NAME-int8")
[ -f "export/$NAME-int8w/manifest.json" ] && B+=("export/$NAME-int8w")
[ -f "export/$NAME-int8ov/manifest.json" ] && B+=("export/$NAME-int8ov")
[ -f "export/$NAME-int8ov-bb1/manifest.json" ] && B+=("export/$NAME-int8ov-bb1")
$BIN/python benchmarks/collect_parity.py "${B[@]}" > benchmarks/results/parity_default.md
OOD=(--ood tinyimagenet="$DATA/tinyimagenet_val_32.npz" --ood dtd="$DATA/dtd_subset10.npz")
$BIN/dlsr-bench "${B[@]}" --data "$DATA/cifar10_test.npz" "${OOD[@]}" --n-eval 300 --batch 1 --batch 32 \
  --stem bench_cpu_default --quiet
