"""Low-precision backbones (`dlsr-export --precision bf16 | int8`): the backbone in bf16 on OpenVINO
(bf16) or NNCF static INT8 on OpenVINO (int8: blocks from `int8_backbone_from` on, the taps FP32),
density heads that match the features it produces, and an accuracy guard against the FP32 bundle.

Why refit: on the package default, OpenVINO bf16 moves z0 by about 0.2 (relative L2). The heads,
not the backbone, are what breaks: heads fitted on FP32 features and run on bf16 features lost
12 AUROC points on Tiny ImageNet; heads fitted on the bf16 features came back inside the FP32
bundle's interval (issue 28's table). So, after the FP32 graphs are written and verified
against PyTorch eager (`exporter._build`):

1. z0 of the training images, the held-out ID images, the verify-OOD sets and the shift probes:
   FP32 (the FP32 backbone graph on ONNX Runtime: the FP32 bundle) and low precision (the written
   backbone.onnx on OpenVINO, with the bf16 hint or as quantized: what ships);
2. two candidates: the heads as trained (FP32 features), and heads refitted on the training
   images' low-precision features (combinations re-standardised on the held-out ID images');
3. `precision_guard.guard` of each against the FP32 bundle on the headline; the passing one with
   the larger worst-set margin is kept, none passing is a ParityError with the numbers;
4. the heads and denoiser graphs rewritten with the kept heads and checked against the scores
   the guard saw, so what was guarded is what ships. A bf16 bundle gets no decision.onnx: it would
   run the heads in bf16 too (OpenVINO applies the hint to the whole graph; the heads' relative
   error was 0.5 that way), so its headline runs backbone (bf16), then head.onnx (the heads graph
   pruned to the headline, f32). An int8 bundle's quantized graph keeps the heads f32, so it gets
   decision.onnx like an FP32 bundle.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from dlsr_deploy.errors import ConfigError, ParityError
from dlsr_deploy.log import info

BF16_ENGINE = "openvino-bf16"
BACKBONE_HOW = {
    "bf16": "bf16: OpenVINO CPU INFERENCE_PRECISION_HINT bf16 (AMX / avx512_bf16); heads, z-score and denoiser f32",
    "int8": "static INT8 (NNCF, QDQ) from block int8_backbone_from on, calibrated on held-out ID images; stem, taps, "
    "pooling, z-score, heads f32; on OpenVINO CPU (f32 hint)",
}
MAX_HEADS_REL = 1e-3  # heads.onnx (f32) vs the numpy heads (f64) on the same bf16 z0


def low_engine(req) -> str:
    """The engine the deployed low-precision backbone runs on at export."""
    return BF16_ENGINE if req.precision == "bf16" else "openvino"


def check_lowp_request(req) -> None:
    """Before any work: bf16 needs OpenVINO and a CPU that computes bf16 (refused, not faked);
    the guarded int8 backbone needs NNCF and OpenVINO."""
    from dlsr_deploy.runtime.backend import import_optional
    from dlsr_deploy.runtime.openvino import cpu_runs_bf16

    try:
        import_optional("openvino", "openvino")
        if req.precision == "int8":
            import_optional("nncf", "int8")
    except Exception as exc:
        raise ConfigError(f"precision {req.precision} runs on OpenVINO: {exc}", param="precision") from None
    if req.precision == "int8":
        if req.int8_scheme != "openvino" or req.int8_backbone_from is None:
            raise ConfigError(
                "precision int8: the guarded INT8 backbone is NNCF's on OpenVINO (int8_scheme 'openvino', "
                f"int8_backbone_from set), got int8_scheme {req.int8_scheme!r}, int8_backbone_from "
                f"{req.int8_backbone_from}",
                param="precision",
            )
        return
    if not cpu_runs_bf16():
        raise ConfigError(
            "precision bf16: this CPU has no bf16 units (needs AMX or avx512_bf16), so a bf16 bundle can neither be "
            "guarded nor run here; export fp32 (or int8), or export bf16 on a machine of the deployment's kind",
            param="precision",
        )
    if req.fp16 or req.int8:
        raise ConfigError("precision: choose one of fp32, fp16, bf16, int8", param="precision")


def _z0(path: Path, images: np.ndarray, engine: str) -> np.ndarray:
    from dlsr_deploy.export.verify import run_graph

    return run_graph(path, {"images": images}, batch=64, engine=engine)["z0"].astype(np.float64)


def _guard_sets(inp, req) -> Tuple[Dict[str, np.ndarray], List[str], List[str]]:
    """({'id': held-out ID images, <set>: verify-OOD images, probe:<p>: shift probes}, real, probes)."""
    from dlsr_deploy.probes import PROBES, make_probes

    shift = [p for p, spec in PROBES.items() if spec.kind == "shift"]
    probes = make_probes(inp.cal_images, names=shift, n=min(req.n_verify, 256))
    sets = {"id": inp.cal_images, **inp.ood_images, **{f"probe:{k}": v for k, v in probes.items()}}
    return sets, list(inp.ood_images), [f"probe:{k}" for k in probes]


def _refit(ref, z_train: np.ndarray, z_cal: np.ndarray):
    """The reference with heads refitted on z_train and combinations re-standardised on z_cal."""
    from dlsr_deploy.model.reference import fit_combinations
    from dlsr_deploy.scoring import DensityHead

    out = copy.copy(ref)
    out.heads = {n: DensityHead.fit(n, z_train, ref.cfg.layer_sizes) for n in ref.heads}
    out.combos = []
    if ref.combos:
        wanted = sorted({tuple(c.components) for c in ref.combos})
        out.combos = fit_combinations(out.score_z0(z_cal), wanted)
    return out


def _headline_scores(ref, z: Dict[str, np.ndarray], head: str) -> Dict[str, np.ndarray]:
    return {k: ref.add_density_scores({}, v)[head] for k, v in z.items()}


def _guarded_candidates(inp, req, head: str, z32, z16, z_train16) -> Tuple[object, dict]:
    """(the kept reference, the evidence) from the two candidates' guards."""
    from dlsr_deploy.precision_guard import guard, margin

    probes = [k for k in z32 if k.startswith("probe:")]
    real = [k for k in z32 if k != "id" and k not in probes]
    fp32 = _headline_scores(inp.ref, z32, head)
    low = f"{req.precision}_heads"
    cands = {"fp32_heads": inp.ref, low: _refit(inp.ref, z_train16, z16["id"])}
    results = {}
    for name, ref in cands.items():
        results[name] = guard(fp32, _headline_scores(ref, z16, head), real, probes, req.target_tpr)
        r = results[name]
        info(
            f"      guard, heads fitted on {name.split('_')[0]} features: {'passed' if r['passed'] else 'failed'} "
            + ", ".join(
                f"{s} AUROC {100 * v['auroc']:.2f} (FP32 {100 * v['auroc_fp32']:.2f}, lo "
                f"{100 * v['auroc_fp32_lo']:.2f})"
                for s, v in r["sets"].items()
            )
            + f"; flips {100 * r['flips']:.2f} %"
        )
    passing = [n for n in cands if results[n]["passed"]]
    if not passing:
        lines = "; ".join(f"{n}: " + ", ".join(results[n]["failures"]) for n in cands)
        raise ParityError(
            f"{req.precision} refused by the accuracy guard against the FP32 bundle ({lines}); ship the fp32 bundle "
            "on this CPU"
        )
    kept = max(passing, key=lambda n: margin(results[n]))
    return cands[kept], {"kept": kept, "candidates": results}


def _fp32_backbone(tmp: Path, inp, req) -> Path:
    """The FP32 backbone graph: the bundle's own for bf16 (its graphs are FP32), else the same
    BackboneGraph traced FP32 (the feature engine's cached graph)."""
    if req.precision == "bf16":
        return Path(tmp) / "backbone.onnx"
    from dlsr_deploy.export.feature_engine import _graph_path, backbone_session

    backbone_session(inp.ref.cfg.feature, inp.native, inp.ref.extractor)
    return _graph_path(inp.ref.cfg.feature, inp.native)


def deploy_lowp(tmp: Path, run_dir: Path, inp, req, head: str, files: dict, shares: dict) -> dict:
    """Steps 1-4 of the module docstring on the bundle in tmp; updates files and shares in place
    and inp.ref's heads; returns the manifest's precision.<bf16|int8> record."""
    from dlsr_deploy.export.calibrate import training_images
    from dlsr_deploy.export.onnx_export import export_graphs
    from dlsr_deploy.precision_guard import RULES

    if head not in inp.ref.heads_graph_scores:
        raise ConfigError(
            f"precision {req.precision}: the headline {head!r} needs the denoiser; low-precision backbones are "
            "guarded on a density "
            f"headline ({', '.join(inp.ref.heads_graph_scores) or 'none in this bundle'})",
            param="precision",
        )
    t0, backbone, p, eng = time.time(), Path(tmp) / "backbone.onnx", req.precision, low_engine(req)
    sets, _, _ = _guard_sets(inp, req)
    n = sum(len(v) for v in sets.values())
    info(f"[{p}] features of {n} guard images in FP32 (ONNX Runtime) and {p} (OpenVINO)")
    fp32 = _fp32_backbone(tmp, inp, req)
    z32 = {k: _z0(fp32, v, "ort") for k, v in sets.items()}
    z16 = {k: _z0(backbone, v, eng) for k, v in sets.items()}
    train = training_images(run_dir, inp.native)
    info(f"[{p}] {p} features of the {len(train)} training images, heads refitted on them")
    z_train16 = _z0(backbone, train, eng)
    kept, evidence = _guarded_candidates(inp, req, head, z32, z16, z_train16)
    if kept is not inp.ref:  # the refitted heads: rewrite the graphs that carry heads (else they are as written)
        inp.ref = kept
        new_files, new_shares = export_graphs(tmp, kept, req, inp.native, roles=("heads", "denoiser", "pipeline"))
        files.update(new_files)
        shares.update(new_shares)
    consistency = _check_heads_graph(tmp, kept, z16["id"], head)
    if p == "bf16":
        _add_head(tmp, head, req, files, shares, z16["id"])
    rel = [float(np.max(np.linalg.norm(z16[k] - z32[k], axis=1) / np.linalg.norm(z32[k], axis=1))) for k in z32]
    return {
        "backbone": BACKBONE_HOW[p],
        "heads_fitted_on": f"{p} features of the training images"
        if evidence["kept"] == f"{p}_heads"
        else "FP32 features (as trained)",
        "n_train": int(len(train)),
        "z0_rel_vs_fp32_max": max(rel),
        "heads_graph_max_rel": consistency,
        "guard_rules": RULES,
        **evidence,
        "seconds": round(time.time() - t0, 1),
    }


def _add_head(tmp: Path, head: str, req, files: dict, shares: dict, z: np.ndarray) -> None:
    """head.onnx: the heads graph pruned to the headline (a bf16 bundle's headline path runs the
    bf16 backbone, then this f32 graph: 0.7 ms of the 3.9 ms at batch 1 went to the other heads),
    checked against heads.onnx on the held-out ID images' features."""
    from dlsr_deploy.export.decision import DECISION_TOL, write_head
    from dlsr_deploy.export.verify import run_graph
    from dlsr_deploy.names import output_name

    entry = write_head(tmp, head, req)
    if entry is None:
        return
    feed = {"z0": z.astype(np.float32)}
    one = run_graph(Path(tmp) / "head.onnx", feed, batch=256)[output_name(head)]
    all_ = run_graph(Path(tmp) / "heads.onnx", feed, batch=256)[output_name(head)]
    rel = float(np.max(np.abs(one - all_) / np.maximum(np.abs(all_), 1e-6)))
    if rel > DECISION_TOL:
        raise ParityError(f"bf16: head.onnx differs from heads.onnx by {rel:.2g} (relative; max {DECISION_TOL})")
    entry["max_rel_vs_heads"] = rel
    files["head"], shares["head"] = entry, entry["fp16_share"]
    mb = entry["bytes"] / 1e6
    info(f"      head.onnx      {mb:7.2f} MB  z0 -> {head} only (max rel diff vs heads.onnx {rel:.1g})")


def _check_heads_graph(tmp: Path, ref, z: np.ndarray, head: str) -> float:
    """heads.onnx as rewritten vs the numpy heads the guard scored, on the same bf16 features."""
    from dlsr_deploy.export.verify import run_graph
    from dlsr_deploy.names import output_name

    got = run_graph(Path(tmp) / "heads.onnx", {"z0": z.astype(np.float32)}, batch=256)[output_name(head)]
    want = ref.add_density_scores({}, z)[head]
    rel = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-12)))
    if rel > MAX_HEADS_REL:
        raise ParityError(f"heads.onnx differs from the guarded heads by {rel:.2g} (relative; max {MAX_HEADS_REL})")
    return rel
