"""The best detector per millisecond (issue 23): a sweep over backbone x input size, the LFDN size
and steps, measured for accuracy (with bootstrap intervals) and speed, and the default chosen
from it by the selection rule. Steps (each writes research/default_detector/results/pareto_<step>.{json,md}):

    python -m research.default_detector.sweep heads  --data ../shared/data    every density head and combination
                                                                per (backbone, input size), AUROC
                                                                with intervals on both shared OOD
                                                                sets and the synthetic probes
    python -m research.default_detector.sweep lfdn   --config lite0@128 ...   LFDN width / blocks and K at one
                                                                config, chosen by held-out ID loss
    python -m research.default_detector.sweep time   --data ../shared/data    batch-1 / batch-32 speed of each
                                                                config's headline path and of the
                                                                LFDN grid's all-scores path, ORT and
                                                                OpenVINO, interleaved rounds
    python -m research.default_detector.sweep report                          pareto.{json,md,png}: the frontier
                                                                and the default it picks

`bash research/default_detector/pareto.sh` runs them in order. Features come from the feature cache (the ORT
backbone engine, parity-checked against eager on every set); CIFAR-10 images are 32 px, so every
run here passes native size 32 explicitly. Fit on ID data only: density heads on the 9,000
training images the run would train on, combinations standardised on its 1,000 held-out ones.
"""

from __future__ import annotations

import argparse

from benchmarks.harness import results_dir, write_results

from .points import BACKBONES, SIZES, short

RESULTS = results_dir(__file__).parents[1] / "results"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["heads", "lfdn", "time", "report", "views", "profiles", "joint"])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--backbones", default=",".join(short(b) for b in BACKBONES))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--config", action="append", help="lfdn/time: a config name such as lite0@128 (repeatable)")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument(
        "--epochs", type=int, default=60, help="lfdn: most training epochs (early stopping on held-out loss)"
    )
    ap.add_argument("--views", help="views: a comma-separated subset of the view candidates (default: all)")
    ap.add_argument("--rounds", type=int, default=3, help="profiles: interleaved timing rounds")
    ap.add_argument("--runs", default="runs/pareto", help="where the sweep's training runs go")
    args = ap.parse_args(argv)
    args.backbones = [f"efficientnet-{b}" for b in args.backbones.split(",")]
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.step == "heads":
        from .heads import heads_markdown, step_heads

        write_results(RESULTS, "pareto_heads", step_heads(args), heads_markdown)
    elif args.step == "lfdn":
        from .lfdn import step_lfdn

        write_results(RESULTS, "pareto_lfdn", step_lfdn(args), lambda r: r["markdown"])
    elif args.step == "time":
        from .timing import step_time

        write_results(RESULTS, "pareto_time", step_time(args), lambda r: r["markdown"])
    elif args.step == "views":
        from .views import step_views, views_markdown

        args.views = args.views.split(",") if args.views else None
        write_results(RESULTS, "pareto_views", step_views(args), views_markdown)
    elif args.step == "joint":
        from .joint import joint_markdown, step_joint

        write_results(RESULTS, "pareto_joint", step_joint(args), joint_markdown)
    elif args.step == "profiles":
        from .profiles import profiles_markdown, step_profiles

        write_results(RESULTS, "pareto_profiles", step_profiles(args), profiles_markdown)
    else:
        from .report import step_report

        write_results(RESULTS, "pareto", step_report(args), lambda r: r["markdown"])


if __name__ == "__main__":
    main()
