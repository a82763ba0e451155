"""High-level train / evaluate used by the CLI and the demo (torch imported lazily)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.config import DenoiserConfig, FeatureConfig, ModelConfig, ScheduleConfig, ScoreConfig, TrainConfig


def _log(quiet: bool):
    return (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, file=sys.stderr, **k))


def features_for(source: str, fcfg: FeatureConfig, cache_dir: Optional[Path], limit: Optional[int] = None, quiet: bool = False, extractor=None) -> Tuple[np.ndarray, str, int]:
    """(z0, set name, skipped count) for an image source, through the feature cache."""
    from dlsr_deploy.data import load_images
    from dlsr_deploy.model.features import extract_features

    iset = load_images(source, size=fcfg.native_size, limit=limit)
    if iset.skipped:
        _log(quiet)(f"warning: {len(iset.skipped)} unreadable file(s) in {source} skipped: " + "; ".join(iset.skipped[:5]) + (" ..." if len(iset.skipped) > 5 else ""))
    z = extract_features(iset.images, fcfg, extractor=extractor, cache_dir=cache_dir, progress=not quiet, desc=f"features {iset.name}")
    return z, iset.name, len(iset.skipped)


def run_train(
    data: str,
    out: Path,
    fcfg: FeatureConfig,
    preset: str = "paper",
    width: Optional[int] = None,
    blocks: Optional[int] = None,
    tcfg: TrainConfig = TrainConfig(),
    holdout: float = 0.1,
    resume: bool = False,
    limit: Optional[int] = None,
    cache_dir: Optional[Path] = None,
    quiet: bool = False,
) -> dict:
    from dlsr_deploy.model.features import default_cache_dir
    from dlsr_deploy.model.train import train_denoiser
    from dlsr_deploy.io import atomic_write_text

    log = _log(quiet)
    t0 = time.time()
    out = Path(out)
    cache_dir = cache_dir or default_cache_dir()
    z, name, skipped = features_for(data, fcfg, cache_dir, limit, quiet)
    from dlsr_deploy.model.backbones import build_backbone

    sizes = tuple(build_backbone(fcfg.backbone).tap_channels)
    dim = z.shape[1]
    dcfg = DenoiserConfig.preset(preset, dim)
    if width is not None or blocks is not None:
        dcfg = DenoiserConfig(dim=dim, width=width if width is not None else dcfg.width, blocks=blocks if blocks is not None else dcfg.blocks)
    cfg = ModelConfig(feature=fcfg, denoiser=dcfg, schedule=ScheduleConfig(), train=tcfg, layer_sizes=sizes)
    if not 0.0 <= holdout < 0.9:
        from dlsr_deploy.errors import ConfigError

        raise ConfigError(f"--holdout: expected a fraction in [0, 0.9), got {holdout}")
    perm = np.random.default_rng(tcfg.seed).permutation(len(z))
    n_hold = int(round(holdout * len(z)))
    hold_idx, train_idx = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "train_z0.npy", z[train_idx])
    np.save(out / "holdout_z0.npy", z[hold_idx])
    n_params = dcfg.hidden * dcfg.hidden * 2 * dcfg.blocks + dcfg.hidden * dim * (dcfg.blocks + 2)
    log(f"training LFDN ({preset}: width {dcfg.hidden}, {dcfg.blocks} blocks, ~{n_params / 1e6:.1f} M params) on {len(train_idx)} z0 vectors of {name} (D={dim}; {n_hold} held out for calibration)")
    res = train_denoiser(z[train_idx], cfg, out, resume=resume, progress=not quiet, log=log, val_z=z[hold_idx] if n_hold else None)
    info = {
        "data": str(data),
        "n_images": int(len(z)),
        "n_train": int(len(train_idx)),
        "n_holdout": int(n_hold),
        "holdout_indices": [int(i) for i in hold_idx],
        "limit": limit,
        "skipped_files": skipped,
        "epochs": tcfg.epochs,
        "final_loss": res.losses[-1] if res.losses else None,
        "epochs_run": res.epochs,
        "best_epoch": res.best_epoch,
        "heldout_losses": res.val_losses,
        "model": "EMA at the epoch with the lowest held-out ID loss" if n_hold else "EMA after the last epoch",
        "train_seconds": round(res.seconds, 1),
        "total_seconds": round(time.time() - t0, 1),
    }
    atomic_write_text(out / "run.json", json.dumps(info, indent=2) + "\n")
    log(f"done: {out} (final loss {info['final_loss']:.4f}, model = EMA of epoch {res.best_epoch}, {info['train_seconds']:.0f} s training)")
    return info


def run_eval(
    model_dir: Path,
    id_source: str,
    ood_sources: Sequence[Tuple[str, str]],
    score_cfgs: Sequence[ScoreConfig],
    out_dir: Optional[Path] = None,
    knn_k: int = 10,
    limit: Optional[int] = None,
    cache_dir: Optional[Path] = None,
    stem: str = "eval",
    command: str = "",
    quiet: bool = False,
    plot: bool = True,
) -> dict:
    from dlsr_deploy.baselines import CosineKNN, Mahalanobis
    from dlsr_deploy.evaluation import DIRECTION, POSITIVE, machine_info, metrics_table, now, short_table, write_report
    from dlsr_deploy.model.detector import score_features
    from dlsr_deploy.model.features import build_extractor, default_cache_dir
    from dlsr_deploy.model.train import load_lfdn
    from dlsr_deploy.errors import ConfigError

    log = _log(quiet)
    model_dir = Path(model_dir)
    cfg = ModelConfig.load(model_dir / "config.json")
    cache_dir = cache_dir or default_cache_dir()
    lfdn = load_lfdn(model_dir, "final")
    first = load_lfdn(model_dir, "first") if (model_dir / "model_first_epoch.safetensors").exists() else None
    train_z = np.load(model_dir / "train_z0.npy") if (model_dir / "train_z0.npy").exists() else None
    z_id, id_name, _ = features_for(id_source, cfg.feature, cache_dir, limit, quiet)
    z_ood = {}
    for name, src in ood_sources:
        z, auto, _ = features_for(src, cfg.feature, cache_dir, limit, quiet)
        z_ood[name or auto] = z
    if not z_ood:
        raise ConfigError("dlsr-eval: give at least one --ood set")
    result = {
        "direction": DIRECTION,
        "positive_class": POSITIVE,
        "command": command,
        "created": now(),
        "machine": machine_info(),
        "model": str(model_dir),
        "model_config": cfg.to_dict(),
        "id_set": {"name": id_name, "source": str(id_source), "n": int(len(z_id))},
        "runs": [],
    }
    result["ood_sets"] = [{"name": k, "source": str(src), "n": int(len(z_ood[k or a]))} for (k, src), a in zip(ood_sources, z_ood)]
    plot_scores = None
    for sc in score_cfgs:
        t = time.time()
        s_id = score_features(z_id, lfdn, sc, cfg.schedule, cfg.layer_sizes, first=first, progress=not quiet, desc=f"score ID t={sc.t_start}")
        s_ood = {k: score_features(v, lfdn, sc, cfg.schedule, cfg.layer_sizes, first=first, progress=not quiet, desc=f"score {k}") for k, v in z_ood.items()}
        table = metrics_table(s_id, s_ood)
        result["runs"].append({"score_config": sc.to_dict(), "metrics": table, "seconds": round(time.time() - t, 1)})
        log(f"\nscore config t_start={sc.t_start} steps={sc.steps} eta={sc.eta} n_noise={sc.n_noise} mode={sc.mode}  ({DIRECTION})")
        log(short_table(table))
        if plot_scores is None:
            plot_scores = {"id": s_id, "ood": s_ood}
    if train_z is not None:
        maha = Mahalanobis.fit(train_z)
        knn = CosineKNN.fit(train_z, k=min(knn_k, len(train_z)))
        b_id = {"mahalanobis": maha.score(z_id), f"knn{knn.k}": knn.score(z_id)}
        b_ood = {k: {"mahalanobis": maha.score(v), f"knn{knn.k}": knn.score(v)} for k, v in z_ood.items()}
        result["baselines"] = metrics_table(b_id, b_ood)
        log("\nfeature baselines on the same z0 (fitted on the training z0)")
        log(short_table(result["baselines"]))
    out_dir = Path(out_dir) if out_dir else model_dir / "eval"
    paths = write_report(result, out_dir, plot_scores if plot else None, stem=stem)
    if plot_scores is not None:
        np.savez_compressed(out_dir / f"{stem}_scores.npz", **{f"id.{k}": v for k, v in plot_scores["id"].items()}, **{f"{n}.{k}": v for n, d in plot_scores["ood"].items() for k, v in d.items()})
    log("\nwrote " + ", ".join(str(p) for p in paths))
    return result
