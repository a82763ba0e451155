"""Parity between a bundle's outputs and PyTorch eager FP32 (numpy only): used by dlsr-export,
dlsr-check and the runtime's load-time self-check alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict

import numpy as np

from dlsr_deploy.metrics import auroc
from dlsr_deploy.names import score_of


@dataclass(frozen=True)
class Tolerances:
    """How far an exported graph's outputs may be from PyTorch eager FP32 (per precision)."""

    rank_corr: float  # minimum Spearman correlation of every score
    auroc_change: float  # maximum |AUROC(exported) - AUROC(eager)|
    flip_rate: float  # maximum share of ID/OOD decisions that differ at the threshold
    z0_rel: float  # maximum relative error of z0 (||a-b|| / ||b||, per image, max over images)

    @classmethod
    def for_precision(cls, precision: str) -> "Tolerances":
        """The default tolerances of a bundle precision ('fp32', 'fp16', 'int8'; 'bf16' bundles' graphs
        are FP32 and verified as such, the bf16 backbone by the accuracy guard)."""
        if precision == "fp16":
            return cls(rank_corr=0.999, auroc_change=0.002, flip_rate=0.005, z0_rel=0.02)
        if precision == "int8":  # backbone FP32, denoiser INT8
            return cls(rank_corr=0.999, auroc_change=0.002, flip_rate=0.005, z0_rel=1e-4)
        return cls(rank_corr=0.9999, auroc_change=0.002, flip_rate=0.005, z0_rel=1e-4)

    def to_dict(self) -> dict:
        """JSON form (stored in the manifest for the self-check)."""
        return asdict(self)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from dlsr_deploy.metrics import _average_ranks

    ra, rb = _average_ranks(np.asarray(a, np.float64)), _average_ranks(np.asarray(b, np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else 1.0


def _err(ref: np.ndarray, got: np.ndarray) -> dict:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    d = np.abs(ref - got)
    denom = np.abs(ref).mean() + 1e-12
    out = {
        "max_abs": float(d.max()),
        "mean_abs": float(d.mean()),
        "max_rel": float(d.max() / denom),
        "mean_rel": float(d.mean() / denom),
    }
    if ref.ndim == 2:  # per-image relative L2 error for vectors
        per = np.linalg.norm(ref - got, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-12)
        out["max_rel_l2"] = float(per.max())
    return out


def compare(
    ref: Dict[str, np.ndarray],
    got: Dict[str, np.ndarray],
    is_ood: np.ndarray,
    thresholds: Dict[str, float],
    tol: Tolerances,
) -> dict:
    """ref / got: {'z0', 'z0_hat', 'score_<name>'...}; is_ood: bool [N] (verification labels)."""
    report = {
        "n_images": int(len(is_ood)),
        "n_ood": int(np.sum(is_ood)),
        "tolerances": tol.to_dict(),
        "tensors": {},
        "scores": {},
        "failures": [],
    }
    for k in ("z0", "z0_hat"):
        if k in ref and k in got:
            report["tensors"][k] = _err(ref[k], got[k])
    if "z0" in report["tensors"] and report["tensors"]["z0"]["max_rel_l2"] > tol.z0_rel:
        report["failures"].append(f"z0 relative error {report['tensors']['z0']['max_rel_l2']:.2e} > {tol.z0_rel:.0e}")
    for k in sorted(n for n in ref if n.startswith("score_")):
        r, g = ref[k], got[k]
        s = dict(_err(r, g))
        s["spearman"] = spearman(r, g)
        if s["spearman"] < tol.rank_corr:
            report["failures"].append(f"{k}: rank correlation {s['spearman']:.6f} < {tol.rank_corr}")
        if is_ood.any() and (~is_ood).any():
            a_ref, a_got = auroc(r[~is_ood], r[is_ood]), auroc(g[~is_ood], g[is_ood])
            # one swapped ID/OOD pair moves AUROC by 1 / (n_id * n_ood): on small sets three swaps
            # are allowed (as one flip is below), else 24 x 40 images could not move it by 0.002
            pair = 1.0 / (int((~is_ood).sum()) * int(is_ood.sum()))
            allowed_change = max(tol.auroc_change, 3 * pair)
            s.update(auroc_eager=a_ref, auroc_export=a_got, auroc_change=abs(a_got - a_ref))
            if abs(a_got - a_ref) > allowed_change + 1e-12:
                report["failures"].append(
                    f"{k}: AUROC changed by {abs(a_got - a_ref):.4f} > {allowed_change:.4f} "
                    f"({round(abs(a_got - a_ref) / pair)} swapped ID/OOD pairs)"
                )
        name = score_of(k)
        if name in thresholds:
            thr = thresholds[name]
            flips = float(np.mean((r > thr) != (g > thr)))
            s["flip_rate"] = flips
            n_flips = int(np.sum((r > thr) != (g > thr)))
            allowed = max(1, int(np.floor(tol.flip_rate * len(r))))  # one flip is allowed on small sets
            s["flips"], s["flips_allowed"] = n_flips, allowed
            if n_flips > allowed:
                report["failures"].append(
                    f"{k}: {n_flips} of {len(r)} decisions ({flips:.2%}) flip at the threshold, allowed {allowed} "
                    f"({tol.flip_rate:.2%})"
                )
        report["scores"][k] = s
    report["passed"] = not report["failures"]
    return report


def summary_line(report: dict) -> str:
    """One line: PASS/FAIL, z0 error and per score rank correlation, error, AUROC change, flips."""
    parts = []
    for k, s in report["scores"].items():
        p = f"{score_of(k)}: rank {s['spearman']:.6f}, max rel {s['max_rel']:.1e}"
        if "auroc_change" in s:
            p += f", dAUROC {s['auroc_change']:.4f}"
        if "flip_rate" in s:
            p += f", flips {s['flip_rate']:.2%}"
        parts.append(p)
    z = report["tensors"].get("z0")
    head = f"{'PASS' if report['passed'] else 'FAIL'} on {report['n_images']} images ({report['n_ood']} OOD)"
    if z:
        head += f"; z0 max rel L2 {z['max_rel_l2']:.1e}"
    return head + "; " + "; ".join(parts)


def format_report(rep: dict) -> str:
    """The multi-line report dlsr-check prints (per tensor and per score, then PASS / FAIL)."""
    where = f" on {rep['platform']['backend']} ({rep['platform']['provider']})" if "platform" in rep else ""
    where = where or (f" on {rep['engine']}" if "engine" in rep else "")
    lines = [
        f"parity of {rep.get('bundle', '')} ({rep.get('precision', '')}){where} vs PyTorch eager FP32 on "
        f"{rep['n_images']} images ({rep['n_ood']} OOD)"
    ]
    for k, e in rep["tensors"].items():
        lines.append(
            f"  {k:<12} max abs {e['max_abs']:.2e}  mean abs {e['mean_abs']:.2e}  max rel L2 "
            f"{e.get('max_rel_l2', float('nan')):.2e}"
        )
    for k, s in rep["scores"].items():
        extra = ""
        if "auroc_change" in s:
            extra += f"  AUROC {s['auroc_eager']:.4f} -> {s['auroc_export']:.4f}"
        if "flip_rate" in s:
            extra += f"  flips {s['flips']} ({s['flip_rate']:.2%})"
        lines.append(f"  {k:<12} max rel {s['max_rel']:.2e}  rank corr {s['spearman']:.6f}{extra}")
    lines.append("PASS" if rep["passed"] else "FAIL: " + "; ".join(rep["failures"]))
    return "\n".join(lines)
