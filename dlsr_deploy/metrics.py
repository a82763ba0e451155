"""OOD metrics in numpy (no sklearn at run time).

Convention: higher score = more OOD.
  AUROC      OOD positive (probability that a random OOD image scores above a random ID one; ties count half)
  FPR@95TPR  ID positive: threshold = 95th percentile of ID scores (95 % of ID accepted);
             FPR = share of OOD images with score <= threshold (accepted as ID)
  AUPR-In    ID positive, ranked by -score;  AUPR-Out  OOD positive, ranked by score
             (average precision, step-wise, as sklearn's average_precision_score)
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from dlsr_deploy.errors import InputError


def _check(id_scores, ood_scores) -> Tuple[np.ndarray, np.ndarray]:
    a = np.asarray(id_scores, np.float64).ravel()
    b = np.asarray(ood_scores, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise InputError(f"metrics need ID and OOD scores, got {a.size} ID and {b.size} OOD")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise InputError("metrics: scores contain NaN or infinite values")
    return a, b


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), np.float64)
    _, start, counts = np.unique(xs, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return ranks


def auroc(id_scores, ood_scores) -> float:
    """Area under the ROC curve with OOD as the positive class (higher score = more OOD)."""
    a, b = _check(id_scores, ood_scores)
    r = _average_ranks(np.concatenate([a, b]))
    r_ood = r[a.size :].sum()
    return float((r_ood - b.size * (b.size + 1) / 2.0) / (a.size * b.size))


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95) -> float:
    """Share of OOD images scored at or below the threshold that keeps `tpr` of ID images (ID positive)."""
    a, b = _check(id_scores, ood_scores)
    thr = np.percentile(a, 100.0 * tpr)
    return float(np.mean(b <= thr))


def average_precision(pos_scores, neg_scores) -> float:
    """AP with `pos` as the positive class, higher score = more positive."""
    p, n = np.asarray(pos_scores, np.float64), np.asarray(neg_scores, np.float64)
    s = np.concatenate([p, n])
    y = np.concatenate([np.ones(p.size), np.zeros(n.size)])
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.where(np.diff(s))[0], s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / p.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve(id_scores, ood_scores) -> Tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) with OOD positive, for plotting."""
    a, b = _check(id_scores, ood_scores)
    thr = np.unique(np.concatenate([a, b]))[::-1]
    return np.r_[0.0, _cum(a, thr), 1.0], np.r_[0.0, _cum(b, thr), 1.0]


def _cum(x: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Share of x at or above each threshold."""
    xs = np.sort(x)
    return 1.0 - np.searchsorted(xs, thr, side="left") / x.size


def ood_metrics(id_scores, ood_scores) -> Dict[str, float]:
    """AUROC, FPR@95TPR, AUPR-In and AUPR-Out of one ID / OOD score pair."""
    a, b = _check(id_scores, ood_scores)
    return {
        "auroc": auroc(a, b),
        "fpr95": fpr_at_tpr(a, b),
        "aupr_in": average_precision(-a, -b),
        "aupr_out": average_precision(b, a),
    }
