"""Building and writing a bundle's manifest.json (stdlib only)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from dlsr_deploy.errors import BundleError
from dlsr_deploy.io import atomic_write_text, sha256_file
from dlsr_deploy.manifest.model import REQUIRED, SCHEMA_VERSION
from dlsr_deploy.run_folder import DENSITY, FIRST_EPOCH, MODEL

PRECISION_HOW = {
    "fp16": "FP16 weights and activations written into the graph (strongly typed); FP32 inputs/outputs, "
    "preprocessing, pooling, z-score, GroupNorm statistics, DDIM arithmetic, density heads and score reductions",
    "int8": "denoiser MatMul weights 8-bit: int8_scheme 'dynamic' = uint8 weights per output channel with "
    "activations quantized per call (ONNX Runtime DynamicQuantizeMatMul, U8U8 kernels, exact on every x86 CPU), "
    "'weight-only' = int8 weights in blocks of 32 (MatMulNBits, activations to int8 per block in the kernel); "
    "backbone FP32, or with int8_backbone_from its blocks from that index static INT8 (QDQ: uint8 activations "
    "calibrated on held-out ID images, int8 weights per channel in 7 bits); norms, DDIM arithmetic, density "
    "heads and scores FP32. For ONNX Runtime on CPUs; TensorRT does not run dynamic quantization",
    "fp32": "FP32 throughout",
    "bf16": "backbone bf16 on OpenVINO's CPU plugin (AMX / avx512_bf16; graphs stored FP32, the precision is the "
    "compiled model's inference precision); density heads, z-score, thresholds and denoiser f32, the heads fitted "
    "on the features the bf16 backbone produces where the accuracy guard preferred that (precision.bf16)",
}


@dataclass
class BundleFacts:
    """Everything the exporter measured and decided about a bundle; `build_manifest` writes the
    whole contract (backends, precision details, threshold, self-check) from it, in one place."""

    name: str
    producer: dict
    run_dir: Path
    cfg: Any  # ModelConfig
    score_cfg: Any  # ScoreConfig
    plan: dict
    native: int
    files: dict
    precision: str
    fp16_shares: dict
    score_names: List[str]
    headline: str
    headline_choice: dict
    heads: dict
    combos: List[dict]
    with_first: bool
    threshold: dict  # value, all, center, scale, target_tpr, n_images, how
    engine: str  # the engine thresholds and golden outputs were computed on, for people
    batch_profile: tuple
    parity: Optional[dict]
    self_check: dict  # golden, chunk, tolerances, reference
    golden: Optional[dict] = None
    native_source: str = "given"
    int8_scheme: Optional[str] = None
    int8_backbone_from: Optional[int] = None
    int8_fp32_taps: Optional[List[str]] = None
    verified_targets: List[str] = field(default_factory=list)
    export_seconds: Optional[float] = None
    lowp: Optional[dict] = None  # precision.bf16: the accuracy guard's evidence and which heads were kept


def build_manifest(f: BundleFacts) -> Dict[str, Any]:
    """The manifest.json content of a bundle (see DESIGN.md section 4)."""
    from dlsr_deploy.registry import default_backends

    run_dir = Path(f.run_dir)
    return {
        "schema_version": SCHEMA_VERSION,
        "name": f.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "producer": dict(f.producer),
        "source": {
            "run": str(run_dir),
            "checkpoint_sha256": sha256_file(run_dir / MODEL),
            "first_epoch_sha256": sha256_file(run_dir / FIRST_EPOCH) if f.with_first else None,
            "density_sha256": sha256_file(run_dir / DENSITY) if f.heads else None,
        },
        "config": f.cfg.to_dict(),
        "preprocessing": _preprocessing(f.cfg, f.native, f.native_source),
        "files": f.files,
        "golden": f.golden,
        "precision": _precision(f),
        "schedule": {
            **f.score_cfg.to_dict(),
            "T": f.cfg.schedule.timesteps,
            "beta_start": f.cfg.schedule.beta_start,
            "beta_end": f.cfg.schedule.beta_end,
            "plan": f.plan,
        },
        "scores": _scores(f.score_names, f.headline, f.headline_choice, f.heads, f.combos, f.cfg),
        "threshold": _threshold(f.headline, f.threshold, f.engine),
        "backends": default_backends(f.precision, f.int8_scheme),
        "batch_profile": dict(zip(("min", "opt", "max"), f.batch_profile)),
        "parity": f.parity,
        "self_check": f.self_check,
        "export_seconds": f.export_seconds,
    }


def _precision(f: BundleFacts) -> dict:
    out = {
        "mode": f.precision,
        "how": PRECISION_HOW[f.precision],
        "fp16_share": f.fp16_shares,
        "tensorrt": "strongly typed build (NetworkDefinitionCreationFlag.STRONGLY_TYPED), no precision flag",
        "verified_targets": list(f.verified_targets),
    }
    if f.precision == "int8":
        out["int8_scheme"] = f.int8_scheme or "dynamic"
    if f.lowp is not None:
        out[f.precision] = f.lowp  # precision.bf16 or precision.int8: the guard's evidence
    if f.int8_backbone_from is not None:
        out["int8_backbone_from"] = f.int8_backbone_from
        out["int8_calibration"] = "held-out ID images (the last of the calibration set)"
        if f.int8_fp32_taps:
            out["int8_fp32"] = "preprocessing, stem, blocks before int8_backbone_from, pooling, z-score, and these " + (
                "tap / last-block nodes: " + ", ".join(f.int8_fp32_taps)
            )
    return out


def _preprocessing(cfg, native: int, source: str) -> dict:
    return {
        "input": "images uint8 [batch, native_size, native_size, 3], RGB, channel-last",
        "native_size": native,
        "native_size_source": source,
        "input_size": cfg.feature.input_size,
        "resize": "bilinear, half-pixel (align_corners=False), inside the graph",
        "bring_to_native": "centre square crop + Pillow bilinear (dlsr_deploy.preprocess)",
        "mean": list(cfg.feature.mean),
        "std": list(cfg.feature.std),
        "backbone": cfg.feature.backbone,
        "layer_sizes": list(cfg.layer_sizes),
        "dim": cfg.denoiser.dim,
        **(_views(cfg) if cfg.views else {"profile": cfg.profile}),
    }


def _views(cfg) -> dict:
    """A bundle of several views: what its z0 holds (the primary view's, then each extra view's)."""
    from dlsr_deploy.views import describe_views, view_scores

    return {
        "z0_dim": cfg.z0_dim,
        "views": [
            {
                "view": v.name,
                "backbone": v.backbone,
                "input_size": v.input_size,
                "flip": v.flip,
                "z0": [a, b],
                "score": n,
            }
            for v, (a, b), n in zip(cfg.views, cfg.view_bounds(), view_scores(cfg))
        ],
        "views_summary": describe_views(cfg),
        "profile": cfg.profile,
    }


def _scores(names: List[str], headline: str, choice: dict, heads: dict, combos: List[dict], cfg=None) -> dict:
    combo_def = "combination ({}) of scores standardised by their held-out ID median / IQR"
    defs = {n: _definition(n, combo_def) for n in names}
    fitted = {n: "training z0 of the run" for n in heads}
    if cfg is not None and cfg.views:
        from dlsr_deploy.views import ENSEMBLE, ENSEMBLE_DEFINITION, describe_views, view_scores

        for n, v in zip(view_scores(cfg), cfg.views):
            fitted[n] = f"training z0 of the run seen through view {v.name}"
            defs[n] = f"{v.head} of view {v.name} (its own z0 slice, preprocessing.views)"
        if ENSEMBLE in defs:
            defs[ENSEMBLE] = ENSEMBLE_DEFINITION.format(head=cfg.views[0].head, views=describe_views(cfg))
    return {
        "names": list(names),
        "headline": headline,
        "headline_choice": choice,
        "direction": "higher score = more OOD",
        "density_heads": {n: {"l2": bool(h.l2), "fitted_on": fitted[n]} for n, h in heads.items()},
        "combinations": combos,
        "definitions": defs,
    }


def _definition(name: str, combo_def: str) -> str:
    """The line the manifest records for a score: the registry's (dlsr_deploy.registry), for lr_<score>
    the difference of the two models, for a combination `combo_def`."""
    from dlsr_deploy.registry import HEADS, SCORES

    spec = SCORES.get(name) or HEADS.get(name)
    if spec is not None:
        return spec.definition
    if name.startswith("lr_") and name[3:] in SCORES:
        return f"{name[3:]}(first-epoch model) - {name[3:]}(final model), same stored noise"
    return combo_def.format(name)


def _threshold(headline: str, t: dict, engine: str) -> dict:
    return {
        "score": headline,
        **{k: t[k] for k in ("value", "all", "center", "scale", "target_tpr", "n_images", "id_quantiles") if k in t},
        "method": f"{t['target_tpr']:.0%} quantile of ID scores; ID only ({t['how']})",
        "backend": f"{engine} on this bundle's graphs",
        "normalized": "(score - center) / scale: 0 = median ID score, 1.0 = threshold",
    }


def write_manifest(folder: Path, data: Dict[str, Any], sign_key=None) -> Path:
    """Write manifest.json atomically after checking the required keys, with its digest (and an
    Ed25519 signature of the digest when `sign_key`, a PEM private key path, is given)."""
    data = dict(data)
    data.setdefault("schema_version", SCHEMA_VERSION)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise BundleError(f"manifest is missing required key(s) {missing}")
    from dlsr_deploy.manifest.check import content_digest

    data.pop("digest", None)
    data.pop("signature", None)
    data["digest"] = content_digest(data)
    if sign_key is not None:
        from dlsr_deploy.signing import sign_manifest

        data = sign_manifest(data, sign_key)
    path = Path(folder) / "manifest.json"
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path
