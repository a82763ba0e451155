"""Issue 11 tables from the committed dlsr-eval files: benchmarks/results/scale_<run>.json.

    python benchmarks/scale_table.py      -> benchmarks/results/scale_summary.{md,json}

One table per training run (10k / 30k / 50k images, with or without flipped views): AUROC /
FPR95 on Tiny ImageNet and DTD for every score, then the headline choice: the score whose
worst-set AUROC is highest over all runs (a score must hold on *every* set, not win one),
next to the Mahalanobis-on-z0 baseline and today's MFsim. The training curve (held-out ID
loss per run) comes from runs/<run>/run.json when present, else from the eval file.
"""

import json
import sys
from pathlib import Path

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


def main():
    found = {r: load(r) for r in RUNS}
    found = {r: d for r, d in found.items() if d}
    if not found:
        sys.exit("no benchmarks/results/scale_*.json yet: run benchmarks/data_scale.sh")
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
        "Per score: the lowest AUROC over both sets, and the mean, for each run. The headline is the DLSR-based score "
        "with the best worst-set AUROC on the largest run; it must also beat Mahalanobis on each set.",
        "",
    ]
    md.append("| score | " + " | ".join(f"{r} min / mean" for r in found) + " |")
    md.append("|---|" + "---|" * len(found))
    for s in scores:
        cells = []
        for r in found:
            a = summary["runs"][r]["auroc"].get(s)
            cells.append(f"{100 * min(a.values()):.2f} / {100 * sum(a.values()) / 2:.2f}" if a else "-")
        md.append(f"| {s} | " + " | ".join(cells) + " |")
    (R / "scale_summary.md").write_text("\n".join(md) + "\n")
    (R / "scale_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
