"""Availability probes of the built-in backends (the registry names them by string): each returns
None when this machine can run the backend, else the reason it cannot, with the install hint."""

from __future__ import annotations

from typing import Optional

from dlsr_deploy.registry import module_found


def tensorrt() -> Optional[str]:
    """TensorRT: the package and a CUDA device."""
    from dlsr_deploy.machine import gpu_name

    if not module_found("tensorrt"):
        return "tensorrt not installed (pip install 'dlsr-deploy[trt]' on an NVIDIA GPU machine)"
    return None if gpu_name() else "tensorrt installed but no CUDA device"


def ort_cuda() -> Optional[str]:
    """ONNX Runtime's CUDA provider and a CUDA device."""
    from dlsr_deploy.machine import gpu_name

    reason = "onnxruntime-gpu with a CUDA device not available (pip install 'dlsr-deploy[gpu]')"
    if not module_found("onnxruntime"):
        return reason
    import onnxruntime

    ok = "CUDAExecutionProvider" in onnxruntime.get_available_providers() and gpu_name() is not None
    return None if ok else reason


def ort_cpu() -> Optional[str]:
    """ONNX Runtime (CPU provider)."""
    return None if module_found("onnxruntime") else "onnxruntime not installed (pip install 'dlsr-deploy[cpu]')"


def openvino() -> Optional[str]:
    """OpenVINO's CPU plugin."""
    return None if module_found("openvino") else "openvino not installed (pip install 'dlsr-deploy[openvino]')"
