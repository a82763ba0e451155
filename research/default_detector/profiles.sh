#!/usr/bin/env bash
# Issue 32: detectors of several views, and the profiles a user picks by budget (dlsr-train --profile).
#
#   bash research/default_detector/profiles.sh             # every step, in order
#   STEP=accurate bash research/default_detector/profiles.sh
#
# 1. views: every single view, pair, and triple of the named views on the sweep's data (10k training
#    images), one joint paired bootstrap, and each profile picked by the sweep's rule inside its cost
#    bound -> results/pareto_views.{json,md} (fills the feature cache through the ORT backbone: ~30 min);
# 2. profiles: the picks (and the most accurate candidate in each bound) built as bundles and timed in
#    one run, ORT CPU and OpenVINO -> results/pareto_profiles.{json,md};
# 3. accurate: `dlsr-train --profile accurate` on the 50,000 training images and `dlsr-eval --probes` on
#    the shared sets -> results/accurate_eval.{json,md,png}. The ensemble headline reads density heads
#    only, so the LFDN (its DLSR scores) trains EPOCHS epochs (default 3: not a tuned LFDN; the
#    default's was 20) and the headline does not depend on it.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/cifar_env.sh
EPOCHS=${EPOCHS:-3}
if want views; then $BIN/python -m research.default_detector.sweep views --data "$DATA"; fi
if want profiles; then $BIN/python -m research.default_detector.sweep profiles --data "$DATA"; fi
if want accurate; then
  $BIN/dlsr-train "${TRAIN[@]}" --out runs/accurate50k --profile accurate --native-size 32 --epochs "$EPOCHS" \
    --feature-engine ort --resume --quiet
  $BIN/dlsr-eval --model runs/accurate50k --id "$DATA/cifar10_test.npz" "${OOD[@]}" --probes --feature-engine ort \
    --out research/default_detector/results --stem accurate_eval --quiet
fi
