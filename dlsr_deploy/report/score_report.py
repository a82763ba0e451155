"""`dlsr-score --report OUT.html`: a day of production images at a glance (issue 31): the share
over the threshold, the scores against the bundle's own ID calibration scores, and the most OOD
images first. Made from the rows dlsr-score writes and the manifest; runs without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from dlsr_deploy.report import html, svg

GALLERY = 24


@dataclass
class ScoreView:
    """What the page is made from (names and scores, no paths)."""

    bundle: str  # the bundle's name (manifest), not its path
    precision: str
    backend: str
    score_name: str
    threshold: Optional[float]
    center: float
    scale: float
    scores: np.ndarray  # the headline of every readable input, in input order
    ids: List[str]  # display ids of those inputs
    images: np.ndarray  # the gallery's images, most OOD first
    image_ids: List[str]
    image_scores: np.ndarray
    id_reference: Optional[np.ndarray] = None  # the bundle's ID calibration scores (as quantiles)
    id_reference_how: str = ""
    n_unreadable: int = 0
    meta: List[str] = field(default_factory=list)


def score_page(v: ScoreView) -> str:
    """Summary line, histogram against the ID calibration scores, the most OOD images."""
    n = len(v.scores)
    over = int(np.sum(v.scores > v.threshold)) if v.threshold is not None else 0
    if v.threshold is None:
        text = "this bundle has no threshold (no decisions)"
    else:
        text = (
            f"{over} of {n} images ({100 * over / max(n, 1):.1f} %) over the threshold: "
            f"{v.score_name} > {v.threshold:.6g} is OOD (higher = more OOD)"
        )
    if v.n_unreadable:
        text += f"; {v.n_unreadable} input(s) could not be read (rows with an error)"
    summary = f'<p class="summary" data-over="{over}" data-n="{n}">{html.escape(text)}</p>'
    series = {"scored images": v.scores}
    if v.id_reference is not None:
        series["ID calibration"] = v.id_reference
    hist = svg.histogram(series, f"{v.score_name}: these images vs the bundle's ID calibration", threshold=v.threshold)
    if v.id_reference is not None:
        hist += f'<p class="meta">ID calibration: {html.escape(v.id_reference_how)}.</p>'

    def norm(s):
        return (s - v.center) / v.scale

    items = html.score_items(v.images, v.image_scores, np.arange(len(v.images)), v.threshold, norm, ids=v.image_ids)
    gallery = html.gallery(
        f"The {len(items)} most OOD images",
        items,
        "Highest score first. Red frame: over the threshold (flagged OOD); green: under it. "
        "Normalised: 0 = median ID calibration score, 1.0 = threshold.",
        "most-ood",
    )
    sections = [summary, f'<div class="plots">{hist}</div>', gallery]
    return html.page(f"DLSR scores: {v.bundle}", v.meta, sections)


def reference_scores(threshold, golden: Optional[dict], headline_output: str):
    """(ID calibration scores, how) for the histogram: the manifest's 101 quantiles of the
    calibration scores, else the golden set's ID images' scores, else (None, '')."""
    q = getattr(threshold, "id_quantiles", None)
    if q:
        return np.asarray(q, np.float64), f"{len(q)} quantiles of the headline on held-out ID images"
    if golden is not None and f"bundle/{headline_output}" in golden and "is_ood" in golden:
        s = np.asarray(golden[f"bundle/{headline_output}"], np.float64)[~np.asarray(golden["is_ood"], bool)]
        if len(s):
            return s, f"the bundle's {len(s)} golden ID images"
    return None, ""
