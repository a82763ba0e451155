"""dlsr-eval: DLSR scores and feature baselines on ID vs OOD sets -> table, JSON, Markdown, PNG.

Convention in every report: higher score = more OOD; AUROC and AUPR-Out take OOD as the
positive class; FPR@95TPR and AUPR-In take ID as the positive class.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from dlsr_deploy.metrics import ood_metrics, roc_curve

DIRECTION = "higher score = more OOD"
POSITIVE = "AUROC / AUPR-Out: OOD positive; FPR@95TPR / AUPR-In: ID positive (threshold = 95th percentile of ID scores)"
METRIC_NAMES = ("auroc", "fpr95", "aupr_in", "aupr_out")


def metrics_table(
    id_scores: Dict[str, np.ndarray],
    ood_scores: Dict[str, Dict[str, np.ndarray]],
    n_boot: int = 0,
    probes: Sequence[str] = (),
    seed: int = 0,
) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{score: {set | 'mean' | 'probe_mean': {metric: value}}}. With n_boot > 0 every set's AUROC
    and FPR95 carry a 95 % bootstrap interval (auroc_lo / auroc_hi, fpr95_lo / fpr95_hi; ID and OOD
    resampled jointly: one ID resample for every set, the same resamples for every score). 'mean'
    is over the real OOD sets;
    'probe_mean' (AUROC with its interval) over the synthetic *shift* probes named in `probes`
    (sets named 'probe:<name>')."""
    from dlsr_deploy.selection import IdReplicates, Resample, interval

    real = [k for k in ood_scores if not k.startswith("probe:")]
    shift = [k for k in ood_scores if k.startswith("probe:") and k.split(":", 1)[1] in probes]
    n_id = len(next(iter(id_scores.values())))
    sizes = {k: len(next(iter(v.values()))) for k, v in ood_scores.items()}
    rs = Resample.draw(n_id, sizes, n_boot, seed) if n_boot else None
    out = {}
    for score, id_s in id_scores.items():
        per, reps = {}, {}
        side = IdReplicates(id_s, rs.id_counts) if rs else None
        for name, sets in ood_scores.items():
            per[name] = ood_metrics(id_s, sets[score])
            if side:
                reps[name] = side.auroc(sets[score], rs.ood_counts[name])
                lo, hi = interval(reps[name])
                flo, fhi = interval(side.fpr(sets[score], rs.ood_counts[name]))
                per[name].update(auroc_lo=lo, auroc_hi=hi, fpr95_lo=flo, fpr95_hi=fhi)
        if real:
            per["mean"] = {m: float(np.mean([per[k][m] for k in real])) for m in METRIC_NAMES}
        if shift:
            per["probe_mean"] = {"auroc": float(np.mean([per[k]["auroc"] for k in shift]))}
            if n_boot:
                lo, hi = interval(np.mean([reps[k] for k in shift], axis=0))
                per["probe_mean"].update(auroc_lo=lo, auroc_hi=hi)
        out[score] = per
    return out


def _cell(m: dict, key: str) -> str:
    if key not in m:
        return "-"
    v = f"{100 * m[key]:.2f}"
    if f"{key}_lo" in m:
        v += f" [{100 * m[key + '_lo']:.2f}, {100 * m[key + '_hi']:.2f}]"
    return v


def format_table(table: Dict[str, Dict[str, Dict[str, float]]], title: str = "") -> str:
    """Markdown: one row per score with AUROC [95 % interval] / FPR95 [interval] / AUPR-In / AUPR-Out
    per real OOD set (percent) and their mean; when synthetic probes are present, a second table of
    their AUROCs (the shift probes first, then the content probes, then the shift-probe mean), so
    neither is seventy columns wide."""
    sets = list(next(iter(table.values())).keys())
    probes = [s for s in sets if s.startswith("probe:")]
    real = [s for s in sets if s not in probes and s != "probe_mean"]
    head = "| score | " + " | ".join(f"{s} AUROC | {s} FPR95 | {s} AUPR-In | {s} AUPR-Out" for s in real) + " |"
    rows = [head, "|---" * (1 + 4 * len(real)) + "|"]
    for score, per in table.items():
        cells = [_cell(per[s], k) for s in real for k in ("auroc", "fpr95", "aupr_in", "aupr_out")]
        rows.append(f"| {score} | " + " | ".join(cells) + " |")
    lines = ([f"**{title}**", ""] if title else []) + rows
    if probes:
        from dlsr_deploy.probes import PROBES

        kind = {p: PROBES[p[6:]].kind if p[6:] in PROBES else "?" for p in probes}
        order = [p for p in probes if kind[p] == "shift"] + [p for p in probes if kind[p] != "shift"]
        cols = order + (["probe_mean"] if "probe_mean" in sets else [])
        names = [f"{p[6:]} ({kind[p]})" for p in order] + (["mean of the shift probes"] if "probe_mean" in sets else [])
        lines += [
            "",
            "Synthetic probes made from the ID test images: AUROC [95 % interval] (README 'Synthetic shift "
            "probes'; only the shift probes count for choosing)",
            "",
            "| score | " + " | ".join(names) + " |",
            "|---" * (1 + len(cols)) + "|",
        ]
        for score, per in table.items():
            lines.append(f"| {score} | " + " | ".join(_cell(per[c], "auroc") for c in cols) + " |")
    return "\n".join(lines)


def short_table(table: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    """Compact text table for stdout: AUROC (with the half-width of its interval) / FPR95 per set."""
    sets = list(next(iter(table.values())).keys())
    w = max(12, *(len(k) for k in table))
    lines = [
        f"{'score':<{w}} " + " ".join(f"{s[:22]:>24}" for s in sets),
        f"{'':<{w}} " + " ".join(f"{'AUROC (+-) / FPR95':>24}" for _ in sets),
    ]
    for score, per in table.items():
        cells = []
        for s in sets:
            m = per[s]
            pm = f"+-{50 * (m['auroc_hi'] - m['auroc_lo']):.2f}" if "auroc_lo" in m else ""
            fpr = f"{100 * m['fpr95']:6.2f}" if "fpr95" in m else "     -"
            cells.append(f"{100 * m['auroc']:>8.2f} {pm:>7} / {fpr}")
        lines.append(f"{score:<{w}} " + " ".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def write_report(result: dict, out_dir: Path, scores_for_plot: Optional[dict] = None, stem: str = "eval") -> List[Path]:
    """JSON + Markdown (+ PNG of score histograms and ROC curves when scores are given)."""
    from dlsr_deploy.io import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    atomic_write_text(paths[0], json.dumps(result, indent=2) + "\n")
    md = ["# DLSR evaluation", "", f"- direction: {DIRECTION}", f"- positive class: {POSITIVE}"]
    for k in ("command", "machine", "model", "id_set", "ood_sets", "created"):
        if k in result:
            md.append(f"- {k}: `{json.dumps(result[k])}`")
    for block in result.get("runs", []):
        md += ["", format_table(block["metrics"], title=f"score config {json.dumps(block['score_config'])}")]
    if "baselines" in result:
        md += ["", format_table(result["baselines"], title="feature baselines on the same z0")]
    atomic_write_text(paths[1], "\n".join(md) + "\n")
    if scores_for_plot:
        png = out_dir / f"{stem}.png"
        plot_scores(scores_for_plot, png)
        paths.append(png)
    return paths


def plot_scores(scores: dict, path: Path) -> None:
    """scores = {'id': {score: arr}, 'ood': {name: {score: arr}}, 'thresholds': {score: t}} ->
    histograms (log axis where every score is positive and the tail is long, symlog where the tail
    is long otherwise; the threshold dashed) over ROC curves, one column per score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlsr_deploy.io import atomic_write

    names = list(scores["id"].keys())
    fig, axes = plt.subplots(2, len(names), figsize=(4.6 * len(names), 7.5), squeeze=False)
    for j, sc in enumerate(names):
        _hist_panel(axes[0, j], sc, scores["id"][sc], {n: o[sc] for n, o in scores["ood"].items()},
                    scores.get("thresholds", {}).get(sc))
        ax = axes[1, j]
        for name, o in scores["ood"].items():
            fpr, tpr = roc_curve(scores["id"][sc], o[sc])
            ax.plot(fpr, tpr, label=name)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("FPR (ID flagged as OOD)")
        ax.set_ylabel("TPR (OOD detected)")
        ax.set_title(f"ROC, {sc} (OOD positive)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def _hist_panel(ax, sc: str, id_s: np.ndarray, ood: Dict[str, np.ndarray], threshold: Optional[float]) -> None:
    from dlsr_deploy.report.svg import axis_for

    allv = np.concatenate([id_s, *ood.values()])
    allv = allv[np.isfinite(allv)]
    kind = axis_for(allv, [id_s, *ood.values()])
    if kind == "log":
        bins = np.geomspace(allv.min(), allv.max(), 60)
        ax.set_xscale("log")
    else:
        lo, hi = (allv.min(), allv.max()) if kind == "rank" else np.percentile(allv, [0.5, 99.5])
        bins = np.linspace(lo, hi, 60)
        if kind == "rank":  # long tail with scores <= 0: linear near the bulk, log beyond
            spread = float(np.subtract(*np.percentile(allv, [75, 25]))) or 1.0
            ax.set_xscale("symlog", linthresh=spread)
            bins = np.unique(np.concatenate([bins, np.percentile(allv, np.linspace(0, 100, 60))]))
    ax.hist(id_s, bins=bins, alpha=0.5, density=True, label="ID")
    for name, o in ood.items():
        ax.hist(o, bins=bins, alpha=0.4, density=True, label=name)
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1.2, label=f"threshold {threshold:.4g}")
    ax.set_title(f"{sc} ({DIRECTION})", fontsize=9)
    ax.legend(fontsize=7)


def machine_info() -> dict:
    """Platform, Python, CPU count, CPU model and its SIMD flags (timings are only read with these)."""
    from dlsr_deploy.machine import summary

    info = summary()
    info.pop("created")
    return info


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
