"""PyTorch -> ONNX export of the backbone, the few-step denoiser and the fused pipeline
(needs torch + onnx; may use the runtime to verify)."""
