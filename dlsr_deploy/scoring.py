"""OOD scores from z0 and its reconstruction, the threshold and normalisation (numpy).

Direction everywhere: higher score = more OOD.
  MFsim = -mean over layers m of cos(z0_m, z0_hat_m)     (headline)
  MSE   = sum over dims of (z0 - z0_hat)^2
  LR    = score(first-epoch model) - score(final model), same stored noise
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from dlsr_deploy.errors import InputError

SCORE_NAMES = ("mfsim", "mse")

# LR = LR_SIGN * (score(first-epoch model) - score(final model)), shared stored noise.
# The paper's reading (ID errors fall more during training) makes first - final *larger*
# for ID, i.e. lower = more OOD; the sign is fixed here, once, from measurements (README,
# "LR sign"), so that LR, like every score, is higher = more OOD.
LR_SIGN = 1.0


def layer_bounds(sizes: Sequence[int]):
    start = 0
    for s in sizes:
        yield start, start + s
        start += s


def mse(z0: np.ndarray, zh: np.ndarray) -> np.ndarray:
    d = z0.astype(np.float64) - zh.astype(np.float64)
    return (d * d).sum(axis=1)


def mfsim(z0: np.ndarray, zh: np.ndarray, sizes: Sequence[int], skip_first: bool = False, eps: float = 1e-8) -> np.ndarray:
    bounds = list(layer_bounds(sizes))[1 if skip_first else 0 :]
    cos = []
    for a, b in bounds:
        x, y = z0[:, a:b].astype(np.float64), zh[:, a:b].astype(np.float64)
        cos.append((x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), eps))
    return -np.mean(cos, axis=0)


def scores(z0: np.ndarray, zh: np.ndarray, sizes: Sequence[int], skip_first: bool = False) -> Dict[str, np.ndarray]:
    return {"mfsim": mfsim(z0, zh, sizes, skip_first), "mse": mse(z0, zh)}


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
