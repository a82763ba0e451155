"""Where DLSR stands (issue 32, item 4): does the diffusion model add anything to the density
headline? From one `dlsr-eval --probes` run's scores: MFsim, MSE, LR and every combination with
them, beside the density heads, on the real OOD sets and the shift-probe mean, AUROC with 95 %
intervals; and each against the headline under the selection rule (`dlsr_deploy.selection`: the
joint paired bootstrap, worst real set, probe mean), which is what `--headline auto` applies.

    dlsr-eval --model runs/default50k --id ../shared/data/cifar10_test.npz --ood TIN=... --ood DTD=... \
        --probes --out build/eval-default
    python -m research.dlsr_adds.dlsr_adds build/eval-default [--stem eval] [--headline maha_ridge]
        -> research/dlsr_adds/results/dlsr_adds.{json,md}

A headline that is itself a standardised sum (a profile's `ensemble` of views) has no DLSR sum in the
eval's table: `--model RUN` adds one per DLSR score, `<headline>+<score>` = the headline's components
and the score, each standardised by the run's held-out ID median / IQR, as the package fits every
combination (scoring.Combination; the held-out images were never trained on nor evaluated):

    python -m research.dlsr_adds.dlsr_adds research/default_detector/results --stem accurate_eval \
        --headline ensemble --model runs/accurate50k --name dlsr_adds_accurate
"""

import argparse
import json
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks.harness import results_dir, write_results
from dlsr_deploy.probes import shift_probes
from dlsr_deploy.scoring import Combination
from dlsr_deploy.selection import Evidence, choose, compare, evidence_row

RESULTS = results_dir(__file__)


DLSR = ("mfsim", "mse", "lr_mfsim", "lr_mse")


def load(folder: Path, stem: str):
    """(the eval JSON, ID scores {score: arr}, OOD scores {set: {score: arr}}) of one dlsr-eval run."""
    res = json.loads((folder / f"{stem}.json").read_text())
    z = np.load(folder / f"{stem}_scores.npz")
    ids, ood = {}, {}
    for k in z.files:
        where, score = k.rsplit(".", 1)
        (ids if where == "id" else ood.setdefault(where, {}))[score] = z[k].astype(np.float64)
    if where_missing := [k for k in ids if any(k not in v for v in ood.values())]:
        raise SystemExit(f"{folder}: scores missing on some sets: {where_missing}")
    return res, ids, ood


def uses_dlsr(score: str) -> bool:
    """A DLSR score, or a combination with one."""
    return score in DLSR or any(f"_{d}_" in f"_{score}_" or score.endswith(f"+{d}") for d in DLSR)


def headline_sums(run: Path, headline: str, ids: dict, ood: dict, score_cfg: dict) -> dict:
    """`<headline>+<score>` for each non-LR DLSR score, added to the ID and OOD score dicts in place:
    the headline's components (a Combination's, else the headline) and the score, standardised on the
    run's held-out ID scores (scored here with the run's models and the eval's score settings).
    -> {name: the Combination's dict}."""
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.model.reference import EagerReference, run_holdout_z0

    ref = EagerReference.from_run(run, ScoreConfig.from_dict(score_cfg))
    hold = ref.score_z0(run_holdout_z0(run, ref.cfg), progress=True, desc="held-out ID")
    combo = next((c for c in ref.combos if c.name == headline), None)
    if combo is not None and not np.allclose(combo.combine(ids), ids[headline], rtol=1e-6, atol=1e-9):
        raise SystemExit(f"{run}: its held-out ID fit of {headline} does not give the eval's scores: another run?")
    parts = list(combo.components) if combo else [headline]
    out = {}
    for d in ("mfsim", "mse"):
        c = Combination.fit([*parts, d], "sum", hold, label=f"{headline}+{d}")
        for scores in (ids, *ood.values()):
            scores[c.name] = c.combine(scores)
        out[c.name] = c.to_dict()
    return out


def measure(folder: Path, stem: str, headline: str, n_boot: int, run: Optional[Path] = None) -> dict:
    res, ids, ood = load(folder, stem)
    sums = headline_sums(run, headline, ids, ood, res["runs"][0]["score_config"]) if run else {}
    real = [s for s in ood if not s.startswith("probe:")]
    probes = [s for s in ood if s.startswith("probe:") and s.split(":", 1)[1] in shift_probes()]
    ev = Evidence(id=ids, ood=ood, real=real, probes=probes, n_boot=n_boot)
    scores = [s for s in ids if s != headline]
    rows = {}
    for s in [headline, *scores]:
        rows[s] = {"row": evidence_row(ev, s), "dlsr": uses_dlsr(s)}
        if s != headline:
            rows[s]["vs_headline"] = compare(ev, headline, s)
    rule = choose(ev, headline, [s for s in scores if uses_dlsr(s) and not s.startswith("lr_")])
    return {
        "eval": {k: res.get(k) for k in ("command", "created", "machine", "id_set", "ood_sets", "model")},
        "headline": headline,
        "real": real,
        "probes": [p.split(":", 1)[1] for p in probes],
        "n_boot": n_boot,
        "rows": rows,
        "rule_over_dlsr_candidates": {k: rule[k] for k in ("chosen", "incumbent", "rule", "steps")},
        "headline_sums": sums,
    }


def _cell(r: dict) -> str:
    return f"{100 * r['auroc']:.2f} [{100 * r['lo']:.2f}, {100 * r['hi']:.2f}]"


def markdown(res: dict) -> str:
    sets = res["real"] + ["probe_mean"]
    e = res["eval"]
    lines = [
        "# Does the diffusion model add anything to the headline? (issue 32, item 4)",
        "",
        f"From one `dlsr-eval --probes` run: `{e['command']}` ({e['created']}; {e['machine'].get('cpu')}); ID test "
        f"set {e['id_set']['name']} ({e['id_set']['n']}). AUROC (%) with 95 % intervals, joint paired bootstrap of "
        f"{res['n_boot']} replicates; probe mean over {len(res['probes'])} shift probes. Delta: the score minus the "
        f"headline `{res['headline']}` on the worst real set, paired interval.",
        "",
        "| score | DLSR? | " + " | ".join(sets) + " | worst-set delta vs headline | replaces it under the rule? |",
        "|---|---|" + "---|" * len(sets) + "---|---|",
    ]
    for s, r in res["rows"].items():
        cells = [_cell(r["row"][k]) if k in r["row"] else "-" for k in sets]
        v = r.get("vs_headline")
        delta = f"[{100 * v['worst_real']['delta_lo']:+.2f}, {100 * v['worst_real']['delta_hi']:+.2f}]" if v else "-"
        rep = ("yes" if v["replaces"] else "no") if v else "(headline)"
        lines.append(f"| {s} | {'yes' if r['dlsr'] else ''} | " + " | ".join(cells) + f" | {delta} | {rep} |")
    rule = res["rule_over_dlsr_candidates"]
    if res.get("headline_sums"):
        lines += [
            "",
            f"`{res['headline']}+<score>`: the headline's components and the DLSR score, each standardised by the "
            "run's held-out ID median / IQR (never trained on, not the evaluated ID set), then averaged.",
        ]
    lines += [
        "",
        f"The selection rule over every non-LR score that uses the diffusion model, starting from "
        f"`{rule['incumbent']}`, chose **`{rule['chosen']}`**. Rule: {rule['rule']}.",
    ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--stem", default="eval")
    ap.add_argument("--headline", default="maha_ridge")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--model", type=Path, help="the run evaluated: adds <headline>+<DLSR score> (see above)")
    ap.add_argument("--name", default="dlsr_adds", help="results/NAME.{json,md}")
    a = ap.parse_args()
    write_results(RESULTS, a.name, measure(a.folder, a.stem, a.headline, a.bootstrap, a.model), markdown)


if __name__ == "__main__":
    main()
