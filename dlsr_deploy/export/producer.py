"""Who made a bundle (versions) and where its precision has been verified."""

from __future__ import annotations

from typing import List

# Targets on which bundles of each precision / 8-bit scheme were shown to reproduce their
# export-machine outputs within the bundle's own tolerances. x86-64: every export verifies
# itself there. aarch64: tests/platform/arm64/arm64_check.sh under QEMU user emulation of a Cortex-A76
# (tests/platform/arm64/results/arm64.md): FP32, FP16, the 8-bit weight-only denoiser (ONNX Runtime) and the
# OpenVINO 8-bit scheme (OpenVINO 2026.4 for aarch64, f32 pinned) pass. FP16 passes
# because the runtime computes FP16 graphs in FP32 on ARM64 CPUs (runtime/fp16_upcast.py); run in
# ONNX Runtime's native half-precision kernels it drifted 2.9e-2 against the 2e-2 tolerance.
# A Detector on a target not listed warns; the load-time self-check decides whether the bundle runs.
VERIFIED_TARGETS = {
    "fp32": ["x86_64", "aarch64"],
    "fp16": ["x86_64", "aarch64"],
    "int8/dynamic": ["x86_64"],
    "int8/weight-only": ["x86_64", "aarch64"],
    "int8/openvino": ["x86_64", "aarch64"],
    "bf16": ["x86_64 with AMX or avx512_bf16"],  # refused at load on other CPUs (runtime/openvino.py)
}


def precision_key(precision: str, int8_scheme=None) -> str:
    """'fp32', 'fp16' or 'int8/<scheme>' (the VERIFIED_TARGETS key)."""
    return f"int8/{int8_scheme or 'dynamic'}" if precision == "int8" else precision


def verified_targets(req) -> List[str]:
    """The targets the bundle's precision was verified on (see VERIFIED_TARGETS)."""
    key = precision_key(req.precision, req.int8_scheme if req.int8 else None)
    if req.int8_backbone_from is not None:  # an 8-bit backbone was never checked off the export machine
        return ["x86_64"]
    return list(VERIFIED_TARGETS.get(key, ["x86_64"]))


def producer() -> dict:
    """Versions of the tools that made the bundle."""
    import onnx
    import onnxruntime
    import torch

    import dlsr_deploy
    from dlsr_deploy.export.onnx_utils import OPSET

    return {
        "dlsr_deploy": dlsr_deploy.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "opset": OPSET,
        "onnxruntime": onnxruntime.__version__,
    }
