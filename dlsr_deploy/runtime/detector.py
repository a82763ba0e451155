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
from dlsr_deploy.preprocess import as_batch
from dlsr_deploy.runtime.backend import BACKENDS as ENGINE_BACKENDS
from dlsr_deploy.runtime.backend import pick_backend, release_heap

BACKENDS = ("auto",) + ENGINE_BACKENDS
# images per backend call on the CPU. Throughput is flat from here up, memory is not: scoring
# 10,000 images on the default bundle peaked at 571 MB with chunks of 24 vs 624 MB with 32 at the
# same 158 images/s (and 7.5 GB with the TensorRT profile's 256); benchmarks/results/memory.md
CPU_CHUNK = 24
# OpenVINO keeps its activation buffers for the largest batch it has run: at 24 images a process
# scoring 2,000 images held 711 MB; at 12 it peaked at 566 MB for 258.6 images/s, at 8 at 521 MB
# for 239.0 (ORT at 24: 525 MB, ~157 images/s); measured on the default bundle, 2-core EPYC. A
# first load through `auto` (both backends timed, then the self-check) peaked at 610 MB with 12
# and at 597-604 MB with 8 (benchmarks/results/memory.md): OpenVINO is the larger runtime
OPENVINO_CHUNK = 8


def _open_backend(
    m: Manifest, chosen: str, max_batch, provider_options, strict, threads, fused, engines_dir, build, cuda_graphs
):
    """(backend, largest batch per call) for one backend name."""
    if chosen == "openvino":
        from dlsr_deploy.runtime.openvino import OpenVinoBackend

        return OpenVinoBackend(m, threads=threads), max_batch or OPENVINO_CHUNK
    if chosen == "trt":
        from dlsr_deploy.runtime.trt import TrtBackend

        mb = max_batch or m.batch_profile["max"]
        return TrtBackend(m, engines_dir=engines_dir, max_batch=mb, build=build, use_cuda_graph=cuda_graphs), mb
    from dlsr_deploy.runtime.ort import OrtBackend

    device = "cuda" if chosen == "ort-cuda" else "cpu"
    mb = max_batch or (m.batch_profile["max"] if device == "cuda" else CPU_CHUNK)
    return OrtBackend(m, device, provider_options, strict, threads, fused), mb


def _reopen(bundle: str, kwargs: dict) -> "Detector":
    return Detector.load(bundle, **kwargs)


class Detector:
    """A loaded bundle on one backend: score(), predict(), close(); see the module docstring."""

    def __init__(self, manifest: Manifest, backend, backend_name: str, max_batch: int, resize: bool = True):
        self.manifest = manifest
        self.backend = backend
        self.backend_name = backend_name
        self.max_batch = max_batch
        self.resize = resize
        self.size = manifest.input_size
        thr = manifest.threshold
        self.score_name = thr.score
        self.threshold = thr.value
        self.center, self.scale = thr.center, thr.scale

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
        cuda_graphs: bool = False,
        trusted_keys: Optional[list] = None,
        self_check: str = "auto",
    ) -> "Detector":
        """Open a bundle on a backend: 'auto' | 'trt' | 'ort-cuda' | 'ort-cpu' | 'openvino'.

        'auto': TensorRT with a GPU, else ORT-CUDA, else the faster of ORT CPU and OpenVINO on
        this machine (measured on the golden set the first time, verdict cached; see
        runtime/autoselect.py; `det.backend_choice` holds the timings).

        max_batch: the largest batch one backend call gets; larger inputs are split. Default:
        the bundle's profile maximum on a GPU, CPU_CHUNK on ORT CPU, OPENVINO_CHUNK on OpenVINO
        (memory stays bounded and throughput is already near flat there). cuda_graphs: TensorRT
        only, capture one CUDA graph per
        batch size and replay it (fewer launches at small batches). trusted_keys: Ed25519 public
        keys (PEM paths or bytes); the bundle must be signed by one of them. self_check: 'auto'
        replays the bundle's golden set the first time it meets this machine + backend + library
        versions (verdict cached), 'always' every load, 'never' skips it; a failure raises
        ParityError naming the platform."""
        kwargs = {k: v for k, v in locals().items() if k not in ("cls", "bundle")}
        if backend not in BACKENDS:
            raise BackendUnavailable(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise InputError(f"max_batch: expected a positive integer, got {max_batch!r}")
        m = read_manifest(Path(bundle), verify=verify, trusted_keys=trusted_keys)
        if backend != "auto" and backend not in m.backends:
            raise BackendUnavailable(
                f"bundle {m.name} ({m.precision}) is for {m.backends}, not {backend!r} (see its manifest's "
                "'backends'; e.g. 8-bit bundles run on ONNX Runtime, not TensorRT)"
            )
        chosen = pick_backend(m.backends) if backend == "auto" else backend
        if cuda_graphs and chosen != "trt":
            raise BackendUnavailable(f"cuda_graphs=True needs the TensorRT backend, got {chosen!r}")
        opts = dict(
            max_batch=max_batch,
            provider_options=provider_options,
            strict=strict_providers,
            threads=threads,
            fused=fused,
            engines_dir=engines_dir,
            build=build,
            cuda_graphs=cuda_graphs,
        )
        choice = kept = None
        if backend == "auto" and chosen == "ort-cpu" and not fused:  # ORT or OpenVINO: the faster one here
            from dlsr_deploy.runtime.autoselect import choose_cpu_backend

            choice, kept = choose_cpu_backend(m, lambda n: _open_backend(m, n, **opts), threads)
            chosen = choice["choice"]
        impl, mb = kept or _open_backend(m, chosen, **opts)
        release_heap()  # the parsed model copies are freed by now; give their pages back
        try:
            from dlsr_deploy.runtime.selfcheck import self_check as run_check

            report = run_check(m, impl, self_check, chunk=mb)
        except BaseException:
            impl.close()
            raise
        if report is not None:
            release_heap()
        det = cls(m, impl, chosen, mb, resize)
        det.self_check_report = report
        det.backend_choice = choice
        det._load_args = (str(Path(bundle).resolve()), kwargs)
        return det

    def __reduce__(self):
        """Pickling re-opens the bundle in the receiving process (spawn pools, Ray workers)."""
        if getattr(self, "_load_args", None) is None:
            raise InputError("this Detector was not made by Detector.load and cannot be pickled")
        bundle, kwargs = self._load_args
        return (_reopen, (bundle, kwargs))

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend; the Detector refuses further calls."""
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
        m = self.manifest
        wanted = set(m.output_names)
        # keep only the scores of each chunk (z0 / z0_hat would hold 4 KB per image until the end)
        parts = [
            {k: v for k, v in self.backend.run(batch[i : i + self.max_batch]).items() if k in wanted}
            for i in range(0, len(batch), self.max_batch)
        ]
        if len(parts) > 1:
            # a call of several chunks: give back the activation pages glibc kept (2-3 ms, under
            # 1 % of such a call; single-chunk calls skip it, where it would cost ~20 % at batch 1)
            release_heap()
        return {
            s: np.concatenate([p[o] for p in parts]).astype(np.float32) for s, o in zip(m.score_names, m.output_names)
        }

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
        return f"Detector({self.manifest.name!r}, backend={self.backend_name!r}, precision={self.manifest.precision!r})"
