"""Re-choose the package's default headline at the largest training scale (issue 22, item 4).

    python -m research.headline.choose_headline [--scores research/default_detector/results/default_eval_scores.npz]

Reads the per-image scores `dlsr-eval --probes` saved (STEM_scores.npz: ID = CIFAR-10 test, the
real OOD sets, the synthetic probes) and runs the selection rule exactly as `dlsr-export
--headline auto` does (`export.calibrate.choose_headline`: incumbent = the package default, every
score but the LR ones as a candidate, tried from the simplest up). Writes
research/headline/results/default_headline.{json,md}: every candidate's AUROC with its 95 % interval on
each real set and on the probe mean, each step's verdict, and the choice. Nothing here is fitted
on OOD data: the scores are the trained run's, the OOD images only judge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def load_scores(path: Path):
    """(ID scores, real OOD sets' scores, probes' scores), each {score: array}, from STEM_scores.npz."""
    if not path.exists():
        sys.exit(f"error: --scores: {path} does not exist; run `STEP=eval bash tools/default_bundle.sh` first")
    z = np.load(path)
    sets: dict = {}
    for key in z.files:
        where, score = key.rsplit(".", 1)
        sets.setdefault(where, {})[score] = z[key]
    ids = sets.pop("id")
    real = {k: v for k, v in sets.items() if not k.startswith("probe:")}
    probes = {k: v for k, v in sets.items() if k.startswith("probe:")}
    return ids, real, probes


def markdown(res: dict) -> str:
    real = res["real_sets"]
    lines = [
        "# The default headline at 50k, re-chosen (`python -m research.headline.choose_headline`)",
        "",
        f"Scores: `{res['scores']}` (model `{res['model']}`). Rule: {res['record']['rule']}.",
        "",
        f"Incumbent (the package default): `{res['record']['incumbent']}`. **Chosen: `{res['chosen']}`.**",
        "",
        "| score | " + " | ".join(real) + " | probe mean | tried against | not worse anywhere | "
        "worst set: candidate - current [95 %] |",
        "| --- | " + " | ".join("---" for _ in real) + " | --- | --- | --- | --- |",
    ]
    steps = {s["candidate"]: s for s in res["record"]["steps"]}
    for score, row in res["record"]["table"].items():
        cells = [f"{100 * row[s]['auroc']:.2f} [{100 * row[s]['lo']:.2f}, {100 * row[s]['hi']:.2f}]" for s in real]
        pm = row.get("probe_mean")
        cells.append(f"{100 * pm['auroc']:.2f} [{100 * pm['lo']:.2f}, {100 * pm['hi']:.2f}]" if pm else "-")
        st = steps.get(score)
        yn = {True: "yes", False: "no"}
        if st:
            w = st["worst_real"]
            delta = f"[{100 * w['delta_lo']:+.2f}, {100 * w['delta_hi']:+.2f}]"
            verdict = [f"`{st['incumbent']}`", yn[st["not_worse"]], delta]
        else:
            verdict = ["-"] * 3
        lines.append(f"| `{score}` | " + " | ".join(cells + verdict) + " |")
    lines += ["", "AUROC in % with 95 % paired-bootstrap intervals (ID and OOD resampled jointly)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    from dlsr_deploy.export.calibrate import auto_candidates, choose_headline
    from dlsr_deploy.io import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scores", default="research/default_detector/results/default_eval_scores.npz")
    ap.add_argument("--stem", default="default_headline")
    args = ap.parse_args(argv)
    ids, real, probes = load_scores(Path(args.scores))
    names = list(ids)
    chosen, record = choose_headline("auto", names, ids, real, probes)
    meta = json.loads(Path(args.scores.replace("_scores.npz", ".json")).read_text())
    res = {
        "scores": Path(args.scores).name,
        "model": meta.get("model"),
        "real_sets": list(real),
        "candidates": auto_candidates(names),
        "chosen": chosen,
        "record": record,
    }
    atomic_write_text(RESULTS / f"{args.stem}.json", json.dumps(res, indent=1))
    atomic_write_text(RESULTS / f"{args.stem}.md", markdown(res))
    print(f"chosen: {chosen} (incumbent {record['incumbent']}); wrote {RESULTS / args.stem}.{{json,md}}")


if __name__ == "__main__":
    main()
