"""The load-time self-check: a bundle verifies itself on the machine and backend it runs on.

Numerics depend on where a bundle runs, not where it was exported: an INT8 kernel without
VNNI, a TensorRT engine built with its own kernel choices on the user's GPU, another ONNX
Runtime version. Every bundle carries `golden.npz` (held-out ID and verify-OOD images at
native size with the export machine's outputs of the bundle, and its PyTorch-eager FP32
outputs for reference); the first time a bundle meets a machine + backend + library
combination, `Detector.load` replays it and compares with the bundle's own tolerances
(`dlsr_deploy.parity.compare`: rank correlation of every score, decisions flipped at the
thresholds, z0 error; not AUROC, which 64 images cannot measure to 0.002). The precision's
own error was accepted at export against eager; the self-check measures the platform's drift.
The verdict is cached under a key of manifest digest + backend + provider + CPU model and
flags (or the TensorRT/GPU string) + library versions, so later loads cost nothing.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from dlsr_deploy.errors import ParityError

MODES = ("auto", "always", "never")


def cache_dir() -> Path:
    """Where verdicts are kept: next to the feature cache ($DLSR_CACHE/../selfcheck), else ~/.cache."""
    from dlsr_deploy.runtime.backend import cache_root

    return cache_root() / "selfcheck"


def cpu_info() -> Dict[str, str]:
    """CPU model, a hash of all its flags and the SIMD ones (avx*, amx*, *vnni*) from /proc/cpuinfo."""
    info = {"machine": platform.machine(), "cpu": platform.processor() or "?"}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and "model" not in info:
                    info["model"] = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = sorted(line.split(":", 1)[1].split())
                    info["flags_sha"] = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:12]
                    info["simd"] = " ".join(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)
                    break
    except OSError:
        pass
    return info


def platform_info(backend) -> Dict[str, str]:
    """What the numerics of this backend depend on."""
    info = {"backend": backend.name, "provider": str(getattr(backend, "provider", "?")), **cpu_info()}
    for mod in ("numpy", "onnxruntime", "tensorrt"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def describe_platform(info: Dict[str, str]) -> str:
    """One line naming the backend, its provider, the CPU and its SIMD flags."""
    return f"{info['backend']} ({info['provider']}) on {info.get('model', info['cpu'])} [{info.get('simd', '')}]"


def _key(manifest, info: Dict[str, str]) -> str:
    body = json.dumps({"digest": manifest.data.get("digest"), **info}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:24]


def run_self_check(manifest, backend, chunk: int = 24) -> dict:
    """Replay the golden set on `backend` in the chunks its outputs were made in at export (16;
    never more than `chunk`, the Detector's batch, so the check needs no more memory than
    scoring); the parity report (not cached, not raised)."""
    from dlsr_deploy.parity import Tolerances, compare, spearman

    with np.load(manifest.golden_path(), allow_pickle=False) as g:
        golden = {k: g[k] for k in g.files}
    imgs = golden["images"]
    chunk = min(chunk, int((manifest.data.get("self_check") or {}).get("chunk", chunk)))
    parts = [backend.run(imgs[i : i + chunk]) for i in range(0, len(imgs), chunk)]
    got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    ref = {k.split("/", 1)[1]: v for k, v in golden.items() if k.startswith("bundle/")}
    tol = Tolerances(**manifest.self_check_tolerances)
    rep = compare(ref, got, golden["is_ood"].astype(bool), manifest.threshold.all, tol)
    eager = {k.split("/", 1)[1]: v for k, v in golden.items() if k.startswith("eager/")}
    rep["vs_eager_fp32"] = {k: spearman(eager[k], got[k]) for k in eager if k.startswith("score_")}
    rep["platform"] = platform_info(backend)
    return rep


def self_check(manifest, backend, mode: str = "auto", chunk: int = 24) -> Optional[dict]:
    """Run (or recall) the self-check; ParityError naming the platform when it fails."""
    if mode not in MODES:
        raise ValueError(f"self_check: expected one of {list(MODES)}, got {mode!r}")
    if mode == "never" or manifest.golden is None:
        return None
    info = platform_info(backend)
    path = cache_dir() / f"{_key(manifest, info)}.json"
    if mode == "auto" and path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("passed"):
                return cached
        except (OSError, ValueError):
            pass
    rep = run_self_check(manifest, backend, chunk)
    try:
        from dlsr_deploy.io import atomic_write_text

        atomic_write_text(path, json.dumps(rep, indent=2, default=float) + "\n")
    except OSError:  # a read-only home must not stop scoring; the check simply runs again next time
        pass
    if not rep["passed"]:
        raise ParityError(
            f"bundle {manifest.name} fails its self-check on {describe_platform(info)}: "
            + "; ".join(rep["failures"])
            + " (the scores here differ from the export machine's beyond the bundle's tolerances; "
            "re-export for this platform or use another backend / precision)"
        )
    return rep
