"""Detectors of several feature views (issue 32): names, features and heads of the extra views.

A run's primary view is `config.feature` (its z0 feeds the LFDN and every DLSR score). Extra
views (`ModelConfig.views`: another backbone or input size, or the horizontally flipped image)
each add their own z0 after the primary one in the bundle's z0 — `z0 = [primary | view 1 | ...]`,
`ModelConfig.view_bounds()` — and their own density head, scored as `v<i>_<head>`. The
detector's combined score `ensemble` is the mean of the primary view's head and every view's
head, each standardised by its median / IQR on the run's held-out ID images (the robust
standardisation of the package's sums, `scoring.Combination`).
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from dlsr_deploy.config import ModelConfig, ViewConfig
from dlsr_deploy.names import view_name

ENSEMBLE = "ensemble"
ENSEMBLE_DEFINITION = (
    "mean of the views' density-head scores (the primary view's {head} and each extra view's head), each "
    "standardised by its held-out ID median / IQR; views: {views}"
)


def view_score(i: int, view: ViewConfig) -> str:
    """Score name of extra view i (1-based): v1_maha_ridge, ..."""
    return f"v{i}_{view.head}"


def view_scores(cfg: ModelConfig) -> List[str]:
    """The extra views' head scores, in view order."""
    return [view_score(i, v) for i, v in enumerate(cfg.views, 1)]


def ensemble_components(cfg: ModelConfig) -> List[str]:
    """The scores `ensemble` combines: the primary view's head (the first view's head kind), then each view's."""
    return [cfg.views[0].head, *view_scores(cfg)] if cfg.views else []


def view_images(images: np.ndarray, view: ViewConfig) -> np.ndarray:
    """uint8 [N, H, W, 3] as the view sees them (horizontally flipped for a flip view)."""
    return np.ascontiguousarray(images[:, :, ::-1]) if view.flip else images


def describe_views(cfg: ModelConfig) -> str:
    """'lite2@160 + lite2@160:flip + lite1@128' (the primary view first)."""
    return " + ".join([view_name(cfg.feature.backbone, cfg.feature.input_size), *(v.name for v in cfg.views)])


def fit_view_heads(cfg: ModelConfig, views_z: np.ndarray) -> Dict[str, object]:
    """{v<i>_<head>: DensityHead} fitted on the extra views' training z0 ([N, sum of view dims])."""
    from dlsr_deploy.scoring import DensityHead

    heads, a = {}, 0
    for i, v in enumerate(cfg.views, 1):
        heads[view_score(i, v)] = DensityHead.fit(v.head, views_z[:, a : a + v.dim], v.layer_sizes)
        a += v.dim
    return heads


def score_views(cfg: ModelConfig, heads: Dict[str, object], z0: np.ndarray) -> Dict[str, np.ndarray]:
    """{v<i>_<head>: scores} of the bundle's z0 (every view's slice through its head)."""
    return {
        view_score(i, v): heads[view_score(i, v)].score(z0[:, a:b])
        for i, (v, (a, b)) in enumerate(zip(cfg.views, cfg.view_bounds()), 1)
    }


def fit_ensemble(cfg: ModelConfig, holdout_scores: Dict[str, np.ndarray]):
    """The `ensemble` Combination, standardised on the held-out ID scores of its components."""
    from dlsr_deploy.scoring import Combination

    return Combination.fit(ensemble_components(cfg), "sum", holdout_scores, label=ENSEMBLE)


def save_views(run, cfg: ModelConfig, views_z: np.ndarray, hold_idx, train_idx) -> dict:
    """The extra views' z0 (training / held-out rows of views_z) and their density heads into the run
    folder (a run_folder.RunRecord) -> run.json's `views` record."""
    import time

    from dlsr_deploy.log import info
    from dlsr_deploy.run_folder import VIEWS_DENSITY, VIEWS_HOLDOUT_Z0, VIEWS_TRAIN_Z0
    from dlsr_deploy.scoring import save_density_heads

    t = time.time()
    np.save(run / VIEWS_TRAIN_Z0, views_z[train_idx])
    np.save(run / VIEWS_HOLDOUT_Z0, views_z[hold_idx])
    save_density_heads(run / VIEWS_DENSITY, fit_view_heads(cfg, views_z[train_idx]))
    info(f"views: {describe_views(cfg)}; a {cfg.views[0].head} head per extra view fitted on {len(train_idx)} images")
    return {
        "views": describe_views(cfg),
        "profile": cfg.profile,
        "heads": f"{VIEWS_DENSITY}, fitted on the extra views' training z0 ({VIEWS_TRAIN_Z0}; no flip augmentation)",
        "seconds": round(time.time() - t, 1),
    }
