#!/usr/bin/env bash
# Issue 11: DLSR at the paper's data scale, density heads and combined scores.
# efficientnet-lite0 @ 224, paper-preset LFDN, early stopping on the held-out ID loss,
# features computed once by the exported FP32 backbone on ONNX Runtime (parity-checked
# against eager per set; results identical to eager features to 2 decimals, see README).
#   bash research/data_scale/data_scale.sh            # every run below, in order
#   bash research/data_scale/data_scale.sh c50k       # one run
# Each run writes runs/<name>/ and research/data_scale/results/scale_<name>.{json,md,png}.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/cifar_env.sh
ENG=(--feature-engine ort)
C10="$DATA/cifar10_train.npz"
EXTRA=("$DATA/cifar10_train_extra1.npz" "$DATA/cifar10_train_extra2.npz" "$DATA/cifar10_train_extra3.npz" "$DATA/cifar10_train_extra4.npz")

run() {  # run NAME MAX_EPOCHS PATIENCE TRAIN-ARGS...
  local name=$1 epochs=$2 patience=$3
  shift 3
  $BIN/dlsr-train "$@" --out "runs/$name" --epochs "$epochs" --patience "$patience" --preset paper --native-size 32 --resume "${ENG[@]}"
  $BIN/dlsr-eval --model "runs/$name" --id "$DATA/cifar10_test.npz" "${OOD[@]}" "${ENG[@]}" \
    --out research/data_scale/results --stem "scale_$name"
}

want() { [ "${1}" = all ] || [ "${1}" = "$2" ]; }
WHAT=${1:-all}
# 10k images (9,000 train + 1,000 held out): the size the earlier results used
want "$WHAT" c10k && run c10k 40 5 --data "$C10"
# 50k images: the paper's training set (45,000 train + 5,000 held out)
want "$WHAT" c50k && run c50k 16 3 --data "$C10" --data "${EXTRA[0]}" --data "${EXTRA[1]}" --data "${EXTRA[2]}" --data "${EXTRA[3]}"
# 10k images plus each training image's horizontal flip as an extra vector (20 epochs of 18,000
# vectors = the optimizer steps of c10k's 40 epochs of 9,000)
want "$WHAT" c10k-flip && run c10k-flip 20 4 --data "$C10" --flip
# 30k images (27,000 train + 3,000 held out): the middle of the curve
want "$WHAT" c30k && run c30k 12 3 --data "$C10" --data "${EXTRA[0]}" --data "${EXTRA[1]}"
exit 0
