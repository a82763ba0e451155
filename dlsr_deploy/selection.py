"""Choosing a score by evidence that holds on data nobody tuned to (numpy only).

The failure this module exists for: picking the detector with the best mean AUROC over the
two OOD sets one happens to have, decided by hundredths, picks the one that generalises worst
often enough to matter. So every AUROC / FPR@95TPR used for choosing carries a bootstrap
confidence interval, and a candidate replaces the incumbent only on evidence:

1. on every real OOD set it is not worse beyond the interval: the upper end of the 95 %
   paired-bootstrap interval of AUROC(candidate) - AUROC(incumbent) is >= 0;
2. on the mean AUROC over the synthetic *shift* probes (`dlsr_deploy.probes`; content-preserving
   ones are reported, not counted) it is not worse beyond the interval either;
3. it is better on the worst real set: the lower end of the interval of
   min_s AUROC_s(candidate) - min_s AUROC_s(incumbent) is > 0 (the minimum is taken inside
   each bootstrap replicate).

Anything else is a tie, and ties go to the simpler score: candidates are tried from the fewest
components up, each against the current choice (`choose`). Intervals are percentile intervals
of a paired bootstrap: ID and OOD images are resampled with replacement (independently), the
same resample for every score, so differences between scores are measured on equal data.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.errors import InputError

N_BOOT = 200
LEVEL = 0.95
NEAR_CHANCE = 0.6  # every candidate below this AUROC on given "OOD" images: they are probably ID


@dataclass
class Resample:
    """Bootstrap multiplicities (counts [B, n], each row sums to n) of a joint bootstrap: one ID
    resample shared by every OOD set, one resample per OOD set.

    The ID images are the same for every set, so a replicate draws them once: statistics taken
    inside a replicate across sets (the worst real set, the probe mean) then vary as they would
    with a new ID sample. A set's resample is seeded by its name, so adding a set does not move
    the others' intervals."""

    id_counts: np.ndarray
    ood_counts: Dict[str, np.ndarray]

    @classmethod
    def draw(cls, n_id: int, n_ood: Dict[str, int], n_boot: int = N_BOOT, seed: int = 0) -> "Resample":
        """Seeded resamples: the same call, the same intervals."""
        if n_boot < 1:
            raise InputError(f"n_boot: expected a positive number of replicates, got {n_boot}", param="n_boot")
        ood = {k: _counts(np.random.default_rng([seed, zlib.crc32(k.encode())]), n, n_boot) for k, n in n_ood.items()}
        return cls(_counts(np.random.default_rng(seed), n_id, n_boot), ood)


def _counts(rng, n: int, b: int) -> np.ndarray:
    flat = rng.integers(0, n, (b, n)) + (np.arange(b) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _finite(scores, what: str) -> np.ndarray:
    a = np.asarray(scores, np.float64).ravel()
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise InputError(f"bootstrap: expected finite, non-empty {what} scores, got {a.size} values")
    return a


class IdReplicates:
    """The ID half of every replicate of one score, computed once and used for every OOD set:
    the sorted ID scores, the cumulative resampled ID weight below each, and each replicate's
    FPR@95TPR threshold."""

    def __init__(self, id_scores, id_counts: np.ndarray):
        a = _finite(id_scores, "ID")
        if id_counts.shape[1] != a.size:
            raise InputError(f"bootstrap: {a.size} ID scores for a resample of {id_counts.shape[1]}")
        order = np.argsort(a, kind="mergesort")
        self.n = a.size
        self.sorted = a[order]
        self.cw = np.concatenate([np.zeros((len(id_counts), 1)), np.cumsum(id_counts[:, order], axis=1)], axis=1)
        self._thr: Dict[float, np.ndarray] = {}

    def auroc(self, ood_scores, ood_counts: np.ndarray) -> np.ndarray:
        """AUROC (OOD positive, ties count half) of every replicate -> [B]."""
        b = _finite(ood_scores, "OOD")
        lo = np.searchsorted(self.sorted, b, "left")
        below = self.cw[:, lo]  # [B, n_ood]: resampled ID weight under each OOD image
        hi = np.searchsorted(self.sorted, b, "right")
        tied = np.flatnonzero(hi != lo)
        if tied.size:
            below[:, tied] += 0.5 * (self.cw[:, hi[tied]] - self.cw[:, lo[tied]])
        return (ood_counts * below).sum(axis=1) / (self.n * b.size)

    def fpr(self, ood_scores, ood_counts: np.ndarray, tpr: float = 0.95) -> np.ndarray:
        """FPR at `tpr` ID acceptance of every replicate (threshold: the replicate's nearest-rank ID quantile)."""
        b = _finite(ood_scores, "OOD")
        if tpr not in self._thr:
            k = np.minimum((self.cw[:, 1:] < tpr * self.n).sum(axis=1), self.n - 1)
            self._thr[tpr] = self.sorted[k]
        return (ood_counts * (b[None, :] <= self._thr[tpr][:, None])).sum(axis=1) / b.size


def auroc_replicates(id_scores, ood_scores, id_counts: np.ndarray, ood_counts: np.ndarray) -> np.ndarray:
    """AUROC of every bootstrap replicate of one ID and one OOD set -> [B]."""
    return IdReplicates(id_scores, id_counts).auroc(ood_scores, ood_counts)


def fpr95_replicates(id_scores, ood_scores, id_counts: np.ndarray, ood_counts: np.ndarray) -> np.ndarray:
    """FPR@95TPR of every bootstrap replicate of one ID and one OOD set -> [B]."""
    return IdReplicates(id_scores, id_counts).fpr(ood_scores, ood_counts)


def interval(replicates: np.ndarray, level: float = LEVEL) -> Tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    q = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(replicates, [q, 100.0 - q])
    return float(lo), float(hi)


def auroc_with_interval(id_scores, ood_scores, n_boot: int = N_BOOT, seed: int = 0) -> Dict[str, float]:
    """{'auroc', 'auroc_lo', 'auroc_hi', 'fpr95', 'fpr95_lo', 'fpr95_hi'} (fractions, not %)."""
    from dlsr_deploy.metrics import auroc, fpr_at_tpr

    a, b = _finite(id_scores, "ID"), _finite(ood_scores, "OOD")
    rs = Resample.draw(a.size, {"ood": b.size}, n_boot, seed)
    side = IdReplicates(a, rs.id_counts)
    lo, hi = interval(side.auroc(b, rs.ood_counts["ood"]))
    flo, fhi = interval(side.fpr(b, rs.ood_counts["ood"]))
    return {
        "auroc": auroc(a, b),
        "auroc_lo": lo,
        "auroc_hi": hi,
        "fpr95": fpr_at_tpr(a, b),
        "fpr95_lo": flo,
        "fpr95_hi": fhi,
    }


@dataclass
class Evidence:
    """Candidate scores on held-out ID images and on named OOD sets.

    id: {candidate: ID scores}; ood: {set: {candidate: OOD scores}}; real: the real OOD sets;
    probes: the synthetic shift probes whose mean counts (others in `ood` are only reported)."""

    id: Dict[str, np.ndarray]
    ood: Dict[str, Dict[str, np.ndarray]]
    real: List[str]
    probes: List[str] = field(default_factory=list)
    n_boot: int = N_BOOT
    seed: int = 0
    _reps: Dict[Tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)
    _sides: Dict[str, IdReplicates] = field(default_factory=dict, repr=False)
    _rs: Optional[Resample] = field(default=None, repr=False)

    def replicates(self, cand: str, ood_set: str) -> np.ndarray:
        """AUROC replicates of a candidate on one set (one joint resample shared by every candidate)."""
        key = (cand, ood_set)
        if key not in self._reps:
            if self._rs is None:
                n_id = len(next(iter(self.id.values())))
                n_ood = {k: len(next(iter(v.values()))) for k, v in self.ood.items()}
                self._rs = Resample.draw(n_id, n_ood, self.n_boot, self.seed)
            if cand not in self._sides:
                self._sides[cand] = IdReplicates(self.id[cand], self._rs.id_counts)
            self._reps[key] = self._sides[cand].auroc(self.ood[ood_set][cand], self._rs.ood_counts[ood_set])
        return self._reps[key]

    def fpr_replicates(self, cand: str, ood_set: str, tpr: float = 0.95) -> np.ndarray:
        """FPR@`tpr` replicates of a candidate on one set (the same joint resample as its AUROC's)."""
        self.replicates(cand, ood_set)  # draws the resample and the candidate's ID side once
        return self._sides[cand].fpr(self.ood[ood_set][cand], self._rs.ood_counts[ood_set], tpr)

    def point(self, cand: str, ood_set: str) -> float:
        """AUROC of a candidate on one set (no resampling)."""
        from dlsr_deploy.metrics import auroc

        return auroc(self.id[cand], self.ood[ood_set][cand])

    def probe_mean(self, cand: str) -> Tuple[float, Optional[np.ndarray]]:
        """(mean AUROC over the shift probes, its replicates) or (nan, None) without probes."""
        if not self.probes:
            return float("nan"), None
        pts = [self.point(cand, p) for p in self.probes]
        return float(np.mean(pts)), np.mean([self.replicates(cand, p) for p in self.probes], axis=0)


def compare(ev: Evidence, incumbent: str, candidate: str) -> dict:
    """The three tests of the module docstring for one candidate against the incumbent."""
    real = {}
    for s in ev.real:
        d = ev.replicates(candidate, s) - ev.replicates(incumbent, s)
        lo, hi = interval(d)
        real[s] = {"delta": ev.point(candidate, s) - ev.point(incumbent, s), "lo": lo, "hi": hi}
    worst_c = np.min([ev.replicates(candidate, s) for s in ev.real], axis=0)
    worst_i = np.min([ev.replicates(incumbent, s) for s in ev.real], axis=0)
    w_lo, w_hi = interval(worst_c - worst_i)
    pm_c, reps_c = ev.probe_mean(candidate)
    pm_i, reps_i = ev.probe_mean(incumbent)
    probe = None
    if reps_c is not None:
        p_lo, p_hi = interval(reps_c - reps_i)
        probe = {"delta": pm_c - pm_i, "lo": p_lo, "hi": p_hi}
    not_worse = all(r["hi"] >= 0 for r in real.values()) and (probe is None or probe["hi"] >= 0)
    better = w_lo > 0
    return {
        "incumbent": incumbent,
        "candidate": candidate,
        "real": real,
        "probe_mean": probe,
        "worst_real": {"delta_lo": w_lo, "delta_hi": w_hi},
        "not_worse": bool(not_worse),
        "better_on_worst": bool(better),
        "replaces": bool(not_worse and better),
    }


def complexity(name: str) -> int:
    """Components of a score: 1 for a plain score, 2 for sum_mfsim_gauss_layer, 3 for a three-way
    combination (the registered combinations by name; other sum_ / max_ names count their parts)."""
    from dlsr_deploy.scoring import COMBINATIONS

    if not name.startswith(("sum_", "max_")):
        return 1
    known = {"_".join(c): len(c) for c in COMBINATIONS}
    return known.get(name.split("_", 1)[1], max(2, name.count("_")))


def choose(ev: Evidence, incumbent: str, candidates: Sequence[str]) -> dict:
    """Try candidates from the simplest up against the current choice; the record of how.

    Returns {'chosen', 'incumbent', 'steps': [compare(...)...], 'table': per-candidate AUROC with
    intervals on every set, 'near_chance': True when every candidate is below NEAR_CHANCE on every
    real set}."""
    order = sorted((c for c in candidates if c != incumbent), key=lambda c: (complexity(c), c))
    current, steps = incumbent, []
    for c in order:
        step = compare(ev, current, c)
        steps.append(step)
        if step["replaces"]:
            current = c
    table = {c: evidence_row(ev, c) for c in [incumbent, *order]}
    near = all(table[c][s]["auroc"] < NEAR_CHANCE for c in table for s in ev.real)
    return {
        "chosen": current,
        "incumbent": incumbent,
        "rule": RULE,
        "steps": steps,
        "table": table,
        "near_chance": bool(near),
    }


def evidence_row(ev: Evidence, cand: str) -> dict:
    """{set: {auroc, lo, hi}} for every set of the evidence, and 'probe_mean' when there are probes."""
    row = {}
    for s in ev.ood:
        lo, hi = interval(ev.replicates(cand, s))
        row[s] = {"auroc": ev.point(cand, s), "lo": lo, "hi": hi}
    pm, reps = ev.probe_mean(cand)
    if reps is not None:
        lo, hi = interval(reps)
        row["probe_mean"] = {"auroc": pm, "lo": lo, "hi": hi}
    return row


RULE = (
    "a candidate replaces the current choice only when, in a paired bootstrap (95 % percentile intervals, "
    "ID and OOD resampled), it is not worse beyond the interval on any real OOD set nor on the mean over the "
    "shift probes, and better on the worst real set (interval of the difference of worst-set AUROCs above 0); "
    "candidates are tried from the simplest up, so ties go to the simpler score"
)
