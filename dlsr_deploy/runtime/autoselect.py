"""`backend="auto"` on a CPU: ONNX Runtime or OpenVINO, whichever measures faster here.

Which CPU runtime is faster depends on the machine (on the 2-core AVX-512 dev box OpenVINO
FP32 scored 241 images/s at batch 32 vs ORT's 150, at par at batch 1; an 8-bit bundle's dynamic
quantization runs best on ORT), so `auto` does not guess: the first time a bundle meets a
machine + library versions, both backends score the bundle's golden images at the Detector's
chunk size (one warm-up, then the median of three rounds; seconds per image compared) and the
faster one is kept. The
verdict (with the timings) is cached like the self-check's, so later loads cost nothing.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np


def _binding(manifest, threads) -> dict:
    from dlsr_deploy.machine import cpu_info, versions

    return {
        "digest": manifest.data.get("digest"),
        "threads": threads,
        **cpu_info(),
        **versions(("onnxruntime", "openvino")),
    }


def _images(manifest, chunk: int) -> np.ndarray:
    import io

    try:
        with np.load(io.BytesIO(manifest.read_bytes("golden")), allow_pickle=False) as g:
            images = g["images"]
    except Exception:  # a bundle without a golden set: any images of the right size time the same
        s = manifest.native_size
        images = np.random.default_rng(0).integers(0, 256, (chunk, s, s, 3), dtype=np.uint8)
    reps = -(-chunk // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:chunk])


def time_backend(backend, images: np.ndarray, graphs=None, rounds: int = 3) -> float:
    """Median seconds of backend.run(images, graphs) after one warm-up."""
    from dlsr_deploy.timing import median_seconds

    return median_seconds(lambda: backend.run(images, graphs), rounds)


def choose_cpu_backend(manifest, open_backend: Callable[[str], tuple], threads=None) -> Tuple[Dict, Optional[tuple]]:
    """(verdict, kept) for the CPU candidates the bundle lists and this machine can import.

    verdict: {'choice': name, 'seconds': {name: s per image}, 'cached': bool}. open_backend(name)
    -> (backend, its chunk); each candidate is timed on a batch of its own chunk size (what a
    Detector on it would run), one at a time. kept: the winner's (backend, chunk) when it was the
    last one measured and is still open (so it is not compiled twice), else None."""
    from dlsr_deploy.registry import BACKENDS, resolve
    from dlsr_deploy.runtime.backend import release_heap
    from dlsr_deploy.runtime.verdicts import VerdictCache

    names = [
        n
        for n, spec in BACKENDS.items()
        if spec.cpu_candidate and n in manifest.backends and resolve(spec.probe)() is None
    ]
    graphs = manifest.graphs_for([manifest.headline])  # the path a Detector runs by default
    if len(names) < 2:
        return {"choice": names[0] if names else "ort-cpu", "seconds": {}, "cached": False}, None
    cache, binding = VerdictCache("backend-choice"), _binding(manifest, threads)
    verdict = cache.get(binding)
    if isinstance(verdict, dict) and verdict.get("choice") in names:
        return {**verdict, "cached": True}, None
    seconds, last = {}, None
    for name in names:
        if last is not None:
            last[0].close()
            release_heap()  # the next candidate must not stack on this one's freed pages
        last = open_backend(name)
        try:
            seconds[name] = time_backend(last[0], _images(manifest, last[1]), graphs) / last[1]
        except BaseException:
            last[0].close()
            raise
    verdict = {"choice": min(seconds, key=seconds.get), "seconds": seconds}  # per image
    kept = last if verdict["choice"] == names[-1] else None
    if kept is None:
        last[0].close()
        release_heap()
    cache.put(binding, verdict)  # a read-only home: measure again next time
    return {**verdict, "cached": False}, kept
