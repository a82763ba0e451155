"""Print the README's result tables from the committed files in benchmarks/results/.

python -m tools.summarize            (every number in the README's results
                                           section comes from this output)
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_DIRS = [ROOT / "benchmarks" / "results", *sorted(ROOT.glob("research/*/results"))]


class _Results:
    """benchmarks/results and every research/*/results, read as one folder."""

    def __truediv__(self, name: str) -> Path:
        found = [d / name for d in RESULT_DIRS if (d / name).exists()]
        return found[0] if found else RESULT_DIRS[0] / name


R = _Results()


def pct(x):
    return f"{100 * x:.2f}"


def eval_tables():
    rows, bases = [], {}
    for stem in (
        "real_tsweep",
        "real_k1",
        "real_noise4",
        "real_paper_mode",
        "real_skip_first",
        "real_e100_tsweep",
        "real_s128",
        "real_s160",
    ):
        p = R / f"{stem}.json"
        if not p.exists():
            continue
        d = json.loads(p.read_text())
        for run in d["runs"]:
            sc = run["score_config"]
            cfg = f"{sc['mode']}, t={sc['t_start']}, K={sc['steps']}, noise x{sc['n_noise']}" + (
                ", MFsim layers 2.." if sc["mfsim_skip_first"] else ""
            )
            for score, per in run["metrics"].items():
                rows.append((stem, cfg, score, per))
        if d.get("baselines") and stem in ("real_tsweep", "real_s128", "real_s160"):  # one per feature set
            bases[stem] = d["baselines"]
    print("| file | scoring | score | TinyImageNet AUROC / FPR95 | DTD AUROC / FPR95 | mean AUROC |")
    print("|---|---|---|---|---|---|")
    for stem, cfg, score, per in rows:
        print(
            f"| {stem} | {cfg} | {score} | {pct(per['tinyimagenet']['auroc'])} / "
            f"{pct(per['tinyimagenet']['fpr95'])} | {pct(per['dtd']['auroc'])} / {pct(per['dtd']['fpr95'])} | "
            f"{pct(per['mean']['auroc'])} |"
        )
    for stem, base in bases.items():
        for score, per in base.items():
            print(
                f"| {stem} baseline | fitted on the training z0 | {score} | {pct(per['tinyimagenet']['auroc'])} / "
                f"{pct(per['tinyimagenet']['fpr95'])} | {pct(per['dtd']['auroc'])} / {pct(per['dtd']['fpr95'])} | "
                f"{pct(per['mean']['auroc'])} |"
            )


def bench_tables():
    for stem in ("bench_cpu", "bench_cpu_steps", "bench_cpu_input_size", "bench_gpu"):
        p = R / f"{stem}.json"
        if not p.exists():
            continue
        d = json.loads(p.read_text())
        cb = d["compute_bound"]
        h = d["header"]
        print(
            f"\n{stem}: {h.get('cpu')} x{h.get('cpu_count')}, torch {h.get('torch')}, onnxruntime "
            f"{h.get('onnxruntime')}; SGEMM {cb['gemm']['gflops']:.0f} GFLOP/s; "
            + "; ".join(
                f"{n} {b['flops_per_image'] / 1e9:.2f} GFLOP/image -> bound {b['bound_images_per_s']:.0f} images/s"
                for n, b in cb.get("per_bundle", {"pipeline": cb}).items()
            )
        )
        print(
            "| bundle | backend | precision | K | batch | p50 ms | images/s | x eager FP32 | % of compute bound | "
            "backbone / denoiser ms | AUROC TIN / DTD | max score err |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in d["rows"]:
            if r["status"] == "failed":
                print(
                    f"| {r['bundle']} | {r['backend']} | {r['precision']} | {r['steps']} | {r['batch']} | failed: "
                    f"{r['reason']} |"
                )
                continue
            a = r["auroc"]
            print(
                f"| {r['bundle']} | {r['backend']} | {r['precision']} | {r['steps']} | {r['batch']} | "
                f"{r['p50_ms']:.1f} | {r['images_per_s']:.1f} | {r['speedup_vs_eager']:.2f} | "
                f"{100 * r.get('bound_share', r['images_per_s'] / cb['bound_images_per_s']):.0f} % | "
                f"{r['stages_ms']['backbone']:.1f} / {r['stages_ms']['denoiser']:.1f} | "
                f"{pct(a.get('tinyimagenet', float('nan')))} / {pct(a.get('dtd', float('nan')))} | "
                f"{r['max_score_err']:.1e} |"
            )


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("all", "eval"):
        eval_tables()
    if what in ("all", "bench"):
        bench_tables()
