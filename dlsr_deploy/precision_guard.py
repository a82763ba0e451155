"""The accuracy guard of a low-precision bundle against the FP32 bundle of the same run (numpy only).

A low-precision backbone moves every feature (bf16 on the default: z0 relative error about 0.2),
so a bit-level parity check would refuse every useful bundle, and a loose one would pass a
broken one (OpenVINO's silent bf16 with heads fitted on FP32 features loses 12 AUROC points on
Tiny ImageNet). What the guard checks instead is the detector, on images the export did not fit
anything on, each rule against the FP32 bundle's own 95 % bootstrap interval:

1. AUROC on every real OOD set at or above the lower end of the FP32 bundle's interval, and the
   mean AUROC over the synthetic shift probes likewise (`selection.Evidence`: one joint
   paired resample of ID and OOD images shared by both bundles);
2. FPR@95TPR on every real OOD set at or below the upper end of the FP32 bundle's interval;
3. decisions flipped against the FP32 bundle, each at its own threshold calibrated on the same
   held-out ID images, on the ID and real OOD images together: at most `MAX_FLIPS` (2 %; one
   image always allowed, for small sets);
4. the share of held-out ID images flagged: thresholds calibrated on one half of the held-out
   ID images, the share measured on the other half, within `MAX_ID_FLAGGED_CHANGE` (1 point;
   one image always allowed) of the FP32 bundle's share.

`guard()` returns the numbers and the failures; the exporter writes them into the manifest and
refuses a bundle whose guard fails, with those numbers.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

MAX_FLIPS = 0.02
MAX_ID_FLAGGED_CHANGE = 0.01
RULES = (
    "AUROC on every real OOD set and the probe mean >= the FP32 bundle's 95 % interval lower end; "
    "FPR@95TPR on every real set <= its upper end; decisions flipped vs FP32 <= 2 %; share of "
    "held-out ID images flagged within 1 point of FP32's (thresholds from the other half)"
)


def _flagged_share(id_scores: np.ndarray, tpr: float) -> float:
    """Thresholds fitted on the even-indexed held-out ID images, share flagged among the odd ones."""
    from dlsr_deploy.scoring import threshold_at_tpr

    fit, test = id_scores[0::2], id_scores[1::2]
    return float(np.mean(test > threshold_at_tpr(fit, tpr)))


def _flips(ref: Dict[str, np.ndarray], cand: Dict[str, np.ndarray], real: Sequence[str], tpr: float) -> float:
    from dlsr_deploy.scoring import threshold_at_tpr

    tr, tc = threshold_at_tpr(ref["id"], tpr), threshold_at_tpr(cand["id"], tpr)
    sets = ["id", *real]
    r = np.concatenate([ref[s] > tr for s in sets])
    c = np.concatenate([cand[s] > tc for s in sets])
    return float(np.mean(r != c))


def guard(
    ref: Dict[str, np.ndarray],
    cand: Dict[str, np.ndarray],
    real: Sequence[str],
    probes: Sequence[str] = (),
    target_tpr: float = 0.95,
    n_boot: int = 200,
) -> dict:
    """ref / cand: {'id': held-out ID scores, <set>: OOD scores} of the headline, the same images
    in the same order for both; real: the real OOD sets among the keys, probes: the shift probes.
    Returns {'passed', 'failures', 'sets': per-set numbers, 'probe_mean', 'flips', 'id_flagged'}."""
    from dlsr_deploy.selection import Evidence, evidence_row

    _check_inputs(ref, cand, [*real, *probes])
    if not real and not probes:  # nothing to compare on is not a pass
        from dlsr_deploy.errors import InputError

        raise InputError("precision guard: no OOD set and no shift probe to compare the two bundles on")
    ood = {s: {"fp32": ref[s], "cand": cand[s]} for s in [*real, *probes]}
    ev = Evidence({"fp32": ref["id"], "cand": cand["id"]}, ood, list(real), list(probes), n_boot=n_boot)
    r_row, c_row = evidence_row(ev, "fp32"), evidence_row(ev, "cand")
    failures: List[str] = []
    sets = _real_sets(ev, ref, cand, real, r_row, c_row, target_tpr, failures)
    probe = None
    if probes:
        probe = {"auroc_fp32": r_row["probe_mean"]["auroc"], "auroc_fp32_lo": r_row["probe_mean"]["lo"]}
        probe["auroc"] = c_row["probe_mean"]["auroc"]
        if probe["auroc"] < probe["auroc_fp32_lo"]:
            failures.append(
                f"probe mean: AUROC {100 * probe['auroc']:.2f} < the FP32 interval's {100 * probe['auroc_fp32_lo']:.2f}"
            )
    flips = _flips(ref, cand, real, target_tpr)
    n_dec = len(ref["id"]) + sum(len(ref[s]) for s in real)
    if flips > max(MAX_FLIPS, 1.0 / n_dec + 1e-12):
        failures.append(f"decisions flipped vs FP32: {100 * flips:.2f} % > {100 * MAX_FLIPS:.0f} %")
    flagged = {"fp32": _flagged_share(ref["id"], target_tpr), "cand": _flagged_share(cand["id"], target_tpr)}
    if abs(flagged["cand"] - flagged["fp32"]) > max(MAX_ID_FLAGGED_CHANGE, 1.0 / len(ref["id"][1::2]) + 1e-12):
        failures.append(
            f"held-out ID images flagged: {100 * flagged['cand']:.2f} % vs FP32's {100 * flagged['fp32']:.2f} % "
            f"(more than {100 * MAX_ID_FLAGGED_CHANGE:.0f} point apart)"
        )
    return {
        "passed": not failures,
        "failures": failures,
        "sets": sets,
        "probe_mean": probe,
        "flips": flips,
        "id_flagged": flagged,
        "n_id": int(len(ref["id"])),
        "n_boot": int(n_boot),
    }


def _real_sets(ev, ref, cand, real, r_row, c_row, target_tpr, failures: List[str]) -> dict:
    """Rules 1 and 2 on each real OOD set -> {set: numbers}; failures appended."""
    from dlsr_deploy.metrics import fpr_at_tpr
    from dlsr_deploy.selection import interval

    sets = {}
    for s in real:
        f_hi = interval(ev.fpr_replicates("fp32", s, target_tpr))[1]
        row = {
            "auroc_fp32": r_row[s]["auroc"],
            "auroc_fp32_lo": r_row[s]["lo"],
            "auroc": c_row[s]["auroc"],
            "fpr95_fp32": fpr_at_tpr(ref["id"], ref[s]),
            "fpr95_fp32_hi": f_hi,
            "fpr95": fpr_at_tpr(cand["id"], cand[s]),
        }
        sets[s] = row
        if row["auroc"] < row["auroc_fp32_lo"]:
            lo = 100 * row["auroc_fp32_lo"]
            failures.append(f"{s}: AUROC {100 * row['auroc']:.2f} < the FP32 interval's {lo:.2f}")
        if row["fpr95"] > f_hi:
            failures.append(f"{s}: FPR@95TPR {100 * row['fpr95']:.2f} > the FP32 interval's {100 * f_hi:.2f}")
    return sets


def margin(result: dict) -> float:
    """The candidate's worst AUROC margin over the FP32 interval's lower end (sets and probe mean);
    the exporter keeps the passing candidate with the larger one."""
    rows = [*result["sets"].values()] + ([result["probe_mean"]] if result["probe_mean"] else [])
    return float(min((r["auroc"] - r["auroc_fp32_lo"] for r in rows), default=0.0))


def _check_inputs(ref: dict, cand: dict, sets: Sequence[str]) -> None:
    from dlsr_deploy.errors import InputError

    for s in ["id", *sets]:
        if s not in ref or s not in cand:
            raise InputError(
                f"precision guard: set {s!r} is missing (FP32 has {sorted(ref)}, candidate {sorted(cand)})"
            )
        a, b = np.asarray(ref[s]), np.asarray(cand[s])
        if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
            raise InputError(
                f"precision guard: set {s!r}: expected two 1-D score arrays of the same length >= 2, got "
                f"{list(a.shape)} and {list(b.shape)}"
            )
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise InputError(f"precision guard: set {s!r} has non-finite scores")
