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

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np

CANDIDATES = ("ort-cpu", "openvino")


def cache_dir() -> Path:
    """Where verdicts are kept (beside the self-check's)."""
    from dlsr_deploy.runtime.backend import cache_root

    return cache_root() / "backend-choice"


def _key(manifest, threads) -> str:
    from dlsr_deploy.runtime.selfcheck import cpu_info

    info = {"digest": manifest.data.get("digest"), "threads": threads, **cpu_info()}
    for mod in ("onnxruntime", "openvino"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:24]


def _images(manifest, chunk: int) -> np.ndarray:
    try:
        with np.load(manifest.golden_path(), allow_pickle=False) as g:
            images = g["images"]
    except Exception:  # a bundle without a golden set: any images of the right size time the same
        s = manifest.input_size
        images = np.random.default_rng(0).integers(0, 256, (chunk, s, s, 3), dtype=np.uint8)
    reps = -(-chunk // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:chunk])


def time_backend(backend, images: np.ndarray, rounds: int = 3) -> float:
    """Median seconds of backend.run(images) after one warm-up."""
    backend.run(images)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        backend.run(images)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def choose_cpu_backend(manifest, open_backend: Callable[[str], tuple], threads=None) -> Tuple[Dict, Optional[tuple]]:
    """(verdict, kept) for the CPU candidates the bundle lists and this machine can import.

    verdict: {'choice': name, 'seconds': {name: s per image}, 'cached': bool}. open_backend(name)
    -> (backend, its chunk); each candidate is timed on a batch of its own chunk size (what a
    Detector on it would run), one at a time. kept: the winner's (backend, chunk) when it was the
    last one measured and is still open (so it is not compiled twice), else None."""
    from dlsr_deploy.io import atomic_write_text
    from dlsr_deploy.runtime.backend import release_heap

    names = [n for n in CANDIDATES if n in manifest.backends and _importable(n)]
    if len(names) < 2:
        return {"choice": names[0] if names else "ort-cpu", "seconds": {}, "cached": False}, None
    path = cache_dir() / f"{_key(manifest, threads)}.json"
    if path.exists():
        try:
            verdict = json.loads(path.read_text())
            if verdict.get("choice") in names:
                return {**verdict, "cached": True}, None
        except (OSError, ValueError):
            pass
    seconds, last = {}, None
    for name in names:
        if last is not None:
            last[0].close()
            release_heap()  # the next candidate must not stack on this one's freed pages
        last = open_backend(name)
        try:
            seconds[name] = time_backend(last[0], _images(manifest, last[1])) / last[1]
        except BaseException:
            last[0].close()
            raise
    verdict = {"choice": min(seconds, key=seconds.get), "seconds": seconds}  # per image
    kept = last if verdict["choice"] == names[-1] else None
    if kept is None:
        last[0].close()
        release_heap()
    try:
        atomic_write_text(path, json.dumps(verdict, indent=2) + "\n")
    except OSError:  # a read-only home: measure again next time
        pass
    return {**verdict, "cached": False}, kept


def _importable(name: str) -> bool:
    import importlib.util

    module = {"ort-cpu": "onnxruntime", "openvino": "openvino"}[name]
    return importlib.util.find_spec(module) is not None
