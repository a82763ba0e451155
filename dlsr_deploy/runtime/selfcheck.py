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

from typing import Dict, Optional

import numpy as np

from dlsr_deploy.errors import BundleError, ParityError
from dlsr_deploy.machine import cpu_info, versions

MODES = ("auto", "always", "never")


def platform_info(backend) -> Dict[str, str]:
    """What the numerics of this backend depend on: backend, provider, CPU, library versions."""
    return {
        "backend": backend.name,
        "provider": str(getattr(backend, "provider", "?")),
        **cpu_info(),
        **{k: v for k, v in versions().items() if v is not None},
    }


def describe_platform(info: Dict[str, str]) -> str:
    """One line naming the backend, its provider, the CPU and its SIMD flags."""
    return f"{info['backend']} ({info['provider']}) on {info.get('model', info['cpu'])} [{info.get('simd', '')}]"


def load_golden(manifest) -> Dict[str, np.ndarray]:
    """golden.npz as arrays, checked complete: images, is_ood, and the export machine's outputs
    (`bundle/<name>`) of z0 and of every score the manifest lists. A golden set that would
    compare fewer scores than the bundle has is a BundleError, never a pass."""
    import io

    path = manifest.golden_path()
    data = manifest.read_bytes("golden")  # what load verified (a held file when loaded by a Detector)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as g:
            golden = {k: g[k] for k in g.files}
    except Exception as exc:  # zip, header or dtype errors of a malformed file
        raise BundleError(f"{path}: not a readable golden set ({exc.__class__.__name__}: {exc})") from None
    need = ["images", "is_ood", "bundle/z0"] + [f"bundle/{o}" for o in manifest.output_names]
    missing = [k for k in need if k not in golden]
    if missing:
        raise BundleError(
            f"{path}: the golden set lacks {missing[:4]}{'...' if len(missing) > 4 else ''} "
            f"({len(missing)} of the {len(need)} arrays the self-check compares); re-export the bundle"
        )
    n = len(golden["images"])
    bad = [k for k in need[1:] if len(golden[k]) != n]
    if golden["images"].dtype != np.uint8 or golden["images"].ndim != 4 or n == 0 or bad:
        raise BundleError(
            f"{path}: malformed golden set (images {golden['images'].dtype} {list(golden['images'].shape)}; "
            f"arrays of another length: {bad[:3]})"
        )
    return golden


def _replay(backend, images: np.ndarray, chunk: int, roles) -> Dict[str, dict]:
    """{score graph role: its outputs (z0 included)} on the golden images. The backbone runs once
    per chunk and its z0 feeds every score graph (half the work of replaying each path from the
    images: it is what a first load on a slow or emulated CPU waits for); a fused backend runs its
    one graph once, as it does when it scores."""
    parts: Dict[str, list] = {r: [] for r in roles}
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk]
        if getattr(backend, "fused", False):  # one graph computes every score: run it once
            out = backend.run(x)
            for r in roles:
                parts[r].append(out)
            continue
        z0 = backend.run_graph("backbone", {"images": x})["z0"]
        feed = {"z0": np.ascontiguousarray(z0, dtype=np.float32)}
        for r in roles:
            parts[r].append({**backend.run_graph(r, feed), "z0": z0})
    return {r: {k: np.concatenate([p[k] for p in ps]) for k in ps[0]} for r, ps in parts.items()}


def _check_decision_path(manifest, backend, imgs, chunk: int, ref: dict, rep: dict, how) -> None:
    """decision.onnx (images -> the headline in one call) replayed and compared like every path."""
    from dlsr_deploy.parity import compare

    if manifest.decision_score is None or getattr(backend, "fused", False):
        return
    name = manifest.output_name(manifest.decision_score)
    got = [backend.run_graph("decision", {"images": imgs[i : i + chunk]})[name] for i in range(0, len(imgs), chunk)]
    sub = compare({name: ref[name]}, {name: np.concatenate(got)}, *how)
    rep["paths"]["decision"] = {k: sub[k] for k in ("scores", "failures", "passed")}
    rep["failures"] += [f"decision path: {f}" for f in sub["failures"]]


def run_self_check(manifest, backend, chunk: int = 24) -> dict:
    """Replay the golden set on `backend` in the chunks its outputs were made in at export (16;
    never more than `chunk`, the Detector's batch, so the check needs no more memory than
    scoring), on every scoring path (denoiser: every score; heads: the density heads alone);
    the parity report (not cached, not raised)."""
    from dlsr_deploy.parity import Tolerances, compare, spearman

    golden = load_golden(manifest)
    imgs = golden["images"]
    chunk = min(chunk, int((manifest.data.get("self_check") or {}).get("chunk", chunk)))
    ref = {k.split("/", 1)[1]: v for k, v in golden.items() if k.startswith("bundle/")}
    tol = Tolerances(**manifest.self_check_tolerances)
    labels, thresholds = golden["is_ood"].astype(bool), manifest.threshold.all
    rep, got = None, {}
    roles = sorted(manifest.score_graphs, key=lambda r: r != "denoiser")  # the all-scores path first
    outs = _replay(backend, imgs, chunk, roles)
    for role in roles:
        out = outs[role]
        sub = compare({k: v for k, v in ref.items() if k in out}, out, labels, thresholds, tol)
        if rep is None:
            rep, got = sub, out
            rep["paths"] = {}
        else:
            rep["paths"][role] = {k: sub[k] for k in ("scores", "failures", "passed")}
            rep["failures"] += [f"{role} path: {f}" for f in sub["failures"]]
    _check_decision_path(manifest, backend, imgs, chunk, ref, rep, (labels, thresholds, tol))
    rep["passed"] = not rep["failures"]
    eager = {k.split("/", 1)[1]: v for k, v in golden.items() if k.startswith("eager/")}
    rep["vs_eager_fp32"] = {k: spearman(eager[k], got[k]) for k in eager if k.startswith("score_") and k in got}
    rep["platform"] = platform_info(backend)
    return rep


def _fp16_cpu_hint(manifest, backend) -> str:
    """Why an FP16 bundle drifts on a CPU, and what to ship instead (README 'Edge')."""
    if manifest.precision != "fp16" or "CPU" not in str(getattr(backend, "provider", "")):
        return ""
    return (
        ". An FP16 bundle on a CPU computes in FP32 (ONNX Runtime's own fallback on x86-64; on ARM64 the "
        "runtime rewrites its graphs to FP32 at load, because ONNX Runtime's native FP16 kernels there "
        "compute in half precision: z0 drifted 2.9e-2 against the 2e-2 tolerance on an emulated Cortex-A76). "
        "If it still fails here, ship the FP32 or the 8-bit weight-only bundle to CPUs, FP16 to GPUs"
    )


def self_check(manifest, backend, mode: str = "auto", chunk: int = 24) -> Optional[dict]:
    """Run (or recall) the self-check; ParityError naming the platform when it fails. A cached
    verdict is used only when it is authenticated and bound to this bundle digest, platform and
    library versions (`runtime/verdicts.py`) and says passed = true (the JSON boolean)."""
    from dlsr_deploy.runtime.verdicts import VerdictCache

    if mode not in MODES:
        raise ValueError(f"self_check: expected one of {list(MODES)}, got {mode!r}")
    if mode == "never":
        return None
    if manifest.golden is None:  # nothing to check against: say so, never a silent pass
        raise BundleError(
            f"bundle {manifest.name} has no golden set, so it cannot verify itself on this machine; re-export it "
            "with this dlsr-deploy, or load it with Detector.load(..., self_check='never') to skip the check"
        )
    info = platform_info(backend)
    cache = VerdictCache("selfcheck")
    binding = {"digest": manifest.data.get("digest"), "chunk": int(chunk), **info}
    if mode == "auto":
        cached = cache.get(binding)
        if isinstance(cached, dict) and cached.get("passed") is True:
            return cached
    rep = run_self_check(manifest, backend, chunk)
    cache.put(binding, rep)  # a read-only cache folder must not stop scoring: the check runs again
    if rep["passed"] is not True:
        raise ParityError(
            f"bundle {manifest.name} fails its self-check on {describe_platform(info)}: "
            + "; ".join(rep["failures"])
            + " (the scores here differ from the export machine's beyond the bundle's tolerances; "
            "re-export for this platform or use another backend / precision)" + _fp16_cpu_hint(manifest, backend)
        )
    return rep
