#!/usr/bin/env bash
# One-go check for owners of an NVIDIA GPU with TensorRT (10.12+ or 11.x):
#   bash tests/platform/gpu/gpu_check.sh [BUNDLE_FP32] [BUNDLE_FP16]
# Builds FP32 and FP16 engines for the bundles (the tiny test bundles are exported first
# when none are given), runs them against ORT-CPU on the same images, runs the TensorRT
# tests, and writes tests/platform/gpu/results/{gpu_check.json,bench_gpu.*}. Needs: pip install -e '.[train,trt,dev]'
# plus onnxruntime (CPU) for the reference scores.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PY:-python}
$PY -m pytest -q tests/unit/runtime/test_trt.py -rs
PYTHONPATH=tests $PY tests/platform/gpu/gpu_check.py "$@"
