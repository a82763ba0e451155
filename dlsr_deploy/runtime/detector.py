"""`Detector`: what an edge app embeds. Load a bundle, score images, decide ID / OOD.

    from dlsr_deploy.runtime import Detector
    with Detector.load("export/cifar10-fp16", backend="auto") as det:
        out = det.predict(images)          # uint8 [N, H, W, 3]
        out["score"], out["normalized"], out["is_ood"]

Scores: higher = more OOD. `normalized` is 0 at the median ID score and 1.0 at the
calibrated threshold; `is_ood` = score > threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from dlsr_deploy.errors import BackendUnavailable, InputError
from dlsr_deploy.manifest import Manifest, read_manifest
from dlsr_deploy.runtime.inputs import as_batch

BACKENDS = ("auto", "trt", "ort-cuda", "ort-cpu")


def _gpu_present() -> bool:
    try:
        from cuda.bindings import runtime as cudart  # type: ignore

        err, n = cudart.cudaGetDeviceCount()
        return int(err) == 0 and n > 0
    except Exception:
        return False


def pick_backend() -> str:
    """TensorRT when importable and a GPU is present, else ORT-CUDA, else ORT-CPU."""
    try:
        import tensorrt  # noqa: F401

        if _gpu_present():
            return "trt"
    except Exception:
        pass
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers() and _gpu_present():
            return "ort-cuda"
    except ImportError:
        pass
    return "ort-cpu"


class Detector:
    def __init__(self, manifest: Manifest, backend, backend_name: str, max_batch: int, resize: bool = True):
        self.manifest = manifest
        self.backend = backend
        self.backend_name = backend_name
        self.max_batch = max_batch
        self.resize = resize
        self.size = manifest.input_size
        thr = manifest.threshold
        self.score_name = thr.get("score", manifest.headline)
        self.threshold = thr.get("value")
        self.center, self.scale = thr.get("center", 0.0), thr.get("scale", 1.0)

    @classmethod
    def load(
        cls,
        bundle,
        backend: str = "auto",
        max_batch: Optional[int] = None,
        strict_providers: bool = False,
        provider_options: Optional[dict] = None,
        threads: Optional[int] = None,
        fused: bool = False,
        resize: bool = True,
        verify: bool = True,
        engines_dir: Optional[Path] = None,
        build: bool = True,
    ) -> "Detector":
        """Open a bundle on a backend: 'auto' | 'trt' | 'ort-cuda' | 'ort-cpu'."""
        if backend not in BACKENDS:
            raise BackendUnavailable(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
        m = read_manifest(Path(bundle), verify=verify)
        chosen = pick_backend() if backend == "auto" else backend
        if backend == "auto" and chosen == "trt" and "trt" not in m.data.get("backends", ["trt"]):
            chosen = "ort-cuda" if _gpu_present() else "ort-cpu"
        profile = m.data.get("batch_profile", {"min": 1, "opt": 32, "max": 256})
        mb = max_batch or int(profile["max"])
        if chosen == "trt":
            from dlsr_deploy.runtime.trt import TrtBackend

            impl = TrtBackend(m, engines_dir=engines_dir, max_batch=mb, build=build)
        else:
            from dlsr_deploy.runtime.ort import OrtBackend

            device = "cuda" if chosen == "ort-cuda" else "cpu"
            impl = OrtBackend(m, device, provider_options, strict_providers, threads, fused)
        return cls(m, impl, chosen, mb, resize)

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def _check_open(self):
        if self.backend is None:
            raise InputError("this Detector is closed")

    def score(self, images) -> Dict[str, np.ndarray]:
        """Per-image scores {name: float32 [N]} for images uint8 [N, H, W, 3] (or one
        [H, W, 3], floats in [0, 1], or a list of paths / PIL images). Batches above
        max_batch are split and reassembled."""
        self._check_open()
        batch = as_batch(images, self.size, self.resize)
        parts = [self.backend.run(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        names = [f"score_{s}" for s in self.manifest.score_names]
        return {n[6:]: np.concatenate([p[n] for p in parts]).astype(np.float32) for n in names}

    def predict(self, images) -> Dict[str, np.ndarray]:
        """score (the calibrated score), normalized (1.0 = threshold), is_ood, and every score."""
        s = self.score(images)
        if self.threshold is None:
            raise InputError("this bundle has no calibrated threshold; use score() or re-export with calibration")
        head = s[self.score_name]
        out = dict(s)
        out["score"] = head
        out["normalized"] = ((head - self.center) / self.scale).astype(np.float32)
        out["is_ood"] = head > self.threshold
        return out

    def __repr__(self) -> str:
        return f"Detector({self.manifest.data['name']!r}, backend={self.backend_name!r}, precision={self.manifest.precision!r})"
