"""Step `profiles`: the profiles' detectors built as bundles and timed in one run (issue 32).

The `views` step picks each profile by the rule on accuracy, with costs estimated from the sweep's
single-view timing run. This step builds the picks (and the reference points named below) as real
bundles — a stub run per detector (2 LFDN epochs, small width: the headline path of a density or
ensemble headline never runs the denoiser) on the sweep's 10k training images, exported FP32 —
and times their headline path in one process, interleaved rounds, ORT CPU and OpenVINO, batch 1
and 32. A profile's cost is its batch-32 time per image over the balanced profile's, in this run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .timing import BATCHES, export, time_all
from .views import RESULTS, cell, parse_view

EXTRA = ("lite2@160 + lite2@160:flip", "lite2@160 + lite1@128")  # the named pairs, as reference


def folder_name(name: str) -> str:
    """'lite2@160 + lite1@128:flip' -> 'lite2-160+lite1-128-flip' (a bundle name's characters)."""
    return name.replace(" + ", "+").replace("@", "-").replace(":", "-")


def stub(runs: Path, data: Path, name: str) -> Path:
    """A stub run of the detector `name` ('lite2@160 + lite1@128'): primary = the first view."""
    from dlsr_deploy.config import FeatureConfig, TrainConfig, ViewConfig
    from dlsr_deploy.pipeline import run_train

    views = name.split(" + ")
    views.sort(key=lambda v: v.endswith(":flip"))  # the same ensemble, a view that is not flipped first
    bb, size, _ = parse_view(views[0])
    run = runs / ("stub-" + folder_name(name))
    if not (run / "run.json").exists() or json.loads((run / "run.json").read_text()).get("status") != "done":
        run_train(
            str(data / "cifar10_train.npz"), run, FeatureConfig(backbone=bb, input_size=size, native_size=32),
            preset="small", tcfg=TrainConfig(epochs=2), feature_engine="ort", native_size="given", force=True,
            views=tuple(ViewConfig.parse(v) for v in views[1:]),
        )  # fmt: skip
    return run


def step_profiles(args) -> dict:
    from dlsr_deploy.machine import describe, versions

    views = json.loads((RESULTS / "pareto_views.json").read_text())
    picks = {p: v["pick"] for p, v in views["profiles"].items()}
    refs = [v["reference"] for v in views["profiles"].values()]  # the most accurate in each bound
    names = list(dict.fromkeys([picks["balanced"], *picks.values(), *refs, *EXTRA]))
    data, runs, out = Path(args.data), Path(args.runs), Path("export/profiles")
    rows = {r["name"]: r for r in views["rows"]}
    todo = []
    for n in names:
        headline = "ensemble" if " + " in n else "maha_ridge"
        todo.append(
            (n, export(stub(runs, data, n), out / folder_name(n), data, headline), "headline")
        )
    images = np.load(data / "cifar10_test.npz")["images"][::97][:64]
    times = time_all(todo, images, rounds=args.rounds)
    base = times[picks["balanced"]]
    res_rows = []
    for n, b, _ in todo:
        t = times[n]
        res_rows.append(
            {
                "name": n,
                "profile": [p for p, v in picks.items() if v == n],
                "bundle": str(b),
                "timing": t,
                "cost_x_balanced": {
                    be: (1.0 / t[be]["32"]["images_per_s"]) / (1.0 / base[be]["32"]["images_per_s"]) for be in t
                },
                "estimated_cost_x_default": rows[n]["cost_x_default"] if n in rows else None,
                "auroc": rows[n]["auroc"] if n in rows else None,
            }
        )
    res = {"machine": describe(), "versions": versions(("onnxruntime", "openvino", "numpy")), "picks": picks}
    res["bounds"] = {p: v["bound"] for p, v in views["profiles"].items()}
    res["rows"] = res_rows
    return res


def profiles_markdown(res: dict) -> str:
    lines = [
        "# The profiles as bundles, timed in one run (`python -m research.default_detector.sweep profiles`)",
        "",
        f"Machine: {res['machine']}; {res['versions']}. Headline path (the decision), FP32 bundles, interleaved "
        "rounds, p50 of every call; images/s = batch / p50. x balanced = batch-32 time per image over the balanced "
        "profile's in this run. AUROC from `pareto_views.md` (10k training images, joint paired bootstrap). A flip "
        "view alone (lite2@160:flip) is lite2@160's graph on mirrored images: its row times that graph.",
        "",
        "| detector | profile | bound | ORT b1 ms | ORT b32 img/s | OpenVINO b1 ms | OpenVINO b32 img/s | "
        "x balanced ORT | "
        "x balanced OpenVINO | est. x (sweep timing) | TIN [95 %] | DTD [95 %] | probe mean [95 %] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in res["rows"]:
        t, prof = r["timing"], ", ".join(r["profile"]) or "-"
        bound = ", ".join(f"<= {res['bounds'][p]}x" for p in r["profile"]) or "-"
        acc = (
            " | ".join(cell(r["auroc"][k]) for k in ("tinyimagenet", "dtd", "probe_mean"))
            if r["auroc"]
            else "- | - | -"
        )
        est = "-" if r["estimated_cost_x_default"] is None else f"{r['estimated_cost_x_default']:.2f}"
        lines.append(
            f"| {r['name']} | {prof} | {bound} | {t['ort-cpu']['1']['p50_ms']:.2f} | "
            f"{t['ort-cpu']['32']['images_per_s']:.0f} | "
            f"{t['openvino']['1']['p50_ms']:.2f} | {t['openvino']['32']['images_per_s']:.0f} | "
            f"{r['cost_x_balanced']['ort-cpu']:.2f} | {r['cost_x_balanced']['openvino']:.2f} | {est} | {acc} |"
        )
    return "\n".join(lines)


__all__ = ["step_profiles", "profiles_markdown", "BATCHES"]
