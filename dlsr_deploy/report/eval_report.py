"""`dlsr-eval`'s STEM.html: what the detector decides, image by image (issue 31).

Order on the page: the headline (the score a bundle exported from this run decides with) with
its calibrated threshold, its ROC curves and metrics; the probe bars; the galleries (the ID test
images it scores as most OOD: its false alarms at the threshold; per OOD set, the OOD images it
scores as most ID: its misses); then each score named with --plot-scores; then every score's
AUROC per set, with a note wherever a score ranks a set the wrong way round (AUROC < 50).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from dlsr_deploy.report import html, svg

GALLERY = 12  # thumbnails per gallery


@dataclass
class EvalView:
    """What the page is made from (nothing else reaches it: no paths, no keys)."""

    headline: str
    how: str  # why this headline (the exporter's words)
    thresholds: Dict[str, float]  # per plotted score, at target_tpr of the held-out ID scores
    centers: Dict[str, float]  # median held-out ID score per plotted score (normalised 0)
    calibrated_on: str  # "held-out ID images (N)" or the fallback's words
    target_tpr: float
    id_scores: Dict[str, np.ndarray]
    ood_scores: Dict[str, Dict[str, np.ndarray]]  # incl. 'probe:<name>'
    metrics: Dict[str, Dict[str, Dict[str, float]]]
    id_images: Optional[np.ndarray] = None
    ood_images: Dict[str, np.ndarray] = field(default_factory=dict)
    plot_scores: Sequence[str] = ()
    meta: List[str] = field(default_factory=list)

    @property
    def real_sets(self) -> List[str]:
        """The real OOD sets (not the probes)."""
        return [k for k in self.ood_scores if not k.startswith("probe:")]

    def norm(self, score: str):
        """score value -> normalised score (0 = median held-out ID score, 1.0 = threshold)."""
        c, t = self.centers[score], self.thresholds[score]
        return lambda s: (s - c) / (t - c) if t != c else float("nan")


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _interval(m: dict, key: str) -> str:
    lo, hi = m.get(f"{key}_lo"), m.get(f"{key}_hi")
    return f"[{_pct(lo)}, {_pct(hi)}]" if lo is not None else ""


def _score_block(v: EvalView, score: str, title: str) -> str:
    """Histogram (ID and each real OOD set) with the threshold, ROC, metrics table."""
    from dlsr_deploy.metrics import roc_curve

    t = v.thresholds.get(score)
    series = {"ID test": v.id_scores[score], **{s: v.ood_scores[s][score] for s in v.real_sets}}
    hist = svg.histogram(series, f"{score}: ID vs OOD (higher = more OOD)", threshold=t)
    curves = {s: roc_curve(v.id_scores[score], v.ood_scores[s][score]) for s in v.real_sets}
    plots = hist + (svg.roc(curves, f"ROC, {score} (OOD positive)") if curves else "")
    rows = []
    for s in v.real_sets + (["mean"] if "mean" in v.metrics[score] else []):
        m = v.metrics[score][s]
        flagged = "" if t is None or s == "mean" else f"{100 * np.mean(v.ood_scores[s][score] > t):.1f} %"
        rows.append(
            [
                s,
                _pct(m.get("auroc")),
                _interval(m, "auroc"),
                _pct(m.get("fpr95")),
                _interval(m, "fpr95"),
                _pct(m.get("aupr_in")),
                _pct(m.get("aupr_out")),
                flagged,
            ]
        )
    id_flag = "" if t is None else f"{100 * np.mean(v.id_scores[score] > t):.1f} %"
    rows.append(["ID test (flagged = false alarms)", "", "", "", "", "", "", id_flag])
    heads = ["set", "AUROC", "95 % interval", "FPR@95TPR", "95 % interval", "AUPR-In", "AUPR-Out", "flagged OOD"]
    notes = "".join(html.note(n) for n in _inverted(v.metrics, [score], v.real_sets))
    return (
        f'<section class="score-block" data-score="{score}"><h2>{title}</h2>'
        f'<div class="plots">{plots}</div>{notes}{html.table(heads, rows, "metrics")}</section>'
    )


def _inverted(metrics: dict, scores: Sequence[str], sets: Sequence[str]) -> List[str]:
    out = []
    for sc in scores:
        bad = [(s, metrics[sc][s]["auroc"]) for s in sets if s in metrics[sc] and metrics[sc][s]["auroc"] < 0.5]
        for s, a in bad:
            out.append(
                f"{sc} is inverted on {s} (AUROC {100 * a:.2f} < 50): it scores these OOD images as more "
                f"in-distribution than the ID images, so its threshold flags the wrong ones. A score read the other "
                f"way round would reach {100 * (1 - a):.2f}, but its direction is not known before seeing OOD data "
                "(the LR scores' direction depends on the data set), so it is not a score to deploy on this data."
            )
    return out


def _probes(v: EvalView) -> str:
    m = v.metrics[v.headline]
    probes = [k for k in m if k.startswith("probe:")]
    if not probes:
        return ""
    items = [(k.split(":", 1)[1], m[k]["auroc"], m[k].get("auroc_lo"), m[k].get("auroc_hi")) for k in probes]
    if "probe_mean" in m:
        pm = m["probe_mean"]
        items.append(("shift-probe mean", pm["auroc"], pm.get("auroc_lo"), pm.get("auroc_hi")))
    blurb = "AUROC of the headline on synthetic shifts made from the ID test images (black: 95 % interval)."
    plot = svg.bars(items, v.headline)
    return f'<section class="probes"><h2>Shift probes</h2><p class="meta">{blurb}</p>{plot}</section>'


def _galleries(v: EvalView) -> str:
    h, t, norm = v.headline, v.thresholds[v.headline], v.norm(v.headline)
    parts = []
    if v.id_images is not None:
        s = v.id_scores[h]
        order = np.argsort(-s, kind="stable")[:GALLERY]
        n_over = int(np.sum(s > t))
        parts.append(
            html.gallery(
                f"False alarms: the ID test images scored most OOD ({n_over} of {len(s)} over the threshold)",
                html.score_items(v.id_images, s, order, t, norm),
                "Highest headline score first. Red frame: over the threshold (flagged OOD); green: under it.",
                "false-alarms",
            )
        )
    for name in v.real_sets:
        if name not in v.ood_images:
            continue
        s = v.ood_scores[name][h]
        order = np.argsort(s, kind="stable")[:GALLERY]
        n_under = int(np.sum(s <= t))
        parts.append(
            html.gallery(
                f"Misses on {name}: the OOD images scored most ID ({n_under} of {len(s)} under the threshold"
                + ("; none missed)" if n_under == 0 else ")"),
                html.score_items(v.ood_images[name], s, order, t, norm),
                "Lowest headline score first. Green frame: under the threshold (missed); red: flagged OOD.",
                "misses",
            )
        )
    return '<section class="galleries"><h2>Images it gets wrong</h2>' + "".join(parts) + "</section>" if parts else ""


def _all_scores(v: EvalView) -> str:
    sets = (
        v.real_sets
        + (["mean"] if v.real_sets else [])
        + (["probe_mean"] if any("probe_mean" in m for m in v.metrics.values()) else [])
    )
    rows = [[sc] + [_pct(v.metrics[sc].get(s, {}).get("auroc")) for s in sets] for sc in v.metrics]
    notes = "".join(html.note(n) for n in _inverted(v.metrics, [s for s in v.metrics if s != v.headline], v.real_sets))
    tab = html.table(["score"] + sets, rows)
    return f'<section class="all-scores"><h2>Every score: AUROC per set</h2>{tab}{notes}</section>'


def eval_page(v: EvalView) -> str:
    """The whole page, in the order of the module docstring."""
    h = v.headline
    head = (
        f"Headline: {h}, threshold {v.thresholds[h]:.4g} ({100 * v.target_tpr:g} % of {v.calibrated_on} at or under it)"
    )
    sections = [f'<p class="meta">{html.escape(v.how)}</p>', _score_block(v, h, head), _probes(v), _galleries(v)]
    sections += [_score_block(v, s, f"{s}") for s in v.plot_scores if s != h and s in v.id_scores]
    sections.append(_all_scores(v))
    return html.page("DLSR evaluation", v.meta, sections)
