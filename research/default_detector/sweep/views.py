"""Step `views`: detectors of more than one feature view (issue 32), on the sweep's data and rule.

A view is a backbone at an input size, optionally on the horizontally flipped image
(`lite2@160`, `lite2@160:flip`). Each view gets its own ridge-Mahalanobis head, fitted on the
9,000 training images the run would train on; a detector of several views scores the mean of its
views' scores, each standardised by the median / IQR of its scores on the 1,000 held-out training
images (the robust standardisation of the package's sums). Every candidate is scored on the same
ID test images, OOD sets and probes, and all candidates share one joint paired bootstrap.

Candidates are a fixed family, not a search: every single view, every pair, and the triples of the
views the issue names (so the choice is not the best of hundreds of subsets on two OOD sets).
Cost is estimated from the sweep's own timing run (`pareto_time.json`): a view costs what its
point's headline path costs there (a flip view runs the same graph on the flipped image), and a
detector costs the sum of its views.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from .points import evidence, features, load_sets, parse_config, split

RESULTS = Path(__file__).resolve().parents[1] / "results"
VIEWS = (
    "lite2@160",
    "lite2@160:flip",
    "lite1@128",
    "lite2@128",
    "lite0@128",
    "lite1@128:flip",
    "lite0@96",
    "lite2@96",
    "lite1@96",
    "lite2@128:flip",
    "lite0@128:flip",
    "lite0@96:flip",
)
NAMED = ("lite2@160", "lite2@160:flip", "lite1@128", "lite2@128")  # the frontier views
HEAD = "maha_ridge"
DEFAULT = "lite2@160"
CRITERIA = ("tinyimagenet", "dtd", "probe_mean")


def parse_view(view: str):
    """'lite1@128:flip' -> ('efficientnet-lite1', 128, True)."""
    point, _, mod = view.partition(":")
    bb, size = parse_config(point)
    return bb, size, mod == "flip"


def view_features(view: str, images: np.ndarray, desc: str) -> np.ndarray:
    bb, size, flip = parse_view(view)
    x = np.ascontiguousarray(images[:, :, ::-1]) if flip else images
    return features(bb, size, x, desc)


def view_scores(view: str, sets: dict) -> dict:
    """{'held_out': [1000], set: [N] ...} of this view's ridge-Mahalanobis head."""
    from dlsr_deploy.model.backbones import build_backbone
    from dlsr_deploy.scoring import DensityHead

    bb, _, _ = parse_view(view)
    z = {k: view_features(view, v, f"{view} {k}") for k, v in sets.items()}
    hold, tr = split(len(z["train"]))
    head = DensityHead.fit(HEAD, z["train"][tr], tuple(build_backbone(bb).tap_channels))
    out = {"held_out": head.score(z["train"][hold])}
    out.update({k: head.score(v) for k, v in z.items() if k != "train"})
    return out


def candidates(views=VIEWS) -> list:
    """Singles, pairs, and triples of the named views: tuples of view names."""
    out = [(v,) for v in views] + list(itertools.combinations(views, 2))
    return out + list(itertools.combinations([v for v in views if v in NAMED], 3))


def name_of(views) -> str:
    return " + ".join(views)


def combined(views, per_view: dict) -> dict:
    """{set: scores} of a detector of these views: the mean of robustly standardised view scores."""
    from dlsr_deploy.scoring import Combination

    if len(views) == 1:
        return per_view[views[0]]
    c = Combination.fit(list(views), "sum", {v: per_view[v]["held_out"] for v in views})
    return {k: c.combine({v: per_view[v][k] for v in views}) for k in per_view[views[0]]}


def view_costs() -> dict:
    """{view: (ORT b1 ms, ORT b32 ms per image)} from the sweep's timing run."""
    timing = json.loads((RESULTS / "pareto_time.json").read_text())
    rows = {r["label"]: r["timing"]["ort-cpu"] for r in timing["rows"] if r["path"] == "headline"}
    return {v: (rows[v.split(":")[0]]["1"]["p50_ms"], 1e3 / rows[v.split(":")[0]]["32"]["images_per_s"]) for v in VIEWS}


def step_views(args) -> dict:
    from dlsr_deploy.selection import compare, evidence_row

    sets = load_sets(Path(args.data))
    views = [v for v in VIEWS if v in args.views] if args.views else list(VIEWS)
    per_view = {}
    for v in views:
        per_view[v] = view_scores(v, sets)
        print(f"{v}: features and head done", flush=True)
    cost = view_costs()
    cands = candidates(views)
    scores = {name_of(c): combined(c, per_view) for c in cands}
    by_set = {k: {n: s[k] for n, s in scores.items()} for k in scores[name_of((DEFAULT,))] if k != "held_out"}
    ev = evidence(by_set, args.n_boot)
    rows = []
    for c in cands:
        n = name_of(c)
        cmp = compare(ev, DEFAULT, n) if n != DEFAULT else None
        rows.append(
            {
                "name": n,
                "views": list(c),
                "auroc": {k: v for k, v in evidence_row(ev, n).items() if k in CRITERIA},
                "ort_b1_ms": sum(cost[v][0] for v in c),
                "ort_b32_ms_per_image": sum(cost[v][1] for v in c),
                "vs_default": cmp,
            }
        )
    base = next(r for r in rows if r["name"] == DEFAULT)
    for r in rows:
        r["cost_x_default"] = r["ort_b32_ms_per_image"] / base["ort_b32_ms_per_image"]
        r["worst"] = min(r["auroc"][s]["auroc"] for s in ("tinyimagenet", "dtd"))
    res = {"views": views, "head": HEAD, "rows": rows, "sets": {k: int(len(v)) for k, v in sets.items()}}
    res["profiles"] = profiles(rows)
    return res


def profiles(rows: list, bounds=None) -> dict:
    """The rule inside each cost bound (x the default's batch-32 cost): the reference is the candidate
    best on its worst real set; eligible are those at or above its interval's lower end on each real
    set and the probe mean; the profile is the cheapest eligible one (batch-32 cost)."""
    from dlsr_deploy.profiles import PROFILE_BOUNDS

    out = {}
    for prof, bound in (bounds or PROFILE_BOUNDS).items():
        inside = [r for r in rows if r["cost_x_default"] <= bound + 1e-9]
        best = max(inside, key=lambda r: r["worst"])
        ok = [r for r in inside if all(r["auroc"][k]["auroc"] >= best["auroc"][k]["lo"] for k in CRITERIA)]
        pick = min(ok, key=lambda r: r["ort_b32_ms_per_image"])
        out[prof] = {
            "bound": bound,
            "reference": best["name"],
            "eligible": [r["name"] for r in ok],
            "pick": pick["name"],
        }
    return out


def cell(a: dict) -> str:
    """'86.61 [86.03, 87.15]' from {auroc, lo, hi} in [0, 1]."""
    return f"{100 * a['auroc']:.2f} [{100 * a['lo']:.2f}, {100 * a['hi']:.2f}]"


def tin_delta(c) -> str:
    """'+0.94 [+0.66, +1.32]': a selection.compare record's Tiny ImageNet difference ('-' for None)."""
    if c is None:
        return "-"
    t = c["real"]["tinyimagenet"]
    return f"{100 * t['delta']:+.2f} [{100 * t['lo']:+.2f}, {100 * t['hi']:+.2f}]"


def views_markdown(res: dict) -> str:
    from dlsr_deploy.machine import describe

    lines = [
        "# Detectors of several views (`python -m research.default_detector.sweep views`)",
        "",
        f"Machine: {describe()}. Head per view: `{res['head']}` fitted on 9,000 CIFAR-10 training images; views "
        "combined by the mean of their scores standardised on the 1,000 held-out ones. AUROC in % with 95 % "
        "joint paired-bootstrap intervals (one resample for every candidate); ID = CIFAR-10 test (10,000). "
        "Cost = the sum of the views' headline-path costs in the sweep's timing run (`pareto_time.json`, "
        "ORT CPU), x default = batch-32 cost per image over the default's (lite2@160).",
        "",
        "## Profiles (the rule inside each cost bound)",
        "",
        "| profile | bound (x default b32 cost) | reference (best on worst real set) | eligible | pick |",
        "| --- | --- | --- | --- | --- |",
    ]
    for p, v in res["profiles"].items():
        lines.append(f"| {p} | {v['bound']} | {v['reference']} | {len(v['eligible'])} | **{v['pick']}** |")
    lines += [
        "",
        "## Every candidate",
        "",
        "| views | TIN AUROC [95 %] | DTD AUROC [95 %] | probe mean [95 %] | x default b32 cost | est. ORT b1 ms | "
        "TIN - default [95 %] | not worse than default |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(res["rows"], key=lambda r: r["cost_x_default"]):
        c = r["vs_default"]
        d = tin_delta(c)
        nw = "-" if c is None else ("yes" if c["not_worse"] else "no")
        lines.append(
            f"| {r['name']} | "
            + " | ".join(cell(r["auroc"][k]) for k in CRITERIA)
            + f" | {r['cost_x_default']:.2f} | {r['ort_b1_ms']:.1f} | {d} | {nw} |"
        )
    return "\n".join(lines)
