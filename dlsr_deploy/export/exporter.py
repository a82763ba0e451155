"""dlsr-export: a trained run -> a verified, calibrated bundle under export/<name>/."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.scoring import LR_SIGN

from dlsr_deploy.config import ModelConfig, ScoreConfig
from dlsr_deploy.errors import BundleError, ConfigError, ParityError


def _say(quiet):
    return (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))


def calibration_images(run_dir: Path, source: Optional[str], native_size: int, limit: Optional[int] = None) -> Tuple[np.ndarray, str]:
    """ID images for the threshold: --calibrate-on, else the run's held-out training images."""
    from dlsr_deploy.data import load_images

    if source:
        return load_images(source, size=native_size, limit=limit).images, f"--calibrate-on {source}"
    info_path = Path(run_dir) / "run.json"
    if not info_path.exists():
        raise ConfigError(f"{run_dir}: no run.json; pass --calibrate-on PATH with ID images")
    info = json.loads(info_path.read_text())
    idx = info.get("holdout_indices") or []
    if not idx:
        raise ConfigError(f"{run_dir} was trained without a hold-out (--holdout 0); pass --calibrate-on PATH with ID images not used in training")
    images = load_images(info["data"], size=native_size, limit=info.get("limit")).images[np.asarray(idx)]
    return images, f"{len(idx)} ID images held out of training ({info['data']})"


def _ort_run(path: Path, feeds: Dict[str, np.ndarray], batch: int = 64) -> Dict[str, np.ndarray]:
    from dlsr_deploy.runtime.ort import OrtSession

    sess = OrtSession(path, "cpu")
    name = next(iter(feeds))
    x = feeds[name]
    parts = [sess.run({name: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def export_bundle(
    run_dir: Path,
    out: Path,
    fp16: bool = False,
    int8: bool = False,
    score_cfg: ScoreConfig = ScoreConfig(),
    fused: bool = False,
    with_lr: bool = False,
    calibrate_on: Optional[str] = None,
    target_tpr: float = 0.95,
    verify: bool = True,
    verify_ood: Sequence[str] = (),
    n_verify: int = 256,
    tolerances=None,
    batch_profile: Tuple[int, int, int] = (1, 32, 256),
    force: bool = False,
    quiet: bool = False,
) -> dict:
    import torch

    import dlsr_deploy
    from dlsr_deploy.export import onnx_utils as ou
    from dlsr_deploy.export.graphs import BackboneGraph, DenoiserGraph, PipelineGraph
    from dlsr_deploy.export.parity import Tolerances, compare, summary_line
    from dlsr_deploy.io import atomic_write_bytes, sha256_file
    from dlsr_deploy.manifest import write_manifest
    from dlsr_deploy.model.detector import build_reconstructor
    from dlsr_deploy.model.features import build_extractor
    from dlsr_deploy.model.train import FINAL, FIRST, load_lfdn
    from dlsr_deploy.scoring import normalisation, threshold_at_tpr

    say = _say(quiet)
    t_all = time.time()
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and not force:
        raise BundleError(f"{out} already exists; pass --force to replace it")
    cfg = ModelConfig.load(run_dir / "config.json")
    native = cfg.feature.native_size or cfg.feature.input_size
    if fp16 and int8:
        raise ConfigError("choose one of --fp16 and --int8")
    precision = "fp16" if fp16 else "int8" if int8 else "fp32"
    dtype = torch.float16 if fp16 else torch.float32
    tol = tolerances or Tolerances.for_precision(precision)

    say(f"[1/5] loading {run_dir} ({cfg.feature.backbone} @ {cfg.feature.input_size}, LFDN width {cfg.denoiser.hidden} x {cfg.denoiser.blocks})")
    ext = build_extractor(cfg.feature)
    lfdn = load_lfdn(run_dir, "final")
    first = load_lfdn(run_dir, "first") if with_lr and (run_dir / FIRST).exists() else None
    rec = build_reconstructor(lfdn, score_cfg, cfg.schedule, cfg.layer_sizes)
    rec_first = build_reconstructor(first, score_cfg, cfg.schedule, cfg.layer_sizes) if first is not None else None
    bb = BackboneGraph(ext, native, dtype).eval()
    dn = DenoiserGraph(rec, rec_first, dtype).eval()

    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        say(f"[2/5] exporting ONNX (opset {ou.OPSET}, {precision}, dynamic batch)")
        graphs = {
            "backbone": (bb, (torch.zeros(2, native, native, 3, dtype=torch.uint8),), ["images"], ["z0"]),
            "denoiser": (dn, (torch.zeros(2, cfg.denoiser.dim),), ["z0"], dn.output_names),
        }
        if fused:
            pl = PipelineGraph(bb, dn).eval()
            graphs["pipeline"] = (pl, (torch.zeros(2, native, native, 3, dtype=torch.uint8),), ["images"], pl.output_names)
        files, shares = {}, {}
        for role, (mod, args, ins, outs) in graphs.items():
            t = time.time()
            with torch.no_grad():
                raw = ou.torch_to_onnx(mod, args, ins, outs)
            model = ou.simplify(raw)
            if int8 and role in ("denoiser", "pipeline"):
                model = ou.quantize_matmuls_int8(model)
            model.producer_name, model.producer_version = "dlsr-deploy", dlsr_deploy.__version__
            d = cfg.denoiser.dim
            ou.fix_dims(model, {"images": [None, native, native, 3], "z0": [None, d], "z0_hat": [None, d]})
            ou.check(model)
            data = model.SerializeToString()
            path = tmp / f"{role}.onnx"
            atomic_write_bytes(path, data)
            inputs, outputs = ou.io_spec(model)
            share = ou.fp16_share(model)
            heavy = ou.fp16_share(model, ou.HEAVY_OPS)
            shares[role] = share
            bad = ou.unsupported_by_trt(model)
            files[role] = {
                "name": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
                "inputs": inputs, "outputs": outputs, "opset": ou.OPSET,
                "nodes": len(model.graph.node), "ops": ou.op_counts(model), "fp16_share": share, "fp16_share_conv_matmul": heavy,
                "trt_unsupported_ops": bad,
            }
            say(f"      {role}.onnx  {path.stat().st_size / 1e6:7.2f} MB  {len(model.graph.node):5d} nodes  FP16 share {share:.0%} of compute nodes, {heavy:.0%} of Conv/MatMul/Gemm  ({time.time() - t:.1f} s)" + (f"  NOT in TensorRT's operator list: {bad}" if bad else ""))
        if fp16 and min(shares.values()) <= 0.0:
            raise ConfigError(f"--fp16 produced graphs with no FP16 compute (FP16 share per graph: {shares})")

        say("[3/5] calibrating the threshold on ID images (exported graph's own scores, ONNX Runtime CPU)")
        cal_images, cal_how = calibration_images(run_dir, calibrate_on, native)
        cal_z0 = _ort_run(tmp / "backbone.onnx", {"images": cal_images})["z0"]
        cal = _ort_run(tmp / "denoiser.onnx", {"z0": cal_z0}, batch=256)
        score_names = [n[6:] for n in dn.output_names if n.startswith("score_")]
        thresholds = {s: threshold_at_tpr(cal[f"score_{s}"], target_tpr) for s in score_names}
        headline = "mfsim"
        center, scale = normalisation(cal[f"score_{headline}"], thresholds[headline])

        parity = None
        if verify:
            say(f"[4/5] verifying against PyTorch eager FP32 ({n_verify} ID images" + (f" + {n_verify} per OOD set" if verify_ood else "") + ")")
            parity = verify_bundle_graphs(tmp, ext, rec, rec_first, cal_images[:n_verify], verify_ood, n_verify, native, thresholds, tol, quiet)
            say("      " + summary_line(parity))
        manifest = {
            "schema_version": 1,
            "name": out.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "producer": {"dlsr_deploy": dlsr_deploy.__version__, "torch": torch.__version__, "onnx": __import__("onnx").__version__, "opset": ou.OPSET, "onnxruntime": __import__("onnxruntime").__version__},
            "source": {"run": str(run_dir), "checkpoint_sha256": sha256_file(run_dir / FINAL), "first_epoch_sha256": sha256_file(run_dir / FIRST) if first is not None else None},
            "config": cfg.to_dict(),
            "preprocessing": {
                "input": "images uint8 [batch, native_size, native_size, 3], RGB, channel-last",
                "native_size": native, "input_size": cfg.feature.input_size, "resize": "bilinear, half-pixel (align_corners=False), inside the graph",
                "bring_to_native": "centre square crop + Pillow bilinear (dlsr_deploy.data.resize_images)",
                "mean": list(cfg.feature.mean), "std": list(cfg.feature.std), "backbone": cfg.feature.backbone,
                "layer_sizes": list(cfg.layer_sizes), "dim": cfg.denoiser.dim,
            },
            "files": files,
            "precision": {
                "mode": precision,
                "how": {
                    "fp16": "FP16 weights and activations written into the graph (strongly typed); FP32 inputs/outputs, preprocessing, pooling, z-score, GroupNorm statistics, DDIM arithmetic and score reductions",
                    "int8": "denoiser MatMul weights INT8 (symmetric, per output channel), activations quantized dynamically per call (ONNX Runtime DynamicQuantizeMatMul); backbone, norms, DDIM arithmetic and scores FP32. For ONNX Runtime on CPUs with INT8 dot products; TensorRT does not run dynamic quantization",
                    "fp32": "FP32 throughout",
                }[precision],
                "fp16_share": shares,
                "tensorrt": "build strongly typed (NetworkDefinitionCreationFlag.STRONGLY_TYPED); no builder precision flag",
            },
            "schedule": {**score_cfg.to_dict(), "T": cfg.schedule.timesteps, "beta_start": cfg.schedule.beta_start, "beta_end": cfg.schedule.beta_end, "plan": rec.plan.to_dict()},
            "scores": {"names": score_names, "headline": headline, "direction": "higher score = more OOD",
                       "definitions": {"mfsim": "-mean over layers of cos(z0_m, z0_hat_m)", "mse": "sum (z0 - z0_hat)^2", "lr": "MSE(first-epoch model) - MSE(final model), same stored noise"}},
            "threshold": {
                "score": headline, "value": thresholds[headline], "all": thresholds, "center": center, "scale": scale,
                "target_tpr": target_tpr, "n_images": int(len(cal_images)), "method": f"{target_tpr:.0%} quantile of ID scores; ID only ({cal_how})",
                "backend": "onnxruntime CPU on this bundle's graphs", "normalized": "(score - center) / scale: 0 = median ID score, 1.0 = threshold",
            },
            "backends": ["ort-cpu", "ort-cuda"] if int8 else ["ort-cpu", "ort-cuda", "trt"],
            "batch_profile": {"min": batch_profile[0], "opt": batch_profile[1], "max": batch_profile[2]},
            "parity": ({**parity, "summary": summary_line(parity)} if parity else None),
            "export_seconds": None,
        }
        manifest["export_seconds"] = round(time.time() - t_all, 1)
        say("[5/5] writing manifest.json")
        write_manifest(tmp, manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if parity and not parity["passed"]:
        raise ParityError(f"{out}: parity check failed: " + "; ".join(parity["failures"]) + " (bundle kept for inspection)")
    say(f"bundle {out} ready ({manifest['export_seconds']:.0f} s); threshold {headline} > {thresholds[headline]:.6g} = OOD")
    return manifest


def eager_outputs(ext, rec, rec_first, images: np.ndarray, batch: int = 64) -> Dict[str, np.ndarray]:
    import torch

    parts = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            z0 = ext(torch.from_numpy(np.ascontiguousarray(images[i : i + batch])))
            s = rec(z0)
            d = {"z0": z0.numpy(), "z0_hat": s["z0_hat"].numpy(), "score_mfsim": s["mfsim"].numpy(), "score_mse": s["mse"].numpy()}
            if rec_first is not None:
                d["score_lr"] = (LR_SIGN * (rec_first(z0)["mse"] - s["mse"])).numpy()
            parts.append(d)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def verify_bundle_graphs(folder, ext, rec, rec_first, id_images, ood_sources, n_verify, native, thresholds, tol, quiet=False) -> dict:
    from dlsr_deploy.data import load_images
    from dlsr_deploy.export.parity import compare

    images = [id_images]
    labels = [np.zeros(len(id_images), bool)]
    for src in ood_sources:
        o = load_images(src, size=native, limit=n_verify).images
        images.append(o)
        labels.append(np.ones(len(o), bool))
    x = np.concatenate(images)
    ref = eager_outputs(ext, rec, rec_first, x)
    z0 = _ort_run(Path(folder) / "backbone.onnx", {"images": x})["z0"]
    got = _ort_run(Path(folder) / "denoiser.onnx", {"z0": z0}, batch=256)
    got["z0"] = z0
    return compare(ref, got, np.concatenate(labels), thresholds, tol)
