"""Running a (possibly unfinished) bundle's graphs on the export machine, and its parity with
PyTorch eager FP32: used by dlsr-export (calibration, parity, golden set) and dlsr-check.

Both scoring paths are covered: backbone -> denoiser (every score) and backbone -> heads (the
density heads and their combinations, what a density headline runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.errors import ConfigError

ENGINE_NAMES = {
    "ort": "ONNX Runtime CPU",
    "openvino": "OpenVINO CPU",
    "openvino-bf16": "OpenVINO CPU, backbone bf16",
}  # graph_engine's values, for people


def graph_engine(int8_scheme: Optional[str]) -> str:
    """The engine the exporter calibrates and verifies a bundle on: the one it is made for."""
    return "openvino" if int8_scheme == "openvino" else "ort"


def guard_tolerances(tol, int8_backbone_from: Optional[int]):
    """The tolerances the parity guard applies (dlsr-export and dlsr-check alike): an 8-bit
    backbone moves z0 by design (max. relative error 0.15 with NNCF's on the default model), so
    there the guard is the scores' rank correlation, the flips at the threshold and the AUROC
    change, not z0."""
    from dataclasses import replace

    return tol if int8_backbone_from is None else replace(tol, z0_rel=max(tol.z0_rel, 1.0))


def run_graph(path: Path, feeds: Dict[str, np.ndarray], batch: int = 64, engine: str = "ort") -> Dict[str, np.ndarray]:
    """One exported graph on ONNX Runtime CPU (engine "ort") or OpenVINO CPU ("openvino"; with
    "openvino-bf16" a backbone runs bf16, every other graph f32), in batches (the runtime's own
    session classes)."""
    if engine in ("openvino", "openvino-bf16"):
        from dlsr_deploy.runtime.openvino import OpenVinoSession, graph_precision

        bundle_precision = "bf16" if engine == "openvino-bf16" else "fp32"
        sess = OpenVinoSession(path, precision=graph_precision(bundle_precision, Path(path).stem))
    else:
        from dlsr_deploy.runtime.ort import OrtSession

        sess = OrtSession(path, "cpu")
    name = next(iter(feeds))
    x = feeds[name]
    parts = [sess.run({name: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def run_bundle_graphs(
    folder: Path,
    images: np.ndarray,
    batch: Optional[int] = None,
    engine: str = "ort",
    graphs: Sequence[str] = ("denoiser",),
) -> Dict[str, np.ndarray]:
    """backbone.onnx, then each named score graph, of a bundle folder on `engine` (in batches of
    `batch` for every graph, default 64 / 256) -> every output, z0 included."""
    folder = Path(folder)
    z0 = run_graph(folder / "backbone.onnx", {"images": images}, batch=batch or 64, engine=engine)["z0"]
    out: Dict[str, np.ndarray] = {}
    for g in graphs:
        out.update(run_graph(folder / f"{g}.onnx", {"z0": z0}, batch=batch or 256, engine=engine))
    out["z0"] = z0
    return out


def verify_sets(sources: Sequence[str], native: int, n: int) -> Dict[str, np.ndarray]:
    """{set name: up to n images at the native size} for verify-OOD sources (names must differ)."""
    from dlsr_deploy.data import load_images

    out = {}
    for src in sources:
        name = Path(src).stem if not str(src).startswith("demo:") else str(src)
        if name in out:
            raise ConfigError(f"verify_ood: two sets are named {name!r}; give distinct files", param="verify_ood")
        out[name] = load_images(src, size=native, limit=n).images
    return out


def _heads_path(folder: Path, z0: np.ndarray, engine: str) -> Dict[str, np.ndarray]:
    if not (Path(folder) / "heads.onnx").exists():
        return {}
    return run_graph(Path(folder) / "heads.onnx", {"z0": z0}, batch=256, engine=engine)


def verify_bundle_graphs(
    folder: Path,
    ref,
    id_images: np.ndarray,
    ood_images: Dict[str, np.ndarray],
    thresholds: Dict[str, float],
    tol,
    engine: str = "ort",
) -> Tuple[dict, Dict[str, dict]]:
    """(parity report of the bundle's graphs vs the eager reference on ID + OOD images, the graphs'
    outputs per OOD set). The report covers the all-scores path; report['paths']['heads'] the
    heads-only path, whose failures are the report's failures too."""
    from dlsr_deploy.parity import compare

    parts: List[np.ndarray] = [id_images] + list(ood_images.values())
    x = np.concatenate(parts)
    labels = np.concatenate([np.zeros(len(id_images), bool)] + [np.ones(len(o), bool) for o in ood_images.values()])
    exp = ref.outputs(x)
    got = run_bundle_graphs(folder, x, engine=engine)
    rep = compare(exp, got, labels, thresholds, tol)
    heads = _heads_path(folder, got["z0"], engine)
    if heads:
        sub = compare({k: exp[k] for k in heads}, heads, labels, thresholds, tol)
        rep["paths"] = {"heads": sub}
        rep["failures"] += [f"heads path: {f}" for f in sub["failures"]]
        rep["passed"] = not rep["failures"]
    per_set, start = {}, len(id_images)
    for k, o in ood_images.items():
        per_set[k] = {n: v[start : start + len(o)] for n, v in got.items()}
        start += len(o)
    return rep, per_set
