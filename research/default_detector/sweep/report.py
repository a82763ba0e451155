"""pareto.py report: the accuracy-vs-latency frontier of the sweep and the default it picks.

Issue 23, with the selection rule of issue 22: the best point is the (backbone, input
size) whose chosen headline has the highest AUROC on its worst real OOD set; a point is eligible
when its headline's AUROC is within the best point's 95 % bootstrap interval (at or above the
interval's lower end) on each real OOD set and on the mean over the shift probes; the default is
the eligible point with the lowest batch-1 p50 on ONNX Runtime CPU (headline path). The LFDN size
and K come from `pareto.py lfdn` at that point (held-out ID loss and cost only).
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
CRITERIA = ("tinyimagenet", "dtd", "probe_mean")


def points() -> list:
    heads = json.loads((RESULTS / "pareto_heads.json").read_text())
    timing = json.loads((RESULTS / "pareto_time.json").read_text())
    t = {r["label"]: r for r in timing["rows"]}
    out = []
    for name, c in heads["configs"].items():
        row = c["table"][c["chosen"]]
        tr = t.get(name)
        out.append(
            {
                "config": name,
                "headline": c["chosen"],
                "auroc": {k: row[k] for k in CRITERIA},
                "worst": min(row["tinyimagenet"]["auroc"], row["dtd"]["auroc"]),
                "ort_b1_ms": tr["timing"]["ort-cpu"]["1"]["p50_ms"] if tr else None,
                "ort_b32_ips": tr["timing"]["ort-cpu"]["32"]["images_per_s"] if tr else None,
                "ov_b1_ms": tr["timing"]["openvino"]["1"]["p50_ms"] if tr else None,
                "ov_b32_ips": tr["timing"]["openvino"]["32"]["images_per_s"] if tr else None,
                "bytes": tr["bytes"] if tr else None,
                "peak_rss_mb": tr["peak_rss_mb"] if tr else None,
            }
        )
    return out


def frontier(pts: list) -> list:
    """Points no other point beats on both batch-1 latency and worst-set AUROC."""
    timed = [p for p in pts if p["ort_b1_ms"] is not None]
    return [
        p["config"]
        for p in timed
        if not any(
            q["ort_b1_ms"] <= p["ort_b1_ms"]
            and q["worst"] >= p["worst"]
            and (q["ort_b1_ms"] < p["ort_b1_ms"] or q["worst"] > p["worst"])
            for q in timed
        )
    ]


def choose_default(pts: list) -> dict:
    best = max(pts, key=lambda p: p["worst"])
    eligible = [
        p
        for p in pts
        if p["ort_b1_ms"] is not None and all(p["auroc"][k]["auroc"] >= best["auroc"][k]["lo"] for k in CRITERIA)
    ]
    pick = min(eligible, key=lambda p: p["ort_b1_ms"])
    return {
        "best": best["config"],
        "eligible": [p["config"] for p in eligible],
        "default": pick["config"],
        "headline": pick["headline"],
    }


def step_report(args) -> dict:
    from dlsr_deploy.machine import describe

    pts = points()
    res = {
        "rule": __doc__.split("\n\n")[1].replace("\n", " "),
        "machine": describe(),
        "points": pts,
        "frontier": frontier(pts),
        "choice": choose_default(pts),
    }
    lfdn_path = RESULTS / "pareto_lfdn.json"
    if lfdn_path.exists():
        lf = json.loads(lfdn_path.read_text())["configs"]
        res["lfdn"] = {k: v["choice"] for k, v in lf.items()}
    plot(res, RESULTS / "pareto.png")
    res["markdown"] = markdown(res)
    return res


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlsr_deploy.io import atomic_write

    fig, ax = plt.subplots(figsize=(7.5, 5))
    front = set(res["frontier"])
    for p in res["points"]:
        if p["ort_b1_ms"] is None:
            continue
        style = "o" if p["config"] in front else "x"
        color = "C3" if p["config"] == res["choice"]["default"] else ("C0" if p["config"] in front else "0.5")
        ax.plot(p["ort_b1_ms"], 100 * p["worst"], style, color=color, ms=8)
        ax.annotate(
            f"{p['config']}\n{p['headline']}",
            (p["ort_b1_ms"], 100 * p["worst"]),
            fontsize=6,
            xytext=(4, 2),
            textcoords="offset points",
        )
    fr = sorted((p for p in res["points"] if p["config"] in front), key=lambda p: p["ort_b1_ms"])
    ax.plot([p["ort_b1_ms"] for p in fr], [100 * p["worst"] for p in fr], "-", color="C0", lw=1, label="frontier")
    ax.set_xlabel("batch-1 p50, ONNX Runtime CPU, headline path (ms)")
    ax.set_ylabel("AUROC on the worst shared OOD set (%)")
    ax.set_title(f"accuracy vs latency; red = the default ({res['choice']['default']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


def markdown(res: dict) -> str:
    ch = res["choice"]
    lines = [
        "# The sweep's frontier and the default (`python -m research.default_detector.sweep report`)",
        "",
        f"Machine: {res['machine']}.",
        "",
        f"Rule: {res['rule']}",
        "",
        f"Best point: {ch['best']}; eligible (within its intervals on TIN, DTD and the probe mean): "
        f"{', '.join(ch['eligible'])}; **default: {ch['default']} with headline `{ch['headline']}`**.",
        "",
    ]
    if "lfdn" in res:
        lines += [
            f"LFDN at {k}: {v['variant']} (width {v['width']}, {v['blocks']} blocks), K = {v['k']} ({v['why']})"
            for k, v in res["lfdn"].items()
        ] + [""]
    lines += [
        "| point | headline | TIN AUROC [95 %] | DTD AUROC [95 %] | probe mean [95 %] | ORT b1 ms | ORT b32 img/s | "
        "OpenVINO b1 ms | OpenVINO b32 img/s | bundle MB | peak RSS MB | frontier |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in res["points"]:
        cells = [
            f"{100 * p['auroc'][k]['auroc']:.2f} [{100 * p['auroc'][k]['lo']:.2f}, {100 * p['auroc'][k]['hi']:.2f}]"
            for k in CRITERIA
        ]
        f = lambda x, fmt: "-" if x is None else fmt.format(x)  # noqa: E731
        lines.append(
            f"| {p['config']} | {p['headline']} | " + " | ".join(cells) + f" | {f(p['ort_b1_ms'], '{:.2f}')} | "
            f"{f(p['ort_b32_ips'], '{:.0f}')} | {f(p['ov_b1_ms'], '{:.2f}')} | {f(p['ov_b32_ips'], '{:.0f}')} | "
            f"{f(p['bytes'] and p['bytes'] / 1e6, '{:.1f}')} | {f(p['peak_rss_mb'], '{:.0f}')} | "
            f"{'yes' if p['config'] in res['frontier'] else ''} |"
        )
    return "\n".join(lines)
