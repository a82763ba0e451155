"""Torch-free runtime: load a bundle and score images with ONNX Runtime or TensorRT.

Depends on numpy and one backend only; never imports torch (a test proves it).
"""

from dlsr_deploy.runtime.detector import Detector  # noqa: F401
