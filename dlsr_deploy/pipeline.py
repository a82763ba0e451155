"""High-level train / evaluate used by the CLI and the demo (torch imported lazily)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.config import DenoiserConfig, FeatureConfig, ModelConfig, ScheduleConfig, ScoreConfig, TrainConfig


def _log(quiet: bool):
    return (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, file=sys.stderr, **k))


def feature_engine_factory(fcfg: FeatureConfig, engine: str, log, reports: Optional[list] = None):
    """For extract_features: builds the ORT backbone engine on a cache miss (None for eager)."""
    if engine == "eager":
        return None
    if engine != "ort":
        from dlsr_deploy.errors import ConfigError

        raise ConfigError(f"feature engine: expected 'eager' or 'ort', got {engine!r}")

    def make(images):
        from dlsr_deploy.export.feature_engine import ort_engine

        fn, rep = ort_engine(fcfg, images)
        if reports is not None:
            reports.append(rep)
        if fn is None:
            log(
                f"warning: the ORT backbone failed its parity check (max rel. L2 {rep['max_rel_l2']:.2e} > "
                f"{rep['tolerance']:.0e}); computing these features with PyTorch eager"
            )
        return fn

    return make


def features_for(
    source: str,
    fcfg: FeatureConfig,
    cache_dir: Optional[Path],
    limit: Optional[int] = None,
    quiet: bool = False,
    extractor=None,
    engine: str = "eager",
    flip: bool = False,
    reports: Optional[list] = None,
    digests: Optional[list] = None,
) -> Tuple[np.ndarray, str, int]:
    """(z0, set name, skipped count) for an image source, through the feature cache.

    flip: the features of the horizontally flipped images (training views)."""
    from dlsr_deploy.data import load_images
    from dlsr_deploy.model.features import extract_features

    log = _log(quiet)
    iset = load_images(source, size=fcfg.native_size, limit=limit)
    if iset.skipped:
        log(
            f"warning: {len(iset.skipped)} unreadable file(s) in {source} skipped: "
            + "; ".join(iset.skipped[:5])
            + (" ..." if len(iset.skipped) > 5 else "")
        )
    if digests is not None:
        from dlsr_deploy.preprocess import images_digest

        digests.append(images_digest(iset.images))
    images = np.ascontiguousarray(iset.images[:, :, ::-1]) if flip else iset.images
    z = extract_features(
        images,
        fcfg,
        extractor=extractor,
        cache_dir=cache_dir,
        progress=not quiet,
        desc=f"features {iset.name}" + (" (flipped)" if flip else ""),
        engine=engine,
        engine_factory=feature_engine_factory(fcfg, engine, log, reports),
    )
    return z, iset.name, len(iset.skipped)


def training_features(
    sources: Sequence[str],
    fcfg: FeatureConfig,
    cache_dir: Path,
    limit: Optional[int],
    quiet: bool,
    engine: str,
    flip: bool,
    reports: list,
):
    """(z0 of every source concatenated, flipped-view z0 or None, names, skipped count, content digests)."""
    zs, flips, names, skipped, digests = [], [], [], 0, []
    for src in sources:
        z, name, sk = features_for(src, fcfg, cache_dir, limit, quiet, engine=engine, reports=reports, digests=digests)
        zs.append(z)
        names.append(name)
        skipped += sk
        if flip:
            flips.append(features_for(src, fcfg, cache_dir, limit, quiet, engine=engine, flip=True, reports=reports)[0])
    return np.concatenate(zs), (np.concatenate(flips) if flip else None), names, skipped, digests


def _describe(d: DenoiserConfig) -> str:
    n_params = d.hidden * d.hidden * 2 * d.blocks + d.hidden * d.dim * (d.blocks + 2)
    return f"width {d.hidden}, {d.blocks} blocks, ~{n_params / 1e6:.1f} M params, D={d.dim}"


def _training_data(sources, fcfg: FeatureConfig, cache_dir: Path, limit, quiet: bool, engine: str, flip: bool):
    """(z0, flipped z0 or None, set names, the feature part of run.json)."""
    reports: list = []
    t = time.time()
    z, zf, names, skipped, digests = training_features(sources, fcfg, cache_dir, limit, quiet, engine, flip, reports)
    feat = {
        "data": [str(Path(s).resolve()) if not str(s).startswith("demo:") else str(s) for s in sources],
        "data_sha256": digests,
        "flip": flip,
        "feature_engine": engine,
        "feature_parity": reports,
        "feature_seconds": round(time.time() - t, 1),
        "limit": limit,
        "skipped_files": skipped,
    }
    return z, zf, names, feat


def _model_config(fcfg: FeatureConfig, tcfg: TrainConfig, preset: str, width, blocks, dim: int) -> ModelConfig:
    from dlsr_deploy.model.backbones import build_backbone

    dcfg = DenoiserConfig.preset(preset, dim)
    if width is not None or blocks is not None:
        dcfg = DenoiserConfig(
            dim=dim, width=dcfg.width if width is None else width, blocks=dcfg.blocks if blocks is None else blocks
        )
    sizes = tuple(build_backbone(fcfg.backbone).tap_channels)
    return ModelConfig(feature=fcfg, denoiser=dcfg, schedule=ScheduleConfig(), train=tcfg, layer_sizes=sizes)


def _split(n: int, holdout: float, seed: int):
    """(held-out indices, training indices), both sorted; a seeded permutation of the images."""
    from dlsr_deploy.errors import ConfigError

    if not 0.0 <= holdout < 0.9:
        raise ConfigError(f"--holdout: expected a fraction in [0, 0.9), got {holdout}")
    n_hold = int(round(holdout * n))
    if holdout > 0 and (n_hold < 1 or n - n_hold < 2):
        raise ConfigError(
            f"--holdout {holdout} of {n} images leaves {n_hold} held out and {n - n_hold} for training; "
            "give more images, a larger --holdout, or --holdout 0"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_hold]), np.sort(perm[n_hold:])


def _train_summary(res, tcfg: TrainConfig, held_out: bool) -> dict:
    return {
        "epochs": tcfg.epochs,
        "final_loss": res.losses[-1] if res.losses else None,
        "epochs_run": res.epochs,
        "best_epoch": res.best_epoch,
        "heldout_losses": res.val_losses,
        "best_heldout_loss": min(res.val_losses) if res.val_losses else None,
        "model": "EMA at the epoch with the lowest held-out ID loss" if held_out else "EMA after the last epoch",
        "train_seconds": round(res.seconds, 1),
    }


def run_train(
    data,
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
    flip: bool = False,
    feature_engine: str = "eager",
) -> dict:
    """Train on one or several ID sources (`data`: a source or a list of them; a folder of
    .npz packs counts as all its packs). flip: add the horizontally flipped view of every
    training image as an extra training vector (held-out images and their flips stay out)."""
    from dlsr_deploy.data import expand_sources
    from dlsr_deploy.io import atomic_write_text
    from dlsr_deploy.model.features import default_cache_dir
    from dlsr_deploy.model.train import train_denoiser
    from dlsr_deploy.scoring import fit_density_heads, save_density_heads

    log = _log(quiet)
    t0 = time.time()
    out = Path(out)
    sources = expand_sources([data] if isinstance(data, (str, Path)) else list(data))
    z, zf, names, feat = _training_data(
        sources, fcfg, cache_dir or default_cache_dir(), limit, quiet, feature_engine, flip
    )
    cfg = _model_config(fcfg, tcfg, preset, width, blocks, z.shape[1])
    hold_idx, train_idx = _split(len(z), holdout, tcfg.seed)
    train_z = z[train_idx] if zf is None else np.concatenate([z[train_idx], zf[train_idx]])
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "train_z0.npy", train_z)
    np.save(out / "holdout_z0.npy", z[hold_idx])
    what = f"{len(train_z)} z0 vectors of {'+'.join(names)}" + (" (with flipped views)" if flip else "")
    log(f"training LFDN ({preset}: {_describe(cfg.denoiser)}) on {what} ({len(hold_idx)} images held out)")
    res = train_denoiser(
        train_z, cfg, out, resume=resume, progress=not quiet, log=log, val_z=z[hold_idx] if len(hold_idx) else None
    )
    t_dens = time.time()
    save_density_heads(out / "density.npz", fit_density_heads(train_z, cfg.layer_sizes))
    info = {  # run.json
        **feat,
        "n_images": int(len(z)),
        "n_train": int(len(train_idx)),
        "n_train_vectors": int(len(train_z)),
        "n_holdout": int(len(hold_idx)),
        "holdout_indices": [int(i) for i in hold_idx],
        **_train_summary(res, tcfg, bool(len(hold_idx))),
        "density_heads": "density.npz, fitted on the training z0 (train_z0.npy)",
        "density_seconds": round(time.time() - t_dens, 1),
        "total_seconds": round(time.time() - t0, 1),
    }
    atomic_write_text(out / "run.json", json.dumps(info, indent=2) + "\n")
    log(f"done: {out} (model = EMA of epoch {res.best_epoch}, {info['train_seconds']:.0f} s training)")
    return info


PLOT_SCORES = ("mfsim", "mse", "gauss_layer", "sum_mfsim_gauss_layer")


def _eval_config(
    model_dir: Path, sc: ScoreConfig, hold_z, z_id: np.ndarray, z_ood: Dict[str, np.ndarray], quiet: bool, log
):
    """Every score of one score config on the ID and OOD sets -> (report block, ID scores, OOD scores)."""
    from dlsr_deploy.evaluation import DIRECTION, metrics_table, short_table
    from dlsr_deploy.model.reference import EagerReference, fit_combinations

    t = time.time()
    ref = EagerReference.from_run(model_dir, sc, with_lr=None, combos=[])
    if hold_z is not None and len(hold_z):  # standardised on held-out ID scores only
        ref.combos = fit_combinations(ref.score_z0(hold_z))
    s_id = ref.score_z0(z_id, progress=not quiet, desc=f"score ID t={sc.t_start}")
    s_ood = {k: ref.score_z0(v, progress=not quiet, desc=f"score {k}") for k, v in z_ood.items()}
    table = metrics_table(s_id, s_ood)
    log(
        f"\nscore config t_start={sc.t_start} steps={sc.steps} eta={sc.eta} n_noise={sc.n_noise} "
        f"mode={sc.mode}  ({DIRECTION})"
    )
    log(short_table(table))
    block = {
        "score_config": sc.to_dict(),
        "metrics": table,
        "combinations": [c.to_dict() for c in ref.combos],
        "seconds": round(time.time() - t, 1),
    }
    return block, s_id, s_ood


def run_eval(
    model_dir: Path,
    id_source: str,
    ood_sources: Sequence[Tuple[str, str]],
    score_cfgs: Sequence[ScoreConfig],
    *,
    out_dir: Optional[Path] = None,
    knn_k: int = 10,
    limit: Optional[int] = None,
    cache_dir: Optional[Path] = None,
    stem: str = "eval",
    command: str = "",
    quiet: bool = False,
    plot: bool = True,
    feature_engine: str = "eager",
) -> dict:
    """dlsr-eval: every score per score config on ID vs each OOD set -> JSON, Markdown, PNG, scores."""
    from dlsr_deploy.errors import ConfigError
    from dlsr_deploy.evaluation import DIRECTION, POSITIVE, machine_info, now
    from dlsr_deploy.model.features import default_cache_dir

    log = _log(quiet)
    model_dir = Path(model_dir)
    names = [n for n, _ in ood_sources]
    if not ood_sources:
        raise ConfigError("dlsr-eval: give at least one --ood set")
    if len(set(names)) != len(names):
        raise ConfigError(f"dlsr-eval: OOD set names must be unique, got {names}; name them NAME=PATH")
    cfg = ModelConfig.load(model_dir / "config.json")
    cache_dir = cache_dir or default_cache_dir()
    hold_z = np.load(model_dir / "holdout_z0.npy") if (model_dir / "holdout_z0.npy").exists() else None
    feats = lambda src: features_for(src, cfg.feature, cache_dir, limit, quiet, engine=feature_engine)  # noqa: E731
    z_id, id_name, _ = feats(id_source)
    z_ood = {name: feats(src)[0] for name, src in ood_sources}
    result = {
        "direction": DIRECTION,
        "positive_class": POSITIVE,
        "command": command,
        "created": now(),
        "machine": machine_info(),
        "model": str(model_dir),
        "model_config": cfg.to_dict(),
        "feature_engine": feature_engine,
        "id_set": {"name": id_name, "source": str(id_source), "n": int(len(z_id))},
        "ood_sets": [{"name": k, "source": str(src), "n": int(len(z_ood[k]))} for k, src in ood_sources],
        "runs": [],
    }
    plot_scores = None
    for sc in score_cfgs:
        block, s_id, s_ood = _eval_config(model_dir, sc, hold_z, z_id, z_ood, quiet, log)
        result["runs"].append(block)
        plot_scores = plot_scores or {"id": s_id, "ood": s_ood}
    result["baselines"] = _baselines(model_dir, z_id, z_ood, knn_k, log)
    _write_eval(
        result, Path(out_dir) if out_dir else model_dir / "eval", stem, plot_scores if plot else None, plot_scores, log
    )
    return result


def _baselines(model_dir: Path, z_id: np.ndarray, z_ood: Dict[str, np.ndarray], knn_k: int, log) -> Optional[dict]:
    """The earlier Mahalanobis baseline (ridge) and cosine KNN, fitted on the training z0."""
    from dlsr_deploy.baselines import CosineKNN, Mahalanobis
    from dlsr_deploy.evaluation import metrics_table, short_table

    if not (model_dir / "train_z0.npy").exists():
        return None
    train_z = np.load(model_dir / "train_z0.npy")
    maha = Mahalanobis.fit(train_z)
    knn = CosineKNN.fit(train_z, k=min(knn_k, len(train_z)))
    b_id = {"mahalanobis": maha.score(z_id), f"knn{knn.k}": knn.score(z_id)}
    b_ood = {k: {"mahalanobis": maha.score(v), f"knn{knn.k}": knn.score(v)} for k, v in z_ood.items()}
    table = metrics_table(b_id, b_ood)
    log("\nfeature baselines on the same z0 (fitted on the training z0)")
    log(short_table(table))
    return table


def _write_eval(
    result: dict, out_dir: Path, stem: str, plot_scores: Optional[dict], all_scores: Optional[dict], log
) -> None:
    """STEM.json / .md / .png (a few headline scores plotted) and STEM_scores.npz (every score)."""
    from dlsr_deploy.evaluation import write_report

    shown = None
    if plot_scores is not None:
        keep = [k for k in PLOT_SCORES if k in plot_scores["id"]]
        shown = {
            "id": {k: plot_scores["id"][k] for k in keep},
            "ood": {n: {k: d[k] for k in keep} for n, d in plot_scores["ood"].items()},
        }
    if result.get("baselines") is None:
        result.pop("baselines", None)
    paths = write_report(result, out_dir, shown, stem=stem)
    if all_scores is not None:
        np.savez_compressed(
            out_dir / f"{stem}_scores.npz",
            **{f"id.{k}": v for k, v in all_scores["id"].items() if k != "z0_hat"},
            **{f"{n}.{k}": v for n, d in all_scores["ood"].items() for k, v in d.items() if k != "z0_hat"},
        )
    log("\nwrote " + ", ".join(str(p) for p in paths))
