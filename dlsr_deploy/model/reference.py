"""The eager reference: one PyTorch FP32 detector built from a run directory and a score
config, used by dlsr-eval, dlsr-export (parity), dlsr-check, dlsr-bench and the tests.

Its outputs carry the bundle's graph names: `z0`, `z0_hat` and `score_<name>` for every
score the bundle computes (DLSR scores, density heads, combinations), so a backend's
outputs and the reference compare key by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from dlsr_deploy.config import ModelConfig, ScoreConfig
from dlsr_deploy.errors import ConfigError
from dlsr_deploy.model.denoiser import LFDN
from dlsr_deploy.model.detector import Reconstructor, build_reconstructor, score_features
from dlsr_deploy.model.features import FeatureExtractor, build_extractor
from dlsr_deploy.run_folder import (
    CONFIG,
    DENSITY,
    HOLDOUT_Z0,
    TRAIN_Z0,
    VIEWS_DENSITY,
    VIEWS_HOLDOUT_Z0,
    VIEWS_TRAIN_Z0,
)
from dlsr_deploy.scoring import (
    COMBINATIONS,
    COMBINE_HOWS,
    Combination,
    DensityHead,
    bundle_score_names,
    fit_density_heads,
    load_density_heads,
    save_density_heads,
)


def run_density_heads(run_dir: Path, layer_sizes: Sequence[int], wanted: Sequence[str] = ()) -> Dict[str, DensityHead]:
    """The run's density heads (density.npz), fitted on its training z0 and stored on first use; a
    `wanted` head the file lacks (registered after the run was trained) is fitted from the training
    z0 in memory."""
    path = Path(run_dir) / DENSITY
    tz = Path(run_dir) / TRAIN_Z0
    if path.exists():
        heads = load_density_heads(path)
        missing = [n for n in wanted if n not in heads]
        if missing and tz.exists():
            heads.update(fit_density_heads(np.load(tz), layer_sizes, missing))
        if tz.exists() and any("n_fit" not in h.info for h in heads.values()):
            # written before density.npz recorded it: the training z0 the heads were fitted on
            # (the count picks the default headline, scoring.default_headline_for)
            n = int(np.load(tz, mmap_mode="r").shape[0])
            heads = {k: replace(h, info={**h.info, "n_fit": n}) for k, h in heads.items()}
        return heads
    if not tz.exists():
        raise ConfigError(f"{run_dir}: neither density.npz nor train_z0.npy; retrain with dlsr-train")
    heads = fit_density_heads(np.load(tz), layer_sizes)
    save_density_heads(path, heads)
    return heads


def run_view_heads(run_dir: Path, cfg: ModelConfig) -> Dict[str, DensityHead]:
    """The extra views' heads (views_density.npz, fitted on the views' training z0 at training)."""
    from dlsr_deploy.views import fit_view_heads

    if not cfg.views:
        return {}
    path = Path(run_dir) / VIEWS_DENSITY
    if path.exists():
        return load_density_heads(path)
    tz = Path(run_dir) / VIEWS_TRAIN_Z0
    if not tz.exists():
        raise ConfigError(
            f"{run_dir}: a run of {len(cfg.views)} extra view(s) without {VIEWS_DENSITY} or {VIEWS_TRAIN_Z0}; "
            "retrain it"
        )
    return fit_view_heads(cfg, np.load(tz))


def run_holdout_z0(run_dir: Path, cfg: ModelConfig) -> Optional[np.ndarray]:
    """The held-out ID images' z0 as the bundle computes it (the extra views' after the primary's), or None."""
    p = Path(run_dir) / HOLDOUT_Z0
    if not p.exists():
        return None
    z = np.load(p)
    if cfg.views:
        z = np.concatenate([z, np.load(Path(run_dir) / VIEWS_HOLDOUT_Z0)], axis=1)
    return z if len(z) else None


def fit_combinations(
    holdout_scores: Dict[str, np.ndarray], wanted: Optional[Sequence[Sequence[str]]] = None
) -> List[Combination]:
    """Every reported combination (sum and max), standardised by held-out ID scores."""
    comps = COMBINATIONS if wanted is None else wanted
    return [
        Combination.fit(c, how, holdout_scores)
        for c in comps
        for how in COMBINE_HOWS
        if all(x in holdout_scores for x in c)
    ]


@dataclass
class EagerReference:
    """final (and first-epoch) LFDN + density heads + combinations of one run, FP32; the
    extractor is built on first use."""

    cfg: ModelConfig
    score_cfg: ScoreConfig
    lfdn: LFDN
    first: Optional[LFDN] = None
    heads: Dict[str, DensityHead] = field(default_factory=dict)
    combos: List[Combination] = field(default_factory=list)
    view_heads: Dict[str, DensityHead] = field(default_factory=dict)  # v<i>_<head>: the extra views' heads
    _extractor: Optional[FeatureExtractor] = None
    _view_extractors: Optional[list] = None

    @classmethod
    def from_run(
        cls,
        run_dir: Path,
        score_cfg: ScoreConfig,
        with_lr: Optional[bool] = False,
        density: Union[bool, Sequence[str]] = True,
        combos: Optional[Sequence[dict]] = None,
    ) -> "EagerReference":
        """with_lr: load the first-epoch model too (None = when the run has it).
        density: True = every density head of the run, or the names of the heads to use.
        combos: stored combinations (manifest form); None = fit every reported one whose
        components exist on the run's held-out ID z0 (none when the run has no hold-out)."""
        from dlsr_deploy.model.train import FIRST, load_lfdn

        run_dir = Path(run_dir)
        cfg = ModelConfig.load(run_dir / CONFIG)
        has_first = (run_dir / FIRST).exists()
        if with_lr and not has_first:
            raise ConfigError(f"{run_dir}: no {FIRST}; LR needs the first-epoch model")
        first = load_lfdn(run_dir, "first") if (with_lr or (with_lr is None and has_first)) else None
        if density is not True and density and cfg.views:  # a manifest's list names the views' heads too
            from dlsr_deploy.views import view_scores

            density = [n for n in density if n not in view_scores(cfg)]
        wanted = () if density is True else tuple(density or ())
        heads = run_density_heads(run_dir, cfg.layer_sizes, wanted) if density else {}
        if density is not True and density:
            missing = [n for n in density if n not in heads]
            if missing:
                raise ConfigError(f"{run_dir}: no density head(s) {missing} in density.npz (has {sorted(heads)})")
            heads = {n: heads[n] for n in density}
        if cfg.views and cfg.views[0].head not in heads:
            raise ConfigError(
                f"{run_dir}: the views' ensemble needs the density head {cfg.views[0].head!r}; export with it"
            )
        ref = cls(cfg, score_cfg, load_lfdn(run_dir, "final"), first, heads, view_heads=run_view_heads(run_dir, cfg))
        hold = run_holdout_z0(run_dir, cfg) if combos is None and density else None
        if combos is not None:
            ref.combos = [Combination.from_dict(c) for c in combos]
        elif hold is not None:
            ref.fit_combos(hold)
        return ref

    def fit_combos(self, hold_z0: np.ndarray) -> None:
        """Every reported combination (and the views' ensemble), standardised on held-out ID z0."""
        self.combos = []
        scores = self.score_z0(hold_z0)
        self.combos = fit_combinations(scores)
        if self.cfg.views:
            from dlsr_deploy.views import fit_ensemble

            self.combos.append(fit_ensemble(self.cfg, scores))

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = build_extractor(self.cfg.feature)
        return self._extractor

    @property
    def view_extractors(self) -> List[FeatureExtractor]:
        """One extractor per extra view (built on first use)."""
        if self._view_extractors is None:
            self._view_extractors = [build_extractor(v.feature(self.cfg.feature)) for v in self.cfg.views]
        return self._view_extractors

    @property
    def all_heads(self) -> Dict[str, DensityHead]:
        """The primary view's density heads, then the extra views' (v<i>_<head>)."""
        return {**self.heads, **self.view_heads}

    def reconstructor(self, which: str = "final") -> Reconstructor:
        lfdn = self.lfdn if which == "final" else self.first
        return build_reconstructor(lfdn, self.score_cfg, self.cfg.schedule, self.cfg.layer_sizes)

    @property
    def score_names(self) -> List[str]:
        """Graph score names, in the order of the exported graph's outputs."""
        return bundle_score_names(self.first is not None, list(self.all_heads), [c.name for c in self.combos])

    @property
    def heads_graph_scores(self) -> List[str]:
        """The scores heads.onnx outputs: density heads and the combinations of density heads only."""
        heads = self.all_heads
        return list(heads) + [c.name for c in self.combos if all(x in heads for x in c.components)]

    def score_z0(
        self, z0: np.ndarray, progress: bool = False, desc: str = "scoring", with_z0_hat: bool = False
    ) -> Dict[str, np.ndarray]:
        """{score name: float64 [N]} for z0 [N, D]: DLSR scores (mfsim, mse, lr_mse, lr_mfsim),
        every density head and every combination."""
        c = self.cfg
        full, z0 = z0, z0[:, : c.denoiser.dim]  # the primary view: the LFDN's input
        out = score_features(
            z0,
            self.lfdn,
            self.score_cfg,
            c.schedule,
            c.layer_sizes,
            first=self.first,
            progress=progress,
            desc=desc,
            with_z0_hat=with_z0_hat,
        )
        return self.add_density_scores(out, full)

    def add_density_scores(self, scores: Dict[str, np.ndarray], z0: np.ndarray) -> Dict[str, np.ndarray]:
        """Every density head on z0 and every combination whose components are there, added to the
        DLSR `scores` (in place; without DLSR scores: the heads and the combinations of heads). z0: the
        bundle's (with the extra views' after the primary's)."""
        from dlsr_deploy.views import score_views

        for name, h in self.heads.items():
            scores[name] = h.score(z0[:, : self.cfg.denoiser.dim])
        if self.view_heads:
            scores.update(score_views(self.cfg, self.view_heads, z0))
        for comb in self.combos:
            if all(c in scores for c in comb.components):
                scores[comb.name] = comb.combine(scores)
        return scores

    @torch.no_grad()
    def z0(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        """The bundle's z0 of uint8 images: the primary view's, then each extra view's."""
        from dlsr_deploy.views import view_images

        def run(ext, x):
            return np.concatenate(
                [ext(torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))).numpy() for i in range(0, len(x), batch)]
            )

        z = [run(self.extractor, images)]
        z += [run(e, view_images(images, v)) for v, e in zip(self.cfg.views, self.view_extractors)]
        return np.concatenate(z, axis=1) if len(z) > 1 else z[0]

    def outputs(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """Graph-named outputs for uint8 images: z0, z0_hat, score_<name> (float32)."""
        z0 = self.z0(images)
        s = self.score_z0(z0, with_z0_hat=True)
        out = {"z0": z0, "z0_hat": s["z0_hat"]}
        out.update({f"score_{n}": s[n].astype(np.float32) for n in self.score_names})
        return out
