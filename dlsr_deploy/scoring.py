"""OOD scores from z0 and its reconstruction, the threshold and normalisation (numpy).

Direction everywhere: higher score = more OOD.
  MFsim = -mean over layers m of cos(z0_m, z0_hat_m)     (headline)
  MSE   = sum over dims of (z0 - z0_hat)^2
  LR    = score(first-epoch model) - score(final model), same stored noise
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.errors import InputError
from dlsr_deploy.registry import BUILTIN_HEADS

# the bundle's headline score (and so its threshold) unless dlsr-export --headline says
# otherwise; chosen by the selection rule (dlsr_deploy.selection) over both shared OOD sets and the
# synthetic shift probes at the largest training scale (README "Choosing the headline";
# research/headline/results/default_headline.md: re-chosen on the 50k run, maha_ridge kept)
DEFAULT_HEADLINE = "maha_ridge"
# ... for a density head fitted on at least SMALL_N_RATIO training vectors per z0 dimension. With
# fewer, the sample covariance is ill-conditioned and maha_ridge's fixed ridge (1e-6 x the mean
# variance) weights the directions the data did not span by up to 1e6: refitted on subsets of the
# 50k run (research/headline/results/heads_small_n.md, 560 dims) it is 5.3 AUROC below gauss_layer on the
# worst set at 500 vectors and behind it up to 1,000; from 2,000 on it is ahead. gauss_layer
# (per-layer Ledoit-Wolf, each block at most 352 dims) is the default below the ratio.
SMALL_N_RATIO = 3
SMALL_N_HEADLINE = "gauss_layer"


def default_headline_for(n_fit, dim) -> str:
    """The package default headline for density heads fitted on n_fit vectors of dim dimensions
    (unknown sizes: the large-data default)."""
    if n_fit is not None and dim is not None and n_fit < SMALL_N_RATIO * dim:
        return SMALL_N_HEADLINE
    return DEFAULT_HEADLINE


# LR = LR_SIGN * (score(first-epoch model) - score(final model)), shared stored noise.
# The paper's reading (ID errors fall more during training) makes first - final *larger*
# for ID, i.e. lower = more OOD; the sign is fixed here, once, from measurements (README,
# "LR sign"), so that LR, like every score, is higher = more OOD.
LR_SIGN = 1.0


def layer_bounds(sizes: Sequence[int]):
    """(start, end) of each tap layer inside z0."""
    start = 0
    for s in sizes:
        yield start, start + s
        start += s


def mse(z0: np.ndarray, zh: np.ndarray) -> np.ndarray:
    """Sum of squared differences between z0 and its reconstruction (float64 [N])."""
    d = z0.astype(np.float64) - zh.astype(np.float64)
    return (d * d).sum(axis=1)


def mfsim(
    z0: np.ndarray, zh: np.ndarray, sizes: Sequence[int], skip_first: bool = False, eps: float = 1e-8
) -> np.ndarray:
    """Minus the mean over layers of the cosine similarity of z0 and its reconstruction."""
    bounds = list(layer_bounds(sizes))[1 if skip_first else 0 :]
    cos = []
    for a, b in bounds:
        x, y = z0[:, a:b].astype(np.float64), zh[:, a:b].astype(np.float64)
        cos.append((x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), eps))
    return -np.mean(cos, axis=0)


def mfsim_score(z0: np.ndarray, zh: np.ndarray, sizes: Sequence[int], options: dict) -> np.ndarray:
    """Registry form of `mfsim` (options: skip_first)."""
    return mfsim(z0, zh, sizes, skip_first=bool(options.get("skip_first", False)))


def mse_score(z0: np.ndarray, zh: np.ndarray, sizes: Sequence[int], options: dict) -> np.ndarray:
    """Registry form of `mse`."""
    return mse(z0, zh)


def reconstruction_scores(z0: np.ndarray, zh: np.ndarray, sizes: Sequence[int], options: dict) -> Dict[str, np.ndarray]:
    """Every registered reconstruction score (dlsr_deploy.registry) of z0 and its reconstruction."""
    from dlsr_deploy.registry import SCORES, resolve

    return {n: np.asarray(resolve(spec.numpy)(z0, zh, sizes, options), np.float64) for n, spec in SCORES.items()}


def dlsr_score_names(with_lr: bool) -> List[str]:
    """The DLSR scores of a bundle, in graph order: every registered reconstruction score, then
    lr_<score> for those with an LR variant when the first-epoch model is exported."""
    from dlsr_deploy.registry import SCORES

    names = list(SCORES)
    return names + ([f"lr_{n}" for n, spec in SCORES.items() if spec.lr] if with_lr else [])


def bundle_score_names(with_lr: bool, heads: Sequence[str], combos: Sequence[str]) -> List[str]:
    """Every score of a bundle in graph order: DLSR scores, density heads, combinations."""
    return dlsr_score_names(with_lr) + list(heads) + list(combos)


def threshold_at_tpr(id_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Score below or at which `tpr` of ID images fall (ID = positive, flagged OOD iff score > t)."""
    s = np.asarray(id_scores, np.float64)
    if s.size == 0:
        raise InputError("calibration: no ID scores given")
    if not np.all(np.isfinite(s)):
        raise InputError(f"calibration: {int((~np.isfinite(s)).sum())} ID scores are NaN or infinite")
    if not 0.0 < tpr < 1.0:
        raise InputError(f"target TPR: expected a value in (0, 1), got {tpr}")
    return float(np.percentile(s, 100.0 * tpr))


def normalisation(id_scores: np.ndarray, threshold: float) -> Tuple[float, float]:
    """(center, scale) such that (s - center) / scale is 0 at the ID median and 1.0 at the threshold."""
    center = float(np.median(id_scores))
    scale = threshold - center
    if not scale > 0:
        scale = float(np.std(id_scores)) or 1.0
    return center, float(scale)


# --------------------------------------------------------------------------- density heads
#
# Gaussian scores on the same z0, fitted on the training z0 only. Each head is stored as
# (mean, proj) with score(z) = || (f(z) - mean) @ proj ||^2, where proj is a square-root
# factor of the precision matrix (block-diagonal for the per-layer head) and f is the
# identity or an l2 normalisation: one MatMul and a sum of squares in any graph.
#   maha_lw      one Gaussian over all of z0, Ledoit-Wolf shrunk covariance
#   maha_ridge   the same with a fixed ridge of 1e-6 * mean variance (the old baseline)
#   gauss_layer  one Ledoit-Wolf Gaussian per tap layer, distances summed (Rippel et al. 2020)
#   maha_l2      maha_lw on l2-normalised z0 (Mahalanobis++, Mueller et al. 2025). NB: z0 is
#                z-scored per layer, so every z0 already has the same norm and this head
#                equals maha_lw up to a constant factor (measured: identical AUROC)
#   gauss_layer_dn  gauss_layer with each layer's distance divided by that layer's dimension:
#                a squared Mahalanobis distance of a d-dimensional Gaussian has mean d, so in
#                gauss_layer the 320-dimensional last tap outweighs the 16-dimensional first one
#                20:1; normalised, every tap (texture, stroke, contrast statistics in the shallow
#                ones) weighs alike

# the built-in heads (registry.BUILTIN_HEADS, each with its fit function below);
# `registry.density_heads()` lists every registered one, plug-ins included
DENSITY_HEADS = tuple(BUILTIN_HEADS)
# the heads a bundle carries by default (dlsr-eval reports them all): the headline, the previous
# default and the complementary per-layer view with its combinations; maha_l2 equals maha_lw on
# per-layer z-scored z0 (identical AUROC), so it is left out
BUNDLE_HEADS = ("maha_ridge", "maha_lw", "gauss_layer", "gauss_layer_dn")


def ledoit_wolf(x: np.ndarray) -> Tuple[np.ndarray, float]:
    """(shrunk covariance, shrinkage) of centred x [N, D]; the Ledoit-Wolf (2004) estimate
    towards mu * I, the same formula as scikit-learn's `ledoit_wolf` (tested against it)."""
    x = np.asarray(x, np.float64)
    n, p = x.shape
    x2 = x * x
    emp_trace = x2.sum(axis=0) / n
    mu = emp_trace.sum() / p
    beta_ = float((x2.T @ x2).sum())
    emp = x.T @ x / n
    delta_ = float((emp * emp).sum())  # sum((X^T X)^2) / n^2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * emp_trace.sum() + p * mu**2) / p
    beta = min(beta, delta)
    shrink = 0.0 if beta == 0 else beta / delta
    cov = (1.0 - shrink) * emp
    cov[np.diag_indices(p)] += shrink * mu
    return cov, float(shrink)


def _l2(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def _precision_factor(cov: np.ndarray, floor: float = 1e-9) -> np.ndarray:
    """P with P @ P.T = inv(cov), so d^T inv(cov) d = ||d @ P||^2. From the eigendecomposition,
    eigenvalues floored at `floor` x their mean, so a singular covariance (fewer samples than
    dimensions without shrinkage) still gives a finite factor."""
    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    w = np.maximum(w, floor * max(float(w.mean()), 1e-300))
    return v / np.sqrt(w)


@dataclass(frozen=True)
class DensityHead:
    """score(z) = || (f(z) - mean) @ proj ||^2, f = identity or l2 normalisation."""

    name: str
    mean: np.ndarray  # [D]
    proj: np.ndarray  # [D, D]
    l2: bool = False
    info: Dict = field(default_factory=dict)
    blocks: Tuple[int, ...] = ()  # layer sizes when proj is block-diagonal (gauss_layer)

    def score(self, z: np.ndarray) -> np.ndarray:
        """Scores of features z [N, D] (float64; higher = more OOD)."""
        z = np.asarray(z, np.float64)
        y = (_l2(z) if self.l2 else z) - self.mean
        y = y @ self.proj
        return (y * y).sum(axis=1)

    @classmethod
    def fit(cls, name: str, z: np.ndarray, sizes: Sequence[int]) -> "DensityHead":
        """Fit the registered head `name` (dlsr_deploy.registry.HEADS) on training features z [N, D]
        with tap layer sizes `sizes`."""
        from dlsr_deploy.registry import HEADS, resolve

        if name not in HEADS:
            raise InputError(f"density head: expected one of {list(HEADS)}, got {name!r}")
        z = np.asarray(z, np.float64)
        if z.ndim != 2 or len(z) < 2 or not np.all(np.isfinite(z)):
            raise InputError(f"density head {name}: expected finite training features [N>=2, D], got {list(z.shape)}")
        got = dict(resolve(HEADS[name].fit)(z, sizes))
        mean, proj = np.asarray(got["mean"], np.float64), np.asarray(got["proj"], np.float64)
        if mean.shape != (z.shape[1],) or proj.shape != (z.shape[1], z.shape[1]):
            raise InputError(f"density head {name}: its fit gave mean {mean.shape}, proj {proj.shape}; D={z.shape[1]}")
        info = {**got.get("info", {}), "n_fit": int(len(z))}
        return cls(name, mean, proj, bool(got.get("l2", False)), info, tuple(int(s) for s in got.get("blocks", ())))


def _gauss_layer(z: np.ndarray, sizes: Sequence[int], per_dim: bool) -> dict:
    if sum(sizes) != z.shape[1]:
        raise InputError(f"layer sizes {list(sizes)} do not add up to D={z.shape[1]}")
    mean = z.mean(axis=0)
    xc = z - mean
    proj = np.zeros((z.shape[1], z.shape[1]))
    shrinks = []
    for a, b in layer_bounds(sizes):
        cov, s = ledoit_wolf(xc[:, a:b])
        # gauss_layer_dn: ||d P / sqrt(dim)||^2 = (d^T inv(cov) d) / dim
        proj[a:b, a:b] = _precision_factor(cov) / (np.sqrt(b - a) if per_dim else 1.0)
        shrinks.append(s)
    return {"mean": mean, "proj": proj, "info": {"shrinkage_per_layer": shrinks}, "blocks": tuple(sizes)}


def fit_gauss_layer(z: np.ndarray, sizes: Sequence[int]) -> dict:
    """Per-layer Gaussians (Ledoit-Wolf per layer): a block-diagonal projection."""
    return _gauss_layer(z, sizes, per_dim=False)


def fit_gauss_layer_dn(z: np.ndarray, sizes: Sequence[int]) -> dict:
    """gauss_layer with each layer's distance divided by its dimension."""
    return _gauss_layer(z, sizes, per_dim=True)


def fit_maha_ridge(z: np.ndarray, sizes: Sequence[int]) -> dict:
    """Sample covariance plus a 1e-6 relative ridge."""
    mean = z.mean(axis=0)
    xc = z - mean
    cov = xc.T @ xc / (len(z) - 1)
    cov[np.diag_indices(len(cov))] += 1e-6 * np.trace(cov) / len(cov)
    return {"mean": mean, "proj": _precision_factor(cov), "info": {"ridge": 1e-6}}


def fit_maha_lw(z: np.ndarray, sizes: Sequence[int]) -> dict:
    """Ledoit-Wolf covariance of the whole z0."""
    mean = z.mean(axis=0)
    cov, s = ledoit_wolf(z - mean)
    return {"mean": mean, "proj": _precision_factor(cov), "info": {"shrinkage": s}}


def fit_maha_l2(z: np.ndarray, sizes: Sequence[int]) -> dict:
    """maha_lw on l2-normalised z0."""
    return {**fit_maha_lw(_l2(z), sizes), "l2": True}


def fit_density_heads(
    z: np.ndarray, sizes: Sequence[int], names: Optional[Sequence[str]] = None
) -> Dict[str, DensityHead]:
    """Fit every named density head (default: every registered one) on the training z0."""
    from dlsr_deploy.registry import density_heads

    return {n: DensityHead.fit(n, z, sizes) for n in (density_heads() if names is None else names)}


def save_density_heads(path, heads: Dict[str, DensityHead]) -> None:
    """One .npz: <name>.mean, <name>.proj, <name>.l2, <name>.blocks (and <name>.n_fit, the number of
    training vectors) per head (written atomically)."""
    from dlsr_deploy.io import atomic_write

    arrays = {}
    for n, h in heads.items():
        arrays[f"{n}.mean"], arrays[f"{n}.proj"], arrays[f"{n}.l2"] = h.mean, h.proj, np.array(h.l2)
        arrays[f"{n}.blocks"] = np.array(h.blocks, dtype=np.int64)
        if "n_fit" in h.info:  # picks the default headline (default_headline_for)
            arrays[f"{n}.n_fit"] = np.array(int(h.info["n_fit"]), dtype=np.int64)
    atomic_write(path, lambda p: np.savez(open(p, "wb"), **arrays))


def load_density_heads(path) -> Dict[str, DensityHead]:
    """Read the heads written by save_density_heads."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = sorted({k.rsplit(".", 1)[0] for k in data.files})
            return {
                n: DensityHead(
                    n,
                    data[f"{n}.mean"],
                    data[f"{n}.proj"],
                    bool(data[f"{n}.l2"]),
                    {"n_fit": int(data[f"{n}.n_fit"])} if f"{n}.n_fit" in data.files else {},
                    tuple(int(x) for x in data[f"{n}.blocks"]) if f"{n}.blocks" in data.files else (),
                )
                for n in names
            }
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a readable density-head file ({exc})") from None


# --------------------------------------------------------------------------- combined score
#
# Scores live on different scales; each is standardised by robust statistics of its own
# held-out ID scores, (s - median) / IQR, and then combined by their mean ("sum") or their
# maximum ("max"). All constants come from ID data only.


# the combinations dlsr-eval reports (each as "sum" and "max"): a DLSR score with a density head,
# and complementary density views (a global Gaussian, dominated by the last tap, with the
# dimension-normalised per-layer one, which weighs every tap alike)
COMBINATIONS = (
    ("mfsim", "gauss_layer"),
    ("mfsim", "maha_lw"),
    ("mse", "gauss_layer"),
    ("maha_ridge", "gauss_layer_dn"),
    ("maha_lw", "gauss_layer_dn"),
    ("mfsim", "maha_ridge", "gauss_layer_dn"),
)
COMBINE_HOWS = ("sum", "max")


def combination_names(available: Sequence[str]) -> List[str]:
    """The combinations (COMBINATIONS x COMBINE_HOWS) whose components are all `available`, by name."""
    return [f"{how}_" + "_".join(c) for c in COMBINATIONS for how in COMBINE_HOWS if all(x in available for x in c)]


@dataclass(frozen=True)
class Combination:
    """A combined score: components standardised by held-out ID median / IQR, then mean ('sum') or max."""

    components: Tuple[str, ...]
    how: str  # "sum" | "max"
    center: Tuple[float, ...]
    scale: Tuple[float, ...]
    label: Optional[str] = None  # a name of its own (the views' `ensemble`), else <how>_<components>

    @property
    def name(self) -> str:
        """The score name: the label, else <how>_<component>_<component>."""
        return self.label or f"{self.how}_" + "_".join(self.components)

    def to_dict(self) -> dict:
        """JSON form (stored in the manifest and the eval report)."""
        out = {
            "components": list(self.components),
            "how": self.how,
            "center": list(self.center),
            "scale": list(self.scale),
        }
        return {**out, "label": self.label} if self.label else out

    @classmethod
    def from_dict(cls, d: dict) -> "Combination":
        """Inverse of to_dict."""
        return cls(
            tuple(d["components"]),
            d["how"],
            tuple(float(x) for x in d["center"]),
            tuple(float(x) for x in d["scale"]),
            d.get("label"),
        )

    @classmethod
    def fit(
        cls, components: Sequence[str], how: str, id_scores: Dict[str, np.ndarray], label: Optional[str] = None
    ) -> "Combination":
        """Standardisation constants from held-out ID scores (never OOD)."""
        if how not in ("sum", "max"):
            raise InputError(f"combination: expected 'sum' or 'max', got {how!r}")
        missing = [c for c in components if c not in id_scores]
        if missing:
            raise InputError(f"combination: no held-out ID scores for {missing} (have {sorted(id_scores)})")
        centers, scales = [], []
        for c in components:
            s = np.asarray(id_scores[c], np.float64)
            q1, med, q3 = np.percentile(s, [25, 50, 75])
            centers.append(float(med))
            scales.append(float(q3 - q1) if q3 > q1 else float(np.std(s)) or 1.0)
        return cls(tuple(components), how, tuple(centers), tuple(scales), label)

    def combine(self, scores: Dict[str, np.ndarray]) -> np.ndarray:
        """The combined score from component scores."""
        z = np.stack(
            [(np.asarray(scores[c], np.float64) - m) / s for c, m, s in zip(self.components, self.center, self.scale)]
        )
        return z.mean(axis=0) if self.how == "sum" else z.max(axis=0)
