#!/usr/bin/env bash
# The runner-up of the sweep at full scale: what the default would be if the selection rule admitted
# it (issue 23's decision). Same data, native size and LFDN size as tools/default_bundle.sh, one
# other (backbone, input size); the headline is re-chosen by the rule on its own 50k scores.
#
#   bash research/default_detector/alternative_default.sh                       # Lite2 @ 128 (default), every step
#   SIZE=128 BACKBONE=efficientnet-lite1 bash research/default_detector/alternative_default.sh
#   STEP=bench bash research/default_detector/alternative_default.sh            # one step: train | eval | export | bench
#
# EPOCHS (default 2) trains the LFDN only briefly: the decision is about the headline path, which
# reads z0 and the density heads only (fitted on all 45,000 training vectors); the DLSR scores of
# this run are under-trained and are not compared. The bench runs the alternative, today's default
# and the previous default in one run, interleaved, on ORT CPU and OpenVINO.
# Writes runs/alt-<name>, export/alt-<name>-fp32, research/default_detector/results/alt_<name>_eval.{json,md,png},
# alt_<name>_headline.{json,md} and bench_cpu_alt_<name>.{json,md,png}.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/cifar_env.sh
BACKBONE=${BACKBONE:-efficientnet-lite2}
SIZE=${SIZE:-128}
EPOCHS=${EPOCHS:-2}
NAME=${BACKBONE#efficientnet-}_$SIZE
RUN=runs/alt-$NAME

if want train; then
  $BIN/dlsr-train "${TRAIN[@]}" --out "$RUN" --backbone "$BACKBONE" --input-size "$SIZE" --native-size 32 \
    --width 1120 --blocks 8 --epochs "$EPOCHS" --patience 3 --feature-engine ort --resume
fi
if want eval; then
  $BIN/dlsr-eval --model "$RUN" --id "$DATA/cifar10_test.npz" "${OOD[@]}" --probes --t-start 3 --steps 1 \
    --feature-engine ort --cache-dir build/eval-cache --out research/default_detector/results --stem "alt_${NAME}_eval"
  $BIN/python -m research.headline.choose_headline --scores "research/default_detector/results/alt_${NAME}_eval_scores.npz" \
    --stem "alt_${NAME}_headline"
fi
if want export; then
  HEAD=$($BIN/python -c "import json, sys; print(json.load(open(sys.argv[1]))['chosen'])" \
    "research/headline/results/alt_${NAME}_headline.json")
  $BIN/dlsr-export --model "$RUN" --steps 1 --headline "$HEAD" --out "export/alt-$NAME-fp32" \
    --verify-ood "$DATA/tinyimagenet_val_32.npz" --verify-ood "$DATA/dtd_subset10.npz" --force --quiet
fi
if want bench; then
  $BIN/dlsr-bench "export/alt-$NAME-fp32" export/default-fp32 export/previous-fp32 --data "$DATA/cifar10_test.npz" \
    "${OOD[@]}" --n-eval 300 --batch 1 --batch 32 --backend ort-cpu --backend openvino --out research/default_detector/results --stem "bench_cpu_alt_$NAME" --quiet
fi
