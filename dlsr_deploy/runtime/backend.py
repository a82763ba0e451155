"""One backend interface (in the style of Polygraphy's runners) and how backends are opened.

A bundle has a `backbone` graph (images -> z0) and score graphs that take z0: `heads` (the
density heads and their combinations: one small MatMul each) and `denoiser` (every score,
DLSR reconstruction included). A backend implements

    name: str                              e.g. "ort-cpu", "trt" (its registry name)
    provider: str                          what actually executes (ORT provider, TensorRT + GPU)
    open_graph(role) -> session            an object with run(feeds) -> outputs and close()

and inherits from `BackendBase`:

    run(images, graphs=None) -> outputs    backbone, then the score graphs named (default: the
                                           denoiser: every score), z0 included
    run_timed(images, graphs=None) -> (outputs, {"backbone": s, <graph>: s})
    run_graph(role, feeds)                 one graph; its session is opened on first use, so a
                                           Detector that reads only density heads never loads
                                           the denoiser
    close(), context-manager lifetime

Which backends exist, and which this machine can run, is the registry's business
(`dlsr_deploy.registry`); `open_backend(name, manifest, options)` builds one from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.errors import BackendUnavailable
from dlsr_deploy.io import cache_root  # noqa: F401  (the runtime's caches live there)


@dataclass(frozen=True)
class OpenOptions:
    """How a backend is opened (each backend reads the fields that concern it).

    threads: intra-op threads (ORT, OpenVINO); max_batch: images per call (None: the registry's
    chunk for this backend, or the bundle's profile maximum); provider_options / strict: ORT's
    provider settings and whether a fallback to CPU is an error; fused: run pipeline.onnx when
    the bundle has it; engines_dir / build / cuda_graphs: TensorRT's plan cache, whether to build
    missing plans, and CUDA-graph replay."""

    threads: Optional[int] = None
    max_batch: Optional[int] = None
    provider_options: Optional[dict] = None
    strict: bool = False
    fused: bool = False
    engines_dir: Optional[Path] = None
    build: bool = True
    cuda_graphs: bool = False


class BackendBase:
    """Lazy per-graph sessions, the backbone -> score-graph chain, timing hook and lifetime."""

    name = "?"
    provider = "?"

    def __init__(self, manifest, options: Optional[OpenOptions] = None):
        self.manifest = manifest
        self.options = options or OpenOptions()
        self._sessions: Dict[str, object] = {}

    def open_graph(self, role: str):  # pragma: no cover - abstract
        """A session for one graph of the bundle: an object with run(feeds) -> outputs and close()."""
        raise NotImplementedError

    def session(self, role: str):
        """The graph's session, opened on first use."""
        if role not in self._sessions:
            self._sessions[role] = self.open_graph(role)
        return self._sessions[role]

    def run_graph(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run one graph ('backbone', 'heads', 'denoiser' or 'pipeline') on named inputs."""
        return self.session(graph).run(feeds)

    def run_timed(
        self, images: np.ndarray, graphs: Optional[Sequence[str]] = None
    ) -> Tuple[Dict[str, np.ndarray], Dict[str, float]]:
        """The backbone on uint8 images, then each score graph on its z0 -> (outputs incl. z0,
        seconds per stage). graphs: the score graphs to run (default: the denoiser, every score)."""
        t0 = time.perf_counter()
        if list(graphs or ()) == ["decision"]:  # images -> the headline in one graph, one call
            out = self.run_graph("decision", {"images": images})
            return out, {"decision": time.perf_counter() - t0}
        z0 = self.run_graph("backbone", {"images": images})["z0"]
        stages = {"backbone": time.perf_counter() - t0}
        out: Dict[str, np.ndarray] = {}
        feed = {"z0": np.ascontiguousarray(z0, dtype=np.float32)}
        for g in graphs or ("denoiser",):
            t = time.perf_counter()
            out.update(self.run_graph(g, feed))
            stages[g] = time.perf_counter() - t
        out["z0"] = z0
        return out, stages

    def run(self, images: np.ndarray, graphs: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """The backbone and the named score graphs on uint8 images -> every output, z0 included."""
        return self.run_timed(images, graphs)[0]

    def close(self) -> None:
        """Release every open session (engines, device memory)."""
        for s in self._sessions.values():
            close = getattr(s, "close", None)
            if close is not None:
                close()
        self._sessions = {}

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


def release_heap(collect: bool = False) -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim; a no-op elsewhere).

    Creating an ONNX Runtime session parses the whole model and pre-packs its MatMul weights;
    the parsed copy is freed afterwards, but glibc keeps the pages, so a process that opened the
    default bundle stayed at 383 MB resident where 240 MB are live. Trimming after load and
    after the self-check returns them (benchmarks/README.md, suite memory)."""
    import ctypes
    import ctypes.util

    if collect:  # objects in reference cycles first (gc), then their pages
        import gc

        gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:  # not glibc (musl, macOS, Windows): nothing to trim
        pass


_CACHE_PROBES: Dict[str, bool] = {}


def usable_cache_dir(folder: Path) -> Optional[Path]:
    """`folder` when a file can be created in it now (made if missing), else None with one warning
    per folder and process: a read-only root or HOME, or a full disk, means "no cache", never a
    failure. Caches only ever cost time when missing."""
    import os
    import tempfile
    import warnings

    key = str(folder)
    if key not in _CACHE_PROBES:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-") as f:
                f.write(b"x" * 4096)
                f.flush()
                os.fsync(f.fileno())
            _CACHE_PROBES[key] = True
        except OSError as exc:
            _CACHE_PROBES[key] = False
            warnings.warn(
                f"cache {folder} is not usable ({exc.strerror or exc}); running without it (set DLSR_CACHE to a "
                "writable folder to cache compiled models and verdicts)",
                RuntimeWarning,
                stacklevel=3,
            )
    return Path(folder) if _CACHE_PROBES[key] else None


def available_backends() -> Tuple[List[str], List[dict]]:
    """(backends this machine can run; [{backend, reason}] for the others), from the registry."""
    from dlsr_deploy.registry import availability

    return availability()


def chunk_for(name: str, manifest, max_batch: Optional[int]) -> int:
    """Images per backend call: the caller's max_batch, else the registry's chunk for the backend,
    else the bundle's batch-profile maximum."""
    from dlsr_deploy.registry import backend_spec

    if max_batch is not None:
        return int(max_batch)
    chunk = backend_spec(name).chunk
    return int(chunk) if chunk is not None else int(manifest.batch_profile["max"])


def open_backend(name: str, manifest, options: Optional[OpenOptions] = None) -> Tuple["BackendBase", int]:
    """(backend, images per call) for one registered backend name on a bundle."""
    from dlsr_deploy.registry import backend_spec, resolve

    spec = backend_spec(name)
    if name not in manifest.backends:
        raise BackendUnavailable(
            f"bundle {manifest.name} ({manifest.precision}) is for {manifest.backends}, not {name!r} (see its "
            "manifest's 'backends'; e.g. 8-bit bundles run on ONNX Runtime, not TensorRT)"
        )
    reason = resolve(spec.probe)()
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} is not usable here: {reason}")
    options = options or OpenOptions()
    chunk = chunk_for(name, manifest, options.max_batch)
    backend = resolve(spec.cls)(manifest, options, spec)
    return backend, chunk


def pick_backend(bundle_backends: List[str]) -> str:
    """'auto' before measuring: the first usable GPU backend the bundle lists (registry order of
    gpu_rank), else the first usable CPU candidate (auto then measures the CPU candidates)."""
    from dlsr_deploy.registry import BACKENDS

    ok, missing = available_backends()
    gpu = sorted((s for s in BACKENDS.values() if s.gpu_rank is not None), key=lambda s: s.gpu_rank)
    for s in gpu + [s for s in BACKENDS.values() if s.gpu_rank is None]:
        if s.name in ok and s.name in bundle_backends:
            return s.name
    raise BackendUnavailable(
        f"no backend for this bundle (it is for {bundle_backends}); unavailable here: "
        + "; ".join(f"{m['backend']}: {m['reason']}" for m in missing)
    )
