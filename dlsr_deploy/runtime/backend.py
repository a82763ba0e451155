"""One backend interface (in the style of Polygraphy's runners) and backend discovery.

Every backend runs a bundle's two graphs, `backbone` (images -> z0) and `denoiser`
(z0 -> scores, z0_hat), and implements:

    name: str                       e.g. "ort-cpu", "trt"
    provider: str                   what actually executes (ORT provider, TensorRT version + GPU)
    run_graph(graph, feeds) -> outputs      one graph
    close()

and inherits from `BackendBase`:

    run(images) -> outputs          both graphs, outputs include z0
    run_timed(images) -> (outputs, {"backbone": s, "denoiser": s})   per-stage timing hook
    context-manager lifetime (`with backend: ...` closes it)

`available_backends()` is the one place that says which backends this machine can run,
with the reason for each one it cannot; `Detector.load(backend="auto")` and `dlsr-bench`
both use it.
"""

from __future__ import annotations

import time
from typing import Dict, List, Tuple

import numpy as np

AUTO_ORDER = ("trt", "ort-cuda", "ort-cpu")  # what "auto" picks from, best first
# OpenVINO is chosen explicitly: on the dev CPU it measured at par with ORT, not faster
BACKENDS = AUTO_ORDER + ("openvino",)


class BackendBase:
    """The chain backbone -> denoiser, timing hook and lifetime shared by every backend."""

    name = "?"
    provider = "?"

    def run_graph(
        self, graph: str, feeds: Dict[str, np.ndarray]
    ) -> Dict[str, np.ndarray]:  # pragma: no cover - abstract
        """Run one graph ('backbone' or 'denoiser') on named inputs."""
        raise NotImplementedError

    def run_timed(self, images: np.ndarray) -> Tuple[Dict[str, np.ndarray], Dict[str, float]]:
        """Both graphs on uint8 images -> (outputs incl. z0, seconds per stage)."""
        t0 = time.perf_counter()
        z0 = self.run_graph("backbone", {"images": images})["z0"]
        t1 = time.perf_counter()
        out = self.run_graph("denoiser", {"z0": np.ascontiguousarray(z0, dtype=np.float32)})
        out["z0"] = z0
        return out, {"backbone": t1 - t0, "denoiser": time.perf_counter() - t1}

    def run(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """Both graphs on uint8 images -> every graph output, z0 included."""
        return self.run_timed(images)[0]

    def close(self) -> None:  # pragma: no cover - overridden
        """Release sessions, engines and device memory."""
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def import_optional(module: str, extra: str):
    """An optional backend package, or a clear error naming the extra that installs it."""
    import importlib

    from dlsr_deploy.errors import missing_extra

    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_extra(module, extra) from None


def release_heap() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim; a no-op elsewhere).

    Creating an ONNX Runtime session parses the whole model and pre-packs its MatMul weights;
    the parsed copy is freed afterwards, but glibc keeps the pages, so a process that opened the
    default bundle stayed at 383 MB resident where 240 MB are live. Trimming after load and
    after the self-check returns them (benchmarks/results/memory.md)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:  # not glibc (musl, macOS, Windows): nothing to trim
        pass


def cache_root():
    """Where the runtime keeps its caches: beside $DLSR_CACHE when set, else ~/.cache/dlsr-deploy."""
    import os
    from pathlib import Path

    env = os.environ.get("DLSR_CACHE")
    return Path(env).parent if env else Path.home() / ".cache" / "dlsr-deploy"


def gpu_present() -> bool:
    """Whether cuda-python sees at least one CUDA device."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore

        err, n = cudart.cudaGetDeviceCount()
        return int(err) == 0 and n > 0
    except Exception:
        return False


def available_backends() -> Tuple[List[str], List[dict]]:
    """(backends this machine can run, best first; [{backend, reason}] for the others)."""
    ok: List[str] = []
    missing: List[dict] = []
    gpu = gpu_present()
    try:
        import tensorrt  # noqa: F401

        if gpu:
            ok.append("trt")
        else:
            missing.append({"backend": "trt", "reason": "tensorrt installed but no CUDA device"})
    except Exception:
        missing.append(
            {
                "backend": "trt",
                "reason": "tensorrt not installed (pip install 'dlsr-deploy[trt]' on an NVIDIA GPU machine)",
            }
        )
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers() and gpu:
            ok.append("ort-cuda")
        else:
            missing.append({"backend": "ort-cuda", "reason": "onnxruntime-gpu with a CUDA device not available"})
        ok.append("ort-cpu")
    except ImportError:
        missing.append({"backend": "ort-cpu", "reason": "onnxruntime not installed (pip install 'dlsr-deploy[cpu]')"})
    try:
        import openvino  # noqa: F401

        ok.append("openvino")
    except ImportError:
        missing.append(
            {"backend": "openvino", "reason": "openvino not installed (pip install 'dlsr-deploy[openvino]')"}
        )
    return ok, missing


def pick_backend(bundle_backends: List[str]) -> str:
    """'auto': the first available backend the bundle is for (TensorRT > ORT-CUDA > ORT-CPU)."""
    from dlsr_deploy.errors import BackendUnavailable

    ok, missing = available_backends()
    for b in ok:
        if b in bundle_backends and b in AUTO_ORDER:
            return b
    raise BackendUnavailable(
        f"no backend for this bundle (it is for {bundle_backends}); unavailable here: "
        + "; ".join(f"{m['backend']}: {m['reason']}" for m in missing)
    )
