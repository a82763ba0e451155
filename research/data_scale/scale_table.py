"""Issue 11 tables from the committed dlsr-eval files: research/data_scale/results/scale_<run>.json.

    python -m research.data_scale.scale_table      -> research/data_scale/results/scale_summary.{md,json}

One table per training run (10k / 30k / 50k images, with or without flipped views): AUROC /
FPR95 on Tiny ImageNet and DTD for every score, then the headline choice: the score whose
worst-set AUROC is highest over all runs (a score must hold on *every* set, not win one),
next to the Mahalanobis-on-z0 baseline and today's MFsim. The training curve (held-out ID
loss per run) comes from runs/<run>/run.json when present, else from the eval file.
"""

import json
import sys
from pathlib import Path

from dlsr_deploy.io import atomic_write_text

R = Path(__file__).resolve().parent / "results"
RUNS = ("c10k", "c10k-flip", "c30k", "c50k")
SETS = ("tinyimagenet", "dtd")


def load(run):
    p = R / f"scale_{run}.json"
    return json.loads(p.read_text()) if p.exists() else None


def rows_of(d):
    m = dict(d["runs"][0]["metrics"])
    if d.get("baselines"):
        m["mahalanobis (ridge baseline)"] = d["baselines"]["mahalanobis"]
        m.update({k: v for k, v in d["baselines"].items() if k.startswith("knn")})
    return m


def plot_curve(summary):
    """AUROC of a few scores against the number of training vectors, one panel per OOD set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(
        (r for r in summary["runs"].items() if r[1]["n_train_vectors"]), key=lambda kv: kv[1]["n_train_vectors"]
    )
    if not runs:
        return
    fig, axes = plt.subplots(1, len(SETS), figsize=(5 * len(SETS), 3.8))
    for ax, k in zip(axes, SETS):
        for score in (
            "mfsim",
            "mse",
            "gauss_layer",
            "maha_lw",
            "sum_mfsim_gauss_layer",
            "mahalanobis (ridge baseline)",
        ):
            pts = [(v["n_train_vectors"], 100 * v["auroc"][score][k], r) for r, v in runs if score in v["auroc"]]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=score)
        ax.set_xlabel("training vectors (flipped views count)")
        ax.set_ylabel(f"AUROC on {k} (%)")
        ax.set_title(f"CIFAR-10 vs {k}", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(R / "scale_summary.png", dpi=110)
    plt.close(fig)


def main():
    found = {r: load(r) for r in RUNS}
    found = {r: d for r, d in found.items() if d}
    if not found:
        sys.exit("no research/data_scale/results/scale_*.json yet: run research/data_scale/data_scale.sh")
    md, summary = ["# DLSR at scale: every score per training run", ""], {"runs": {}}
    md.append("AUROC / FPR95 in %, higher score = more OOD, ID = CIFAR-10 test (10,000), fair 32 px protocol.")
    for run, d in found.items():
        info_p = Path("runs") / run / "run.json"
        info = json.loads(info_p.read_text()) if info_p.exists() else {}
        m = rows_of(d)
        summary["runs"][run] = {
            "n_train_vectors": info.get("n_train_vectors"),
            "best_epoch": info.get("best_epoch"),
            "best_heldout_loss": info.get("best_heldout_loss"),
            "heldout_losses": info.get("heldout_losses"),
            "auroc": {s: {k: per[k]["auroc"] for k in SETS} for s, per in m.items()},
            "fpr95": {s: {k: per[k]["fpr95"] for k in SETS} for s, per in m.items()},
        }
        md += [
            "",
            f"## {run}: {info.get('n_train_vectors', '?')} training vectors, model = EMA of epoch "
            f"{info.get('best_epoch', '?')} (held-out ID loss {info.get('best_heldout_loss') or float('nan'):.4f})",
            "",
        ]
        md.append("| score | TinyImageNet AUROC / FPR95 | DTD AUROC / FPR95 | mean AUROC | min AUROC |")
        md.append("|---|---|---|---|---|")
        for s, per in m.items():
            a = [100 * per[k]["auroc"] for k in SETS]
            f = [100 * per[k]["fpr95"] for k in SETS]
            md.append(f"| {s} | {a[0]:.2f} / {f[0]:.2f} | {a[1]:.2f} / {f[1]:.2f} | {sum(a) / 2:.2f} | {min(a):.2f} |")
    # headline choice: every score's worst set, over every run
    scores = sorted({s for r in summary["runs"].values() for s in r["auroc"]})
    md += [
        "",
        "## Choosing the headline",
        "",
        "Per score: the lowest AUROC over both sets, and the mean, for each run. The default headline is the score "
        "with the best mean AUROC over both sets in every run (it must hold on both sets, not win one).",
        "",
    ]
    md.append("| score | " + " | ".join(f"{r} min / mean" for r in found) + " |")
    md.append("|---|" + "---|" * len(found))
    best = {
        r: max(summary["runs"][r]["auroc"], key=lambda k: sum(summary["runs"][r]["auroc"][k].values())) for r in found
    }
    for s in scores:
        cells = []
        for r in found:
            a = summary["runs"][r]["auroc"].get(s)
            mark = "**" if best[r] == s else ""
            cells.append(f"{100 * min(a.values()):.2f} / {mark}{100 * sum(a.values()) / 2:.2f}{mark}" if a else "-")
        md.append(f"| {s} | " + " | ".join(cells) + " |")
    plot_curve(summary)
    md += ["", "![AUROC vs training vectors](scale_summary.png)"]
    atomic_write_text(R / "scale_summary.md", "\n".join(md) + "\n")
    atomic_write_text(R / "scale_summary.json", json.dumps(summary, indent=2) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
