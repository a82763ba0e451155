"""Step `joint`: one head over the views' joined z0 against the mean of standardised per-view heads.

The package combines views as the issue asks: a ridge-Mahalanobis head per view, their scores
standardised on held-out ID and averaged (`views` step). A joint head — one ridge Mahalanobis on the
concatenated z0 of all views — also sees how the views' features co-vary. Same data, same heads'
training images, one joint paired bootstrap with the sum variants, for the detectors the `views`
step puts at the top: does the joint head get past the sum beyond the interval on the worst real set?
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .points import evidence, load_sets, split
from .views import CRITERIA, DEFAULT, HEAD, combined, parse_view, view_features, view_scores

DETECTORS = (
    "lite2@128 + lite1@128:flip",
    "lite2@160 + lite1@128",
    "lite2@160 + lite2@160:flip",
    "lite2@160:flip + lite1@128 + lite2@128",
)


def joint_scores(views, sets: dict) -> dict:
    """{'held_out' and every set: scores} of one ridge-Mahalanobis head on the joined z0 of the views."""
    from dlsr_deploy.model.backbones import build_backbone
    from dlsr_deploy.scoring import DensityHead

    z = {k: np.concatenate([view_features(v, x, f"{v} {k}") for v in views], axis=1) for k, x in sets.items()}
    sizes = tuple(c for v in views for c in build_backbone(parse_view(v)[0]).tap_channels)
    hold, tr = split(len(z["train"]))
    head = DensityHead.fit(HEAD, z["train"][tr], sizes)
    return {"held_out": head.score(z["train"][hold]), **{k: head.score(v) for k, v in z.items() if k != "train"}}


def step_joint(args) -> dict:
    from dlsr_deploy.selection import compare, evidence_row

    sets = load_sets(Path(args.data))
    views = sorted({v for d in DETECTORS for v in d.split(" + ")} | {DEFAULT})
    per_view = {v: view_scores(v, sets) for v in views}
    scores = {DEFAULT: per_view[DEFAULT]}
    for d in DETECTORS:
        vs = tuple(d.split(" + "))
        scores[f"sum: {d}"] = combined(vs, per_view)
        scores[f"joint: {d}"] = joint_scores(vs, sets)
    by_set = {k: {n: s[k] for n, s in scores.items()} for k in scores[DEFAULT] if k != "held_out"}
    ev = evidence(by_set, args.n_boot)
    rows = []
    for n in scores:
        row = {"name": n, "auroc": {k: v for k, v in evidence_row(ev, n).items() if k in CRITERIA}}
        if n.startswith("joint: "):
            row["vs_sum"] = compare(ev, "sum: " + n[len("joint: ") :], n)
        rows.append(row)
    return {"head": HEAD, "rows": rows}


def joint_markdown(res: dict) -> str:
    from dlsr_deploy.machine import describe

    from .views import cell, tin_delta

    lines = [
        "# One head over the joined views against the sum of per-view heads "
        "(`python -m research.default_detector.sweep joint`)",
        "",
        f"Machine: {describe()}. The `views` step's data and heads' training images; sum = the mean of per-view "
        f"`{res['head']}` scores standardised on held-out ID (what the package ships); joint = one `{res['head']}` on "
        "the concatenated z0. AUROC in % with 95 % joint paired-bootstrap intervals; joint - sum: the paired "
        "difference on Tiny ImageNet, and whether the joint head replaces the sum by the selection rule.",
        "",
        "| detector | TIN AUROC [95 %] | DTD AUROC [95 %] | probe mean [95 %] | TIN joint - sum [95 %] | "
        "replaces the sum |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in res["rows"]:
        c = r.get("vs_sum")
        d = tin_delta(c)
        rep = "-" if c is None else ("yes" if c["replaces"] else "no")
        lines.append(f"| {r['name']} | " + " | ".join(cell(r["auroc"][k]) for k in CRITERIA) + f" | {d} | {rep} |")
    return "\n".join(lines)
