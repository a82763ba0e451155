#!/usr/bin/env bash
# The package default (issues 22 and 23), built from evidence and measured against what it replaced.
#
#   bash tools/default_bundle.sh            # every step, in order; each step skips what exists
#   STEP=bench bash tools/default_bundle.sh # one step: train | eval | export | bench | peers | decision | bf16
#
# The configuration comes from the sweep (`bash research/default_detector/pareto.sh`, research/default_detector/results/pareto.md):
# EfficientNet-Lite2 @ 160 px, the LFDN size and K that `pareto.py lfdn` chose by held-out ID loss,
# trained on the 50,000 CIFAR-10 training images (10 % held out). CIFAR images are 32 px, so the native
# size is given explicitly. Writes runs/default50k, export/default-{fp32,fp16,int8,int8w,int8ov},
# research/default_detector/results/default_eval.{json,md,png}, parity_default.md, parity_<bundle>.json,
# bench_cpu_default.{json,md,png} and bench_cpu_peers.{json,md,png}.
#
# "Today's default" for the comparison rows (export/previous-fp32): EfficientNet-Lite0 @ 224, the paper
# LFDN, K = 2, headline gauss_layer, density heads fitted on the same 45,000 training vectors. Its LFDN is
# trained for one epoch only: the rows time it (its runtime ran the denoiser on every predict) and its
# headline is a density head, so its AUROC is the real one; its DLSR scores are not used.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/cifar_env.sh
RUN=${RUN:-runs/default50k}
PREV=${PREV:-runs/previous50k}
BACKBONE=${BACKBONE:-efficientnet-lite2}
SIZE=${SIZE:-160}
WIDTH=${WIDTH:-1120}
BLOCKS=${BLOCKS:-8}
K=${K:-1}
V=(--verify-ood "$DATA/tinyimagenet_val_32.npz" --verify-ood "$DATA/dtd_subset10.npz" --force --quiet)

if want train || want decision; then
  $BIN/dlsr-train "${TRAIN[@]}" --out "$RUN" --backbone "$BACKBONE" --input-size "$SIZE" --native-size 32 \
    --width "$WIDTH" --blocks "$BLOCKS" --epochs 20 --patience 3 --feature-engine ort --resume
fi
if want train; then
  $BIN/dlsr-train "${TRAIN[@]}" --out "$PREV" --backbone efficientnet-lite0 --input-size 224 --native-size 32 \
    --preset paper --epochs 1 --feature-engine ort --resume
fi
if want eval; then
  # a fresh feature cache, so the probes' cost (and the whole evaluation's) is what a user pays
  rm -rf build/eval-cache
  $BIN/dlsr-eval --model "$RUN" --id "$DATA/cifar10_test.npz" "${OOD[@]}" --probes --t-start 3 --steps "$K" \
    --feature-engine ort --cache-dir build/eval-cache --out research/default_detector/results --stem default_eval
fi
if want export; then
  E=(--model "$RUN" --steps "$K" "${V[@]}")
  $BIN/dlsr-export "${E[@]}" --out export/default-fp32
  $BIN/dlsr-export "${E[@]}" --out export/default-fp16 --fp16
  $BIN/dlsr-export "${E[@]}" --out export/default-int8 --int8 || echo "INT8 (dynamic) refused by its parity check (above)"
  $BIN/dlsr-export "${E[@]}" --out export/default-int8w --int8 --int8-scheme weight-only \
    || echo "INT8 weight-only refused by its parity check (above)"
  $BIN/dlsr-export "${E[@]}" --out export/default-int8ov --int8 --int8-scheme openvino \
    || echo "INT8 OpenVINO refused by its parity check (above)"
  $BIN/dlsr-export --model "$PREV" --steps 2 --headline gauss_layer --out export/previous-fp32 --no-verify --force --quiet
fi
B=(export/default-fp32 export/default-fp16)
for b in export/default-int8 export/default-int8w export/default-int8ov; do [ -f "$b/manifest.json" ] && B+=("$b"); done
if want export; then
  $BIN/python -m tools.collect_parity "${B[@]}" > benchmarks/results/parity_default.md
fi
if want bench; then
  $BIN/dlsr-bench "${B[@]}" export/previous-fp32 --data "$DATA/cifar10_test.npz" "${OOD[@]}" --n-eval 300 \
    --batch 1 --batch 32 --backend ort-cpu --backend openvino --out benchmarks/results --stem bench_cpu_default --quiet
fi
if want decision; then
  # issue 28: one graph per decision and the slim bundle, on the package default (fp32)
  [ -f export/default-fp32/decision.onnx ] || $BIN/dlsr-export --model "$RUN" --steps "$K" "${V[@]}" --out export/default-fp32
  $BIN/dlsr-export --model "$RUN" --steps "$K" "${V[@]}" --slim --out export/default-fp32-slim
  $BIN/python -m research.precision.decision_graph export/default-fp32 --backend ort-cpu --stem decision_graph_default
  $BIN/python -m research.precision.decision_graph export/default-fp32 --backend openvino --stem decision_graph_default_ov
  du -b export/default-fp32/*.onnx export/default-fp32/golden.npz export/default-fp32-slim/* > benchmarks/results/slim_sizes.txt
fi
if want bf16; then
  # issue 28: a family of the package default, FP32 + bf16 (backbone bf16 on OpenVINO) + int8 (NNCF static INT8
  # backbone on OpenVINO), heads refitted on each one's features and guarded against the FP32 bundle; the bench
  # with the restated peers; the accuracy of each on the full shared sets
  F=export/default-family
  $BIN/dlsr-export --model "$RUN" --steps "$K" "${V[@]}" --precision fp32,bf16,int8 --out "$F"
  $BIN/dlsr-bench "$F/fp32" "$F/bf16" "$F/int8" --data "$DATA/cifar10_test.npz" "${OOD[@]}" --n-eval 300 --batch 1 --batch 32 \
    --backend ort-cpu --backend openvino --peers --out benchmarks/results --stem bench_cpu_bf16 --quiet
  for p in bf16 int8; do
    [ -f "$F/$p/manifest.json" ] && $BIN/python -m research.precision.precision_accuracy "$F/fp32" "$F/$p" \
      --id "$DATA/cifar10_test.npz" --ood tinyimagenet="$DATA/tinyimagenet_val_32.npz" \
      --ood dtd="$DATA/dtd_subset10.npz" --stem "precision_$p"
  done
fi
if want peers; then
  $BIN/dlsr-bench export/default-fp32 --data "$DATA/cifar10_test.npz" "${OOD[@]}" --n-eval 300 --batch 1 --batch 32 \
    --backend ort-cpu --backend openvino --peers --out benchmarks/results --stem bench_cpu_peers --quiet
fi
