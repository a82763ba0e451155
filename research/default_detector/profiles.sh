#!/usr/bin/env bash
# Issue 32: detectors of several views, and the profiles a user picks by budget (dlsr-train --profile).
#
#   bash research/default_detector/profiles.sh             # every step, in order
#   STEP=accurate bash research/default_detector/profiles.sh   # or views | profiles | joint | export | fast
#
# 1. views: every single view, pair, and triple of the named views on the sweep's data (10k training
#    images), one joint paired bootstrap, and each profile picked by the sweep's rule inside its cost
#    bound -> results/pareto_views.{json,md} (fills the feature cache through the ORT backbone: ~30 min);
# 2. profiles: the picks (and the most accurate candidate in each bound) built as bundles and timed in
#    one run, ORT CPU and OpenVINO -> results/pareto_profiles.{json,md};
# (joint: one head over the joined views against the sum, for the top detectors -> results/pareto_joint.{json,md})
# 3. accurate: `dlsr-train --profile accurate` on the 50,000 training images and `dlsr-eval --probes` on
#    the shared sets -> results/accurate_eval.{json,md,png}. The ensemble headline reads density heads
#    only and does not depend on the LFDN; the LFDN (its DLSR scores, the table's mfsim / mse / lr rows)
#    trains EPOCHS epochs, 20 like the default's, so 'does the diffusion model add anything to this
#    profile?' is answered with a trained LFDN (~30 min on 2 cores; a run of fewer epochs resumes):
#    research/dlsr_adds/results/dlsr_adds_accurate.{json,md} (the per-image scores are then removed);
# 4. export: the accurate run as an FP32 bundle (parity per view on both shared sets), its load-time
#    self-check on ONNX Runtime and OpenVINO, and dlsr-inspect's summary -> results/parity_accurate.md,
#    results/selfcheck_accurate.txt, results/inspect_accurate.txt;
# 5. fast: `dlsr-train --profile fast` at the same scale and the same evaluation -> results/fast_eval.*,
#    research/dlsr_adds/results/dlsr_adds_fast.* (~35 min: its backbone's features are new to the cache).
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/cifar_env.sh
EPOCHS=${EPOCHS:-20}
if want views; then $BIN/python -m research.default_detector.sweep views --data "$DATA"; fi
if want profiles; then $BIN/python -m research.default_detector.sweep profiles --data "$DATA"; fi
if want joint; then $BIN/python -m research.default_detector.sweep joint --data "$DATA"; fi
# a profile at 50k: dlsr-train --profile, dlsr-eval --probes -> results/<profile>_eval.*, then item 4 for it:
# every DLSR score and sum beside its headline, and the headline's components summed with each DLSR score
# (standardised on the run's held-out ID scores) -> research/dlsr_adds/results/dlsr_adds_<profile>.*
profile_at_50k() {  # profile headline
  local res=research/default_detector/results
  $BIN/dlsr-train "${TRAIN[@]}" --out "runs/${1}50k" --profile "$1" --native-size 32 --epochs "$EPOCHS" \
    --feature-engine ort --resume --quiet
  $BIN/dlsr-eval --model "runs/${1}50k" --id "$DATA/cifar10_test.npz" "${OOD[@]}" --probes --feature-engine ort \
    --out "$res" --stem "${1}_eval" --quiet
  $BIN/python -m research.dlsr_adds.dlsr_adds "$res" --stem "${1}_eval" --headline "$2" --model "runs/${1}50k" \
    --name "dlsr_adds_$1"
  rm -f "$res/${1}_eval_scores.npz" "$res/${1}_eval.html"  # per-image scores: data, not results
}
if want accurate; then profile_at_50k accurate ensemble; fi
if want export; then
  # the accurate profile as a bundle: parity of every view's score against eager on both shared sets,
  # then the load-time self-check (golden set) on ONNX Runtime and OpenVINO
  $BIN/dlsr-export --model runs/accurate50k --out export/accurate-fp32 \
    --verify-ood "$DATA/tinyimagenet_val_32.npz" --verify-ood "$DATA/dtd_subset10.npz" --force --quiet
  $BIN/python -m tools.collect_parity --out research/default_detector/results export/accurate-fp32 \
    > research/default_detector/results/parity_accurate.md
  for b in ort-cpu openvino; do
    $BIN/dlsr-check export/accurate-fp32 --on-target --backend "$b"
  done > research/default_detector/results/selfcheck_accurate.txt
  $BIN/dlsr-inspect export/accurate-fp32 | sed -n 1,12p > research/default_detector/results/inspect_accurate.txt
fi
if want fast; then profile_at_50k fast maha_ridge; fi
