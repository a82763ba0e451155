#!/usr/bin/env bash
# The sweep of issue 23, in order: the best detector per millisecond (see research/default_detector/sweep/__main__.py).
#
#   bash research/default_detector/pareto.sh                  # every step; about 3 hours on 2 cores, most of it the
#                                              # feature cache (12 backbone x size points) and the LFDN grid
#   CONFIG=lite0@128 bash research/default_detector/pareto.sh # the LFDN grid at another point
#
# 1. heads: every density head and combination per (backbone, input size), with intervals
#    (fills the feature cache through the ORT backbone the first time);
# 2. lfdn: the LFDN size and K at the best point (CONFIG: the point whose headline is best on its
#    worst real OOD set in pareto_heads.md; lite2@160 here);
# 3. time: every point's headline path and the LFDN grid's all-scores path, ORT and OpenVINO;
# 4. report: the frontier and the default it picks: research/default_detector/results/pareto.{json,md,png}.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
CONFIG=${CONFIG:-lite2@160}
$PY -m research.default_detector.sweep heads --data "$DATA"
$PY -m research.default_detector.sweep lfdn --data "$DATA" --config "$CONFIG"
$PY -m research.default_detector.sweep time --data "$DATA"
$PY -m research.default_detector.sweep report
