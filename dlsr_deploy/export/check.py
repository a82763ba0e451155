"""dlsr-check: re-run the parity check of a bundle against its source run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from dlsr_deploy.errors import BundleError


def check_bundle(bundle: Path, model_dir: Optional[Path], data: Optional[str], ood: Sequence[str], n_verify: int, tol_for: Callable, report_path: Optional[Path] = None, quiet: bool = False) -> dict:
    from dlsr_deploy.config import ModelConfig, ScoreConfig
    from dlsr_deploy.export.exporter import calibration_images, verify_bundle_graphs
    from dlsr_deploy.export.parity import summary_line
    from dlsr_deploy.io import atomic_write_text
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.model.detector import build_reconstructor
    from dlsr_deploy.model.features import build_extractor
    from dlsr_deploy.model.train import load_lfdn

    m = read_manifest(bundle, verify=True)
    model_dir = Path(model_dir or m.data["source"]["run"])
    if not (model_dir / "config.json").exists():
        raise BundleError(f"source run {model_dir} not found; pass --model RUN_DIR")
    cfg = ModelConfig.from_dict(m.data["config"])
    sched = m.data["schedule"]
    sc = ScoreConfig(**{k: sched[k] for k in ("t_start", "steps", "eta", "noise_seed", "n_noise", "mode", "mfsim_skip_first")})
    lfdn = load_lfdn(model_dir, "final")
    has_lr = "lr" in m.score_names
    first = load_lfdn(model_dir, "first") if has_lr else None
    rec = build_reconstructor(lfdn, sc, cfg.schedule, cfg.layer_sizes)
    rec_first = build_reconstructor(first, sc, cfg.schedule, cfg.layer_sizes) if first is not None else None
    ext = build_extractor(cfg.feature)
    native = m.input_size
    id_images, _ = calibration_images(model_dir, data, native)
    rep = verify_bundle_graphs(m.path, ext, rec, rec_first, id_images[:n_verify], ood, n_verify, native, m.threshold.get("all", {}), tol_for(m.precision), quiet)
    rep["bundle"] = str(m.path)
    rep["precision"] = m.precision
    if not quiet:
        print(format_report(rep))
    if report_path:
        atomic_write_text(Path(report_path), json.dumps(rep, indent=2) + "\n")
    return rep


def format_report(rep: dict) -> str:
    lines = [f"parity of {rep.get('bundle', '')} ({rep.get('precision', '')}) vs PyTorch eager FP32 on {rep['n_images']} images ({rep['n_ood']} OOD)"]
    for k, e in rep["tensors"].items():
        lines.append(f"  {k:<12} max abs {e['max_abs']:.2e}  mean abs {e['mean_abs']:.2e}  max rel L2 {e.get('max_rel_l2', float('nan')):.2e}")
    for k, s in rep["scores"].items():
        extra = ""
        if "auroc_change" in s:
            extra += f"  AUROC {s['auroc_eager']:.4f} -> {s['auroc_export']:.4f}"
        if "flip_rate" in s:
            extra += f"  flips {s['flips']} ({s['flip_rate']:.2%})"
        lines.append(f"  {k:<12} max rel {s['max_rel']:.2e}  rank corr {s['spearman']:.6f}{extra}")
    lines.append("PASS" if rep["passed"] else "FAIL: " + "; ".join(rep["failures"]))
    return "\n".join(lines)
