"""The compute bound a bench row is compared with: the machine's SGEMM rate and each bundle's
conv + matmul FLOPs per image."""

from __future__ import annotations

import json
import time
from typing import Optional, Tuple

import numpy as np


def gemm_gflops(n: int = 2048, seconds: float = 1.5, windows: int = 5, dtype: str = "float32") -> dict:
    """GEMM rate (torch if installed, else numpy; dtype 'float32', or 'bfloat16' / 'int8' with torch:
    int8 x int8 -> int32 through torch._int_mm, in GOP/s): the best of `windows` equal windows,
    because a bound is what the machine can do when nothing interferes."""
    try:
        import torch

        if dtype == "int8":
            a, b = (torch.randint(-128, 127, (n, n), dtype=torch.int8) for _ in range(2))
            mm = lambda: torch._int_mm(a, b)  # noqa: E731
        else:
            a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
            mm = lambda: torch.mm(a, b)  # noqa: E731
        lib = f"torch {torch.__version__} ({torch.get_num_threads()} threads, {dtype})"
    except ImportError:
        if dtype != "float32":
            return {"gflops": float("nan"), "library": f"no {dtype} GEMM without torch"}
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


def flops_per_image(manifest, path: str = "all") -> Optional[float]:
    """Conv + matmul FLOPs of the eager pipeline for one image (torch FlopCounterMode): every score
    (path 'all') or the headline's (path 'headline': a density headline never runs the denoiser)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    from dlsr_deploy.bench.runners import EagerRunner

    r = EagerRunner(manifest, path=path)
    size = manifest.native_size
    with FlopCounterMode(display=False) as fc:
        r.run(np.zeros((1, size, size, 3), np.uint8))
    return float(fc.get_total_flops())


def eager_key(m) -> str:
    """Bundles that differ only in precision share one eager baseline (and its FLOPs, and the peers):
    a bf16 bundle's refitted heads and combinations are the bundle's, not the run's, so they are
    not part of the key (the eager baseline is the run's FP32 model)."""
    return json.dumps(
        [
            m.checkpoint_sha256,
            m.score_config.to_dict(),
            sorted(m.score_names),
            m.model_config.feature.to_dict(),
        ],
        sort_keys=True,
    )


def _low_dtype(m) -> Optional[str]:
    """The GEMM type a bundle's backbone runs in when it is not FP32: bf16, or int8 for an INT8 backbone."""
    if m.precision == "bf16":
        return "bfloat16"
    if m.precision == "int8" and (m.data.get("precision") or {}).get("int8_backbone_from") is not None:
        return "int8"
    return None


def _bounds(fpi: dict, gemm: dict, low: Optional[dict]) -> dict:
    """The bound of one bundle per path: images/s at the GEMM rate of the precision its backbone runs
    in (bf16's or int8's for those, FP32's otherwise; the FP32 one is kept as bound_fp32_*)."""
    rate = low["gflops"] if low and np.isfinite(low["gflops"]) else gemm["gflops"]
    out = {"flops_per_image": fpi["all"], "flops_per_image_headline": fpi["headline"]}
    for p, suffix in (("all", ""), ("headline", "_headline")):
        f = fpi[p]
        out[f"bound{suffix}_images_per_s"] = rate * 1e9 / f if f else None
        out[f"bound_fp32{suffix}_images_per_s"] = gemm["gflops"] * 1e9 / f if f else None
    return out


def compute_bounds(manifests) -> Tuple[dict, dict]:
    """(compute block of the result, {bundle: {flops_per_image, bound_images_per_s}})."""
    gemm = gemm_gflops()
    low = {t: gemm_gflops(dtype=t) for t in sorted({_low_dtype(m) for m in manifests} - {None})}
    per_bundle, fpi_by_key = {}, {}
    for m in manifests:
        if eager_key(m) not in fpi_by_key:  # FP32/FP16/INT8 of one model: counted once
            fpi_by_key[eager_key(m)] = {p: flops_per_image(m, p) for p in ("all", "headline")}
        per_bundle[m.name] = _bounds(fpi_by_key[eager_key(m)], gemm, low.get(_low_dtype(m)))
    compute = {
        "gemm": gemm,
        "gemm_bf16": low.get("bfloat16"),
        "gemm_int8": low.get("int8"),
        **per_bundle[manifests[0].name],
        "per_bundle": per_bundle,
        "note": "images/s that the measured SGEMM rate allows for each bundle's conv+matmul FLOPs per image "
        "(eager pipeline; torch FlopCounterMode): every score (bound_images_per_s) and the headline's "
        "(bound_headline_images_per_s), each row against its path's; a bf16 bundle's bound is the measured bf16 "
        "GEMM rate's, an INT8 backbone's the int8 GEMM rate's (torch._int_mm; bound_fp32_* keep the FP32 ones); "
        "top-level values: the first bundle",
    }
    return compute, per_bundle
