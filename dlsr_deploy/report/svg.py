"""Plots as inline SVG text (numpy only: no matplotlib, no JavaScript, no network), so a report
written by the torch-free runtime (`dlsr-score --report`) draws the same plots as `dlsr-eval`.

Score distributions of OOD detectors have long tails (a Mahalanobis score of an OOD image can
be 100x the ID median), so on a linear axis the ID histogram is one bar. `axis_for` picks the
axis: linear where the data allow it, log10 where every score is positive and the tail is long,
else a rank axis (the pooled empirical CDF: equal width per share of images, ticks labelled with
score values).
"""

from __future__ import annotations

from html import escape
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 560, 230, 46, 12, 26, 40
BULK = 0.15  # each set's middle 90 % should cover at least this share of the axis


def axis_for(values: np.ndarray, series: Sequence[np.ndarray] = ()) -> str:
    """'linear', 'log' or 'rank' for the pooled scores (module docstring): linear when the middle
    90 % of every series (default: of the pooled scores) covers BULK of the axis, else log10 when
    every score is positive and it covers a third of that there (a log axis keeps score values
    readable), else rank."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2 or v.max() == v.min():
        return "linear"
    parts = [np.asarray(s, np.float64) for s in series] or [v]
    parts = [p[np.isfinite(p)] for p in parts if np.isfinite(p).sum() >= 2]

    def covered(f) -> float:
        lo, hi = f(v.min()), f(v.max())
        return min(float(np.subtract(*np.percentile(f(p), [95, 5]))) / (hi - lo) for p in parts)

    if covered(lambda x: x) >= BULK:
        return "linear"
    if v.min() > 0 and covered(np.log10) >= BULK / 3:
        return "log"
    return "rank"


class Axis:
    """Score value <-> position in [0, 1] on one of the three axis kinds."""

    def __init__(self, kind: str, pooled: np.ndarray):
        self.kind = kind
        v = np.sort(np.asarray(pooled, np.float64)[np.isfinite(pooled)])
        self.pooled = v
        if kind == "log":
            self.lo, self.hi = np.log10(v[0]), np.log10(v[-1])
        elif kind == "linear":
            self.lo, self.hi = float(v[0]), float(v[-1])
        else:
            self.lo, self.hi = 0.0, 1.0
        if self.hi <= self.lo:
            self.hi = self.lo + 1.0

    def pos(self, x) -> np.ndarray:
        """Score values -> positions in [0, 1] (clipped)."""
        x = np.asarray(x, np.float64)
        if self.kind == "log":
            t = np.log10(np.maximum(x, self.pooled[0]))
        elif self.kind == "linear":
            t = x
        else:
            t = np.searchsorted(self.pooled, x, side="right") / len(self.pooled)
        return np.clip((t - self.lo) / (self.hi - self.lo), 0.0, 1.0)

    def ticks(self, n: int = 5) -> List[Tuple[float, str]]:
        """(position, label) pairs along the axis."""
        if self.kind == "rank":
            qs = np.linspace(0, 1, n)
            vals = np.quantile(self.pooled, qs)
            return [(float(q), _fmt(v)) for q, v in zip(qs, vals)]
        ts = np.linspace(self.lo, self.hi, n)
        vals = 10**ts if self.kind == "log" else ts
        return [(float((t - self.lo) / (self.hi - self.lo)), _fmt(v)) for t, v in zip(ts, vals)]

    def label(self) -> str:
        """The axis title."""
        return {"linear": "score", "log": "score (log scale)", "rank": "score (rank scale: equal width per share)"}[
            self.kind
        ]


def _fmt(v: float) -> str:
    a = abs(v)
    if a != 0 and (a >= 1e4 or a < 1e-2):
        return f"{v:.1e}"
    return f"{v:.3g}"


def _frame(title: str, body: List[str], xlabel: str, ylabel: str, width: int = W, height: int = H, left=PAD_L) -> str:
    pw, ph = width - left - PAD_R, height - PAD_T - PAD_B
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" class="plot">',
            f'<text x="{PAD_L}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
            f'<rect x="{left}" y="{PAD_T}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>',
            *body,
            f'<text x="{left + pw / 2}" y="{height - 6}" font-size="11" text-anchor="middle">{escape(xlabel)}</text>',
            f'<text x="12" y="{PAD_T + ph / 2}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 12 {PAD_T + ph / 2})">{escape(ylabel)}</text>',
            "</svg>",
        ]
    )


def _legend(names: Sequence[str], x0: float, y0: float, first_color: int = 0) -> List[str]:
    out = []
    for i, n in enumerate(names):
        y = y0 + 14 * i
        c = COLORS[(i + first_color) % len(COLORS)]
        out.append(f'<rect x="{x0}" y="{y - 9}" width="10" height="10" fill="{c}" fill-opacity="0.5" stroke="{c}"/>')
        out.append(f'<text x="{x0 + 14}" y="{y}" font-size="11">{escape(n)}</text>')
    return out


def histogram(
    series: Dict[str, np.ndarray], title: str, threshold: Optional[float] = None, bins: int = 50, axis: str = "auto"
) -> str:
    """Overlaid histograms (each set as its share of images per bin, so sets of different sizes
    compare), the threshold as a dashed line -> SVG text."""
    pooled = np.concatenate([np.asarray(v, np.float64).ravel() for v in series.values()])
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0:
        raise ValueError(f"histogram {title!r}: no finite scores to plot")
    ax = Axis(axis_for(pooled, list(series.values())) if axis == "auto" else axis, pooled)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    edges = np.linspace(0, 1, bins + 1)
    shares = {n: np.histogram(ax.pos(v), bins=edges)[0] / max(len(v), 1) for n, v in series.items()}
    top = max(float(s.max()) for s in shares.values()) or 1.0
    body = []
    for i, (name, s) in enumerate(shares.items()):
        c = COLORS[i % len(COLORS)]
        pts = [f"{PAD_L},{PAD_T + ph}"]
        for b in range(bins):
            x0, x1 = PAD_L + pw * edges[b], PAD_L + pw * edges[b + 1]
            y = PAD_T + ph * (1 - s[b] / top)
            pts += [f"{x0:.1f},{y:.1f}", f"{x1:.1f},{y:.1f}"]
        pts.append(f"{PAD_L + pw},{PAD_T + ph}")
        body.append(
            f'<polygon points="{" ".join(pts)}" fill="{c}" fill-opacity="0.35" stroke="{c}" stroke-width="1" '
            f'class="series" data-name="{escape(name)}"/>'
        )
    body += _ticks(ax, pw, ph)
    if threshold is not None and np.isfinite(threshold):
        x = PAD_L + pw * float(ax.pos(threshold))
        body.append(
            f'<line x1="{x:.1f}" y1="{PAD_T}" x2="{x:.1f}" y2="{PAD_T + ph}" stroke="#000" stroke-width="1.5" '
            f'stroke-dasharray="5,3" class="threshold" data-value="{threshold:.6g}"/>'
        )
        body.append(f'<text x="{x + 3:.1f}" y="{PAD_T + 11}" font-size="10">threshold {_fmt(threshold)}</text>')
    body += _legend(list(series), PAD_L + pw - 150, PAD_T + 14)
    return _frame(title, body, ax.label(), "share of the set's images")


def _ticks(ax: Axis, pw: float, ph: float) -> List[str]:
    out = []
    ticks = ax.ticks()
    for i, (p, lab) in enumerate(ticks):
        x = PAD_L + pw * p
        anchor = "start" if i == 0 else "end" if i == len(ticks) - 1 else "middle"  # the ends stay inside
        out.append(f'<line x1="{x:.1f}" y1="{PAD_T + ph}" x2="{x:.1f}" y2="{PAD_T + ph + 4}" stroke="#888"/>')
        out.append(f'<text x="{x:.1f}" y="{PAD_T + ph + 15}" font-size="10" text-anchor="{anchor}">{lab}</text>')
    return out


def roc(curves: Dict[str, Tuple[np.ndarray, np.ndarray]], title: str) -> str:
    """ROC curves {set: (fpr, tpr)} with the chance diagonal -> SVG text (square plot)."""
    size = 300
    pw, ph = size - PAD_L - PAD_R, size - PAD_T - PAD_B
    body = [
        f'<line x1="{PAD_L}" y1="{PAD_T + ph}" x2="{PAD_L + pw}" y2="{PAD_T}" stroke="#aaa" stroke-dasharray="2,3"/>'
    ]
    for i, (fpr, tpr) in enumerate(curves.values()):
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 400)).astype(int))
        pts = " ".join(f"{PAD_L + pw * f:.1f},{PAD_T + ph * (1 - t):.1f}" for f, t in zip(fpr[keep], tpr[keep]))
        c = COLORS[(i + 1) % len(COLORS)]
        body.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="1.5"/>')
    for v in (0, 0.5, 1):
        body.append(
            f'<text x="{PAD_L + pw * v:.1f}" y="{PAD_T + ph + 15}" font-size="10" text-anchor="middle">{v:g}</text>'
        )
        body.append(
            f'<text x="{PAD_L - 4}" y="{PAD_T + ph * (1 - v) + 3:.1f}" font-size="10" text-anchor="end">{v:g}</text>'
        )
    legend = _legend(list(curves), PAD_L + pw - 120, PAD_T + ph - 14 * len(curves), first_color=1)  # ID: colour 0
    return _frame(title, body + legend, "FPR (ID flagged as OOD)", "TPR (OOD detected)", size, size)


def bars(items: Sequence[Tuple[str, float, Optional[float], Optional[float]]], title: str, ref: float = 0.5) -> str:
    """Horizontal bars (label, value in [0, 1], interval lo, hi) with a reference line (chance) -> SVG."""
    row, left = 18, 150
    height = PAD_T + row * len(items) + PAD_B
    pw = W - left - PAD_R - 34  # room for the value after a full bar
    body = []
    for i, (label, v, lo, hi) in enumerate(items):
        y = PAD_T + row * i
        body.append(f'<text x="{left - 6}" y="{y + 12}" font-size="11" text-anchor="end">{escape(label)}</text>')
        body.append(f'<rect x="{left}" y="{y + 3}" width="{pw * v:.1f}" height="{row - 6}" fill="{COLORS[0]}"/>')
        if lo is not None and hi is not None:
            body.append(
                f'<line x1="{left + pw * lo:.1f}" y1="{y + row / 2}" x2="{left + pw * hi:.1f}" y2="{y + row / 2}" '
                'stroke="#000" stroke-width="1.5"/>'
            )
        body.append(f'<text x="{left + pw * v + 4:.1f}" y="{y + 12}" font-size="10">{100 * v:.1f}</text>')
    x = left + pw * ref
    body.append(
        f'<line x1="{x:.1f}" y1="{PAD_T}" x2="{x:.1f}" y2="{height - PAD_B}" stroke="#888" stroke-dasharray="3,3"/>'
    )
    return _frame(title, body, f"AUROC (dashed: chance, {ref:g})", "", W, height, left=left)
