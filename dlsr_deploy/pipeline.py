"""High-level train / evaluate used by the CLI and the demo (torch imported lazily)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.config import DenoiserConfig, FeatureConfig, ModelConfig, ScheduleConfig, TrainConfig
from dlsr_deploy.log import info, progress, warning
from dlsr_deploy.profiles import profile_of


def feature_engine_factory(fcfg: FeatureConfig, engine: str, reports: Optional[list] = None):
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
            warning(
                f"warning: the ORT backbone failed its parity check (max rel. L2 {rep['max_rel_l2']:.2e} > "
                f"{rep['tolerance']:.0e}); computing these features with PyTorch eager"
            )
        return fn

    return make


def features_for(
    source: str,
    fcfg: FeatureConfig,
    cache_dir: Optional[Path],
    *,
    limit: Optional[int] = None,
    extractor=None,
    engine: str = "eager",
    flip: bool = False,
    reports: Optional[list] = None,
    digests: Optional[list] = None,
    split: str = "test",
) -> Tuple[np.ndarray, str, int]:
    """(z0, set name, skipped count) for an image source, through the feature cache.

    flip: the features of the horizontally flipped images (training views). split: the CIFAR
    split of a CIFAR folder given without #train / #test."""
    from dlsr_deploy.data import load_images

    iset = load_images(source, size=fcfg.native_size, limit=limit, split=split)
    if iset.skipped:
        warning(
            f"warning: {len(iset.skipped)} unreadable file(s) in {source} skipped: "
            + "; ".join(iset.skipped[:5])
            + (" ..." if len(iset.skipped) > 5 else "")
        )
    if digests is not None:
        from dlsr_deploy.preprocess import images_digest

        digests.append(images_digest(iset.images))
    images = np.ascontiguousarray(iset.images[:, :, ::-1]) if flip else iset.images
    desc = f"features {iset.name}" + (" (flipped)" if flip else "")
    z = features_of(images, fcfg, cache_dir, engine=engine, desc=desc, extractor=extractor, reports=reports)
    return z, iset.name, len(iset.skipped)


def features_of(
    images: np.ndarray,
    fcfg: FeatureConfig,
    cache_dir: Optional[Path],
    *,
    engine: str = "eager",
    desc: str = "features",
    extractor=None,
    reports: Optional[list] = None,
) -> np.ndarray:
    """z0 of uint8 images [N, H, W, 3] through the feature cache (keyed by content and config)."""
    from dlsr_deploy.model.features import extract_features

    return extract_features(
        images,
        fcfg,
        extractor=extractor,
        cache_dir=cache_dir,
        progress=progress(),
        desc=desc,
        engine=engine,
        engine_factory=feature_engine_factory(fcfg, engine, reports),
    )


def all_features(
    images: np.ndarray, cfg: ModelConfig, cache_dir: Optional[Path], *, engine: str = "eager", desc: str = "features"
) -> np.ndarray:
    """The bundle's z0 of uint8 images: the primary view's, then each extra view's (feature cache)."""
    from dlsr_deploy.views import view_images

    z = [features_of(images, cfg.feature, cache_dir, engine=engine, desc=desc)]
    for v in cfg.views:
        z.append(
            features_of(
                view_images(images, v), v.feature(cfg.feature), cache_dir, engine=engine, desc=f"{desc} {v.name}"
            )
        )
    return np.concatenate(z, axis=1) if len(z) > 1 else z[0]


def all_features_for(
    source, cfg: ModelConfig, cache_dir: Optional[Path], *, limit=None, engine: str = "eager"
) -> np.ndarray:
    """all_features of an image source (a path, pack, folder ...; pipeline.features_for)."""
    z = [features_for(source, cfg.feature, cache_dir, limit=limit, engine=engine)[0]]
    z += _views_for(source, cfg, cache_dir, limit=limit, engine=engine)
    return np.concatenate(z, axis=1) if len(z) > 1 else z[0]


def _views_for(source, cfg: ModelConfig, cache_dir, *, limit, engine: str, split: str = "test") -> List[np.ndarray]:
    """Each extra view's z0 of an image source (the flip view through features_for's flip)."""
    return [
        features_for(source, v.feature(cfg.feature), cache_dir, limit=limit, engine=engine, flip=v.flip, split=split)[0]
        for v in cfg.views
    ]


def training_features(
    sources: Sequence[str],
    fcfg: FeatureConfig,
    cache_dir: Path,
    limit: Optional[int],
    engine: str,
    flip: bool,
    reports: list,
):
    """(z0 of every source concatenated, flipped-view z0 or None, names, skipped count, content digests)."""
    zs, flips, names, skipped, digests = [], [], [], 0, []
    for src in sources:
        z, name, sk = features_for(
            src, fcfg, cache_dir, limit=limit, engine=engine, reports=reports, digests=digests, split="train"
        )
        zs.append(z)
        names.append(name)
        skipped += sk
        if flip:
            flips.append(
                features_for(
                    src, fcfg, cache_dir, limit=limit, engine=engine, flip=True, reports=reports, split="train"
                )[0]
            )
    return np.concatenate(zs), (np.concatenate(flips) if flip else None), names, skipped, digests


def _describe(d: DenoiserConfig) -> str:
    n_params = d.hidden * d.hidden * 2 * d.blocks + d.hidden * d.dim * (d.blocks + 2)
    return f"width {d.hidden}, {d.blocks} blocks, ~{n_params / 1e6:.1f} M params, D={d.dim}"


def _training_data(sources, fcfg: FeatureConfig, cache_dir: Path, limit, engine: str, flip: bool):
    """(z0, flipped z0 or None, set names, the feature part of run.json)."""
    from dlsr_deploy.errors import DataError

    reports: list = []
    t = time.time()
    z, zf, names, skipped, digests = training_features(sources, fcfg, cache_dir, limit, engine, flip, reports)
    same = sorted({sources[i] for i, d in enumerate(digests) if digests.count(d) > 1})
    if same:
        raise DataError(
            f"data: {same} hold the same images (identical content); each training image must come once, or it is "
            "trained on twice and leaks into the held-out calibration images",
            param="data",
        )
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


def _with_layer_sizes(views) -> tuple:
    """The views with their tap channels filled in."""
    import dataclasses

    from dlsr_deploy.model.backbones import build_backbone

    return tuple(dataclasses.replace(v, layer_sizes=tuple(build_backbone(v.backbone).tap_channels)) for v in views)


def _view_features(sources, cfg: ModelConfig, cache_dir: Path, limit, engine: str) -> Optional[np.ndarray]:
    """The extra views' z0 of every training image ([N, sum of view dims], the primary's order), or None."""
    if not cfg.views:
        return None
    info(f"features of the views {', '.join(v.name for v in cfg.views)}")
    per_source = [_views_for(src, cfg, cache_dir, limit=limit, engine=engine, split="train") for src in sources]
    return np.concatenate([np.concatenate(zs, axis=1) for zs in per_source])


def _model_config(
    fcfg: FeatureConfig, tcfg: TrainConfig, preset: str, width, blocks, dim: int, views=(), profile=None
) -> ModelConfig:
    from dlsr_deploy.model.backbones import build_backbone

    dcfg = DenoiserConfig.preset(preset, dim)
    if width is not None or blocks is not None:
        dcfg = DenoiserConfig(
            dim=dim, width=dcfg.width if width is None else width, blocks=dcfg.blocks if blocks is None else blocks
        )
    sizes = tuple(build_backbone(fcfg.backbone).tap_channels)
    return ModelConfig(
        feature=fcfg, denoiser=dcfg, schedule=ScheduleConfig(), train=tcfg, layer_sizes=sizes,
        views=_with_layer_sizes(views), profile=profile,
    )  # fmt: skip


def holdout_split(n: int, holdout: float, seed: int):
    """(held-out indices, training indices), both sorted; a seeded permutation of the images."""
    from dlsr_deploy.errors import ConfigError

    if not 0.0 <= holdout < 0.9:
        raise ConfigError(f"holdout: expected a fraction in [0, 0.9), got {holdout}", param="holdout")
    n_hold = int(round(holdout * n))
    if holdout > 0 and (n_hold < 1 or n - n_hold < 2):
        raise ConfigError(
            f"holdout: {holdout} of {n} images leaves {n_hold} held out and {n - n_hold} for training; "
            "give more images, a larger holdout, or holdout 0",
            param="holdout",
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


def resolve_native_size(sources, fcfg: FeatureConfig, native_size, limit) -> Tuple[FeatureConfig, str]:
    """(feature config with the native size set, how it was chosen). native_size: 'auto' = the
    median shorter side of the training images (capped at the input size); an int = given; 0 or
    None = each source's own size. Warns when bringing the images to it rescales them a lot."""
    import dataclasses

    from dlsr_deploy.inputs import image_sizes, list_inputs, native_size_from

    if not isinstance(native_size, str):
        n = native_size or None
        return dataclasses.replace(fcfg, native_size=n), ("given" if n else "source size")
    listed = [list_inputs([s], cifar_split="train", limit=limit) for s in sources if not str(s).startswith("demo:")]
    sizes = [hw for lst in listed for hw in image_sizes(lst)]
    if not sizes:  # only the demo set: its own 32 px
        return dataclasses.replace(fcfg, native_size=32), "data: the demo set's 32 px"
    native = native_size_from(sizes, fcfg.input_size)
    short = np.array([min(h, w) for h, w in sizes], float)
    up, down = float(np.mean(native / short > 2.0)), float(np.mean(short / native > 4.0))
    if up > 0.1 or down > 0.1:
        warning(
            f"warning: native size {native} px upsamples {up:.0%} of the training images by more than 2x and shrinks "
            f"{down:.0%} by more than 4x (shorter sides {int(short.min())}..{int(short.max())} px); give native_size "
            "to choose another"
        )
    med = int(np.median(short))
    how = f"data: median shorter side of {len(sizes)} training images ({med} px), capped at {fcfg.input_size}"
    return dataclasses.replace(fcfg, native_size=native), how


def _identity(feat: dict, cfg: ModelConfig, holdout: float, how: str) -> dict:
    from dlsr_deploy.run_folder import DERIVED_CONFIG_KEYS, identity

    c = cfg.to_dict()
    for k in ("epochs", "patience", "checkpoint_every"):  # a resume may train longer
        c["train"].pop(k, None)
    for k in DERIVED_CONFIG_KEYS:  # derived from the settings (the profile), not one of them
        c.pop(k, None)
    if not c.get("views"):  # a one-view run: the identity earlier versions recorded (their runs resume)
        c.pop("views", None)
    return identity(
        feat["data"],
        feat["data_sha256"],
        c,
        flip=feat["flip"],
        limit=feat["limit"],
        holdout=holdout,
        native_size=cfg.feature.native_size,
        feature_engine=feat["feature_engine"],
    )


def run_train(
    data,
    out: Path,
    fcfg: FeatureConfig,
    *,
    preset: str = "default",
    width: Optional[int] = None,
    blocks: Optional[int] = None,
    tcfg: TrainConfig = TrainConfig(),
    holdout: float = 0.1,
    resume: bool = False,
    force: bool = False,
    limit: Optional[int] = None,
    cache_dir: Optional[Path] = None,
    flip: bool = False,
    feature_engine: str = "eager",
    native_size="auto",
    views=(),
) -> dict:
    """Train on one or several ID sources (`data`: a source or a list of them; a folder of
    .npz packs counts as all its packs). flip: add the horizontally flipped view of every
    training image as an extra training vector (held-out images and their flips stay out).
    native_size: 'auto' (default: the median shorter side of the training images, capped at the
    input size), a number (0 = each source's own size), or 'given' (fcfg.native_size). views: extra
    feature views (config.ViewConfig; `dlsr_deploy.views`), each with its own density head, combined
    into the `ensemble` score (`dlsr_deploy.profiles` names the ones the sweep chose; the run records
    which profile its settings are). An existing run in `out`
    is refused unless resume (same data and settings, checked) or force (replaced). Progress goes to
    the `dlsr_deploy` logger (dlsr_deploy.log). Returns run.json's content."""
    from dlsr_deploy import run_folder
    from dlsr_deploy.data import expand_sources
    from dlsr_deploy.model.features import default_cache_dir

    t0, out = time.time(), Path(out)
    views = tuple(views)
    ModelConfig(feature=fcfg, views=views)  # repeated views are refused before any work
    run_folder.prepare(out, resume, force)
    sources = expand_sources([data] if isinstance(data, (str, Path)) else list(data))
    if native_size != "given":
        fcfg, native_how = resolve_native_size(sources, fcfg, native_size, limit)
    else:
        native_how = "given" if fcfg.native_size else "source size"
    z, zf, names, feat = _training_data(sources, fcfg, cache_dir or default_cache_dir(), limit, feature_engine, flip)
    profile = profile_of(fcfg.backbone, fcfg.input_size, views)  # the settings' profile name, if any
    cfg = _model_config(fcfg, tcfg, preset, width, blocks, z.shape[1], views, profile)
    ident = _identity(feat, cfg, holdout, native_how)
    if resume:  # refused before the extra views' features are computed
        run_folder.check_resume(out, ident)
    t_views = time.time()
    vz = _view_features(sources, cfg, cache_dir or default_cache_dir(), limit, feature_engine)
    if vz is not None:
        feat["feature_seconds"] = round(feat["feature_seconds"] + time.time() - t_views, 1)
    out.mkdir(parents=True, exist_ok=True)
    run_folder.write_started(out, ident, {"native_size_source": native_how})
    stage = TrainStage(
        run=run_folder.RunRecord(out), z=z, zf=zf, names=names, feat=feat, cfg=cfg, preset=preset, holdout=holdout,
        resume=resume, t0=t0, ident=ident, native_how=native_how, views_z=vz,
    )  # fmt: skip
    return _fit(stage).to_dict()


@dataclass
class TrainStage:
    """What training has gathered by the time the LFDN is fitted."""

    run: object  # run_folder.RunRecord
    z: np.ndarray
    zf: Optional[np.ndarray]
    names: list
    feat: dict
    cfg: ModelConfig
    preset: str
    holdout: float
    resume: bool
    t0: float
    ident: dict
    native_how: str
    views_z: Optional[np.ndarray] = None  # the extra views' z0 of every image, or None


def _fit(st: TrainStage):
    """Train the LFDN on the cached z0, fit the density heads, write run.json (status 'done')."""
    from dlsr_deploy.model.train import train_denoiser
    from dlsr_deploy.run_folder import DENSITY, HOLDOUT_Z0, TRAIN_Z0, RunInfo
    from dlsr_deploy.scoring import fit_density_heads, save_density_heads
    from dlsr_deploy.views import save_views

    z, zf, cfg, run = st.z, st.zf, st.cfg, st.run
    hold_idx, train_idx = holdout_split(len(z), st.holdout, cfg.train.seed)
    train_z = z[train_idx] if zf is None else np.concatenate([z[train_idx], zf[train_idx]])
    np.save(run / TRAIN_Z0, train_z)
    np.save(run / HOLDOUT_Z0, z[hold_idx])
    what = f"{len(train_z)} z0 vectors of {'+'.join(st.names)}" + (" (with flipped views)" if zf is not None else "")
    info(
        f"training LFDN ({st.preset}: {_describe(cfg.denoiser)}) on {what} ({len(hold_idx)} images held out; native "
        f"size {cfg.feature.native_size} px, {st.native_how})"
    )
    val_z = z[hold_idx] if len(hold_idx) else None
    res = train_denoiser(train_z, cfg, run.folder, resume=st.resume, progress=progress(), log=info, val_z=val_z)
    t_dens = time.time()
    save_density_heads(run / DENSITY, fit_density_heads(train_z, cfg.layer_sizes))
    views = None if st.views_z is None else save_views(st.run, cfg, st.views_z, hold_idx, train_idx)
    record = RunInfo(
        status="done",
        identity=st.ident,
        **st.feat,
        native_size=cfg.feature.native_size,
        native_size_source=st.native_how,
        n_images=int(len(z)),
        n_train=int(len(train_idx)),
        n_train_vectors=int(len(train_z)),
        n_holdout=int(len(hold_idx)),
        holdout_indices=[int(i) for i in hold_idx],
        **_train_summary(res, cfg.train, bool(len(hold_idx))),
        density_heads=f"{DENSITY}, fitted on the training z0 ({TRAIN_Z0})",
        density_seconds=round(time.time() - t_dens, 1),
        views=views,
        total_seconds=round(time.time() - st.t0, 1),
    )
    run.write_info(record)
    info(f"done: {run.folder} (model = EMA of epoch {res.best_epoch}, {record.train_seconds:.0f} s training)")
    return record
