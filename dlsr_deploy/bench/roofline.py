"""The compute bound a bench row is compared with: the machine's SGEMM rate and each bundle's
conv + matmul FLOPs per image."""

from __future__ import annotations

import json
import time
from typing import Optional, Tuple

import numpy as np


def gemm_gflops(n: int = 2048, seconds: float = 1.5, windows: int = 5) -> dict:
    """Single-precision GEMM rate (torch if installed, else numpy): the best of `windows`
    equal windows, because a bound is what the machine can do when nothing interferes."""
    try:
        import torch

        a, b = torch.randn(n, n), torch.randn(n, n)
        mm, lib = (lambda: torch.mm(a, b)), f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
        mm, lib = (lambda: a @ b), f"numpy {np.__version__}"
    mm()
    rates = []
    for _ in range(windows):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / windows or count == 0:
            mm()
            count += 1
        rates.append(2 * n**3 * count / (time.perf_counter() - t0) / 1e9)
    return {"gflops": max(rates), "windows_gflops": [round(r, 1) for r in rates], "n": n, "library": lib}


def flops_per_image(manifest) -> Optional[float]:
    """Conv + matmul FLOPs of the eager pipeline (every score) for one image (torch FlopCounterMode)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    from dlsr_deploy.bench.runners import EagerRunner

    r = EagerRunner(manifest)
    size = manifest.input_size
    with FlopCounterMode(display=False) as fc:
        r.run(np.zeros((1, size, size, 3), np.uint8))
    return float(fc.get_total_flops())


def eager_key(m) -> str:
    """Bundles that differ only in precision share one eager baseline (and its FLOPs)."""
    return json.dumps(
        [
            m.checkpoint_sha256,
            m.score_config.to_dict(),
            m.score_names,
            m.combinations,
            m.model_config.feature.to_dict(),
        ],
        sort_keys=True,
    )


def compute_bounds(manifests) -> Tuple[dict, dict]:
    """(compute block of the result, {bundle: {flops_per_image, bound_images_per_s}})."""
    gemm = gemm_gflops()
    per_bundle, fpi_by_key = {}, {}
    for m in manifests:
        if eager_key(m) not in fpi_by_key:  # FP32/FP16/INT8 of one model: counted once
            fpi_by_key[eager_key(m)] = flops_per_image(m)
        fpi = fpi_by_key[eager_key(m)]
        per_bundle[m.name] = {"flops_per_image": fpi, "bound_images_per_s": gemm["gflops"] * 1e9 / fpi if fpi else None}
    compute = {
        "gemm": gemm,
        **per_bundle[manifests[0].name],
        "per_bundle": per_bundle,
        "note": "images/s that the measured SGEMM rate allows for each bundle's conv+matmul FLOPs per image "
        "(eager pipeline, every score; torch FlopCounterMode); top-level values: the first bundle",
    }
    return compute, per_bundle
