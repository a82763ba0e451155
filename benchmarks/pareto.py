"""The best detector per millisecond (issue 23): a sweep over backbone x input size, the LFDN size
and steps, measured for accuracy (with bootstrap intervals) and speed, and the default chosen
from it by the selection rule. Steps (each writes benchmarks/results/pareto_<step>.{json,md}):

    python benchmarks/pareto.py heads  --data ../shared/data    every density head and combination
                                                                per (backbone, input size), AUROC
                                                                with intervals on both shared OOD
                                                                sets and the synthetic probes
    python benchmarks/pareto.py lfdn   --config lite0@128 ...   LFDN width / blocks and K at one
                                                                config, chosen by held-out ID loss
    python benchmarks/pareto.py time   --data ../shared/data    batch-1 / batch-32 speed of each
                                                                config's headline path and of the
                                                                LFDN grid's all-scores path, ORT and
                                                                OpenVINO, interleaved rounds
    python benchmarks/pareto.py report                          pareto.{json,md,png}: the frontier
                                                                and the default it picks

`bash benchmarks/pareto.sh` runs them in order. Features come from the feature cache (the ORT
backbone engine, parity-checked against eager on every set); CIFAR-10 images are 32 px, so every
run here passes native size 32 explicitly. Fit on ID data only: density heads on the 9,000
training images the run would train on, combinations standardised on its 1,000 held-out ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results  # noqa: E402

BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
SIZES = (96, 128, 160, 224)
SETS = {"tinyimagenet": "tinyimagenet_val_32.npz", "dtd": "dtd_subset10.npz"}
N_PROBE = 1000
SEED = 0


def short(backbone: str) -> str:
    return backbone.replace("efficientnet-", "")


def config_name(backbone: str, size: int) -> str:
    return f"{short(backbone)}@{size}"


def parse_config(name: str):
    bb, size = name.split("@")
    return f"efficientnet-{bb}" if not bb.startswith("efficientnet") else bb, int(size)


def features(backbone: str, size: int, images: np.ndarray, desc: str) -> np.ndarray:
    from dlsr_deploy.config import FeatureConfig
    from dlsr_deploy.model.features import default_cache_dir
    from dlsr_deploy.pipeline import features_of

    fcfg = FeatureConfig(backbone=backbone, input_size=size, native_size=32)
    return features_of(images, fcfg, default_cache_dir(), quiet=True, engine="ort", desc=desc)


def load_sets(data: Path) -> dict:
    """Images of every set the sweep reads: train (10k), test (ID, 10k), the OOD sets, the probes."""
    from dlsr_deploy.probes import make_probes

    load = lambda f: np.load(data / f)["images"]  # noqa: E731
    test = load("cifar10_test.npz")
    out = {"train": load("cifar10_train.npz"), "id": test, **{k: load(f) for k, f in SETS.items()}}
    out.update({f"probe:{k}": v for k, v in make_probes(test, n=N_PROBE, seed=SEED).items()})
    return out


def split(n: int):
    """(held-out, training) indices exactly as dlsr-train --holdout 0.1 --seed 0 makes them."""
    from dlsr_deploy.pipeline import _split

    return _split(n, 0.1, 0)


def head_scores(z: dict, layer_sizes) -> dict:
    """{set: {score: [N]}} of every density head and density-only combination, fitted on ID only."""
    from dlsr_deploy.scoring import COMBINATIONS, COMBINE_HOWS, DENSITY_HEADS, Combination, fit_density_heads

    hold, tr = split(len(z["train"]))
    heads = fit_density_heads(z["train"][tr], layer_sizes)
    hold_s = {n: h.score(z["train"][hold]) for n, h in heads.items()}
    combos = [
        Combination.fit(c, how, hold_s)
        for c in COMBINATIONS
        for how in COMBINE_HOWS
        if all(x in DENSITY_HEADS for x in c)
    ]
    out = {}
    for name, zs in z.items():
        if name == "train":
            continue
        s = {n: h.score(zs) for n, h in heads.items()}
        s.update({c.name: c.combine(s) for c in combos})
        out[name] = s
    return out


def evidence(scores: dict, n_boot: int = 200):
    from dlsr_deploy.probes import shift_probes
    from dlsr_deploy.selection import Evidence

    ood = {k: v for k, v in scores.items() if k != "id"}
    probes = [k for k in ood if k.startswith("probe:") and k.split(":", 1)[1] in shift_probes()]
    return Evidence(id=scores["id"], ood=ood, real=list(SETS), probes=probes, n_boot=n_boot, seed=SEED)


def step_heads(args) -> dict:
    """Every (backbone, input size): each density head / combination with intervals, and the
    headline the selection rule picks there (incumbent: ridge Mahalanobis, the robust baseline)."""
    from dlsr_deploy.model.backbones import build_backbone
    from dlsr_deploy.selection import choose

    sets = load_sets(Path(args.data))
    res = {"sets": {k: int(len(v)) for k, v in sets.items()}, "configs": {}}
    for bb in args.backbones:
        sizes = tuple(build_backbone(bb).tap_channels)
        for size in args.sizes:
            name = config_name(bb, size)
            z = {k: features(bb, size, v, f"{name} {k}") for k, v in sets.items()}
            sc = head_scores(z, sizes)
            ev = evidence(sc, args.n_boot)
            pick = choose(ev, "maha_ridge", list(sc["id"]))
            res["configs"][name] = {
                "backbone": bb,
                "input_size": size,
                "layer_sizes": list(sizes),
                "chosen": pick["chosen"],
                "table": pick["table"],
                "steps": [
                    {k: s[k] for k in ("candidate", "incumbent", "replaces", "not_worse", "better_on_worst")}
                    for s in pick["steps"]
                ],
            }
            print(f"{name}: headline {pick['chosen']}", flush=True)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["heads", "lfdn", "time", "report"])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--backbones", default=",".join(short(b) for b in BACKBONES))
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--config", action="append", help="lfdn/time: a config name such as lite0@128 (repeatable)")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument(
        "--epochs", type=int, default=60, help="lfdn: most training epochs (early stopping on held-out loss)"
    )
    ap.add_argument("--runs", default="runs/pareto", help="where the sweep's training runs go")
    args = ap.parse_args(argv)
    args.backbones = [f"efficientnet-{b}" for b in args.backbones.split(",")]
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.step == "heads":
        write_results("pareto_heads", step_heads(args), heads_markdown)
    elif args.step == "lfdn":
        from pareto_lfdn import step_lfdn

        write_results("pareto_lfdn", step_lfdn(args), lambda r: r["markdown"])
    elif args.step == "time":
        from pareto_time import step_time

        write_results("pareto_time", step_time(args), lambda r: r["markdown"])
    else:
        from pareto_report import step_report

        write_results("pareto", step_report(args), lambda r: r["markdown"])


def heads_markdown(res: dict) -> str:
    from dlsr_deploy.machine import describe

    lines = [
        "# Density heads per backbone and input size (`python benchmarks/pareto.py heads`)",
        "",
        f"Machine: {describe()}. AUROC in % with 95 % paired-bootstrap intervals; ID = CIFAR-10 test "
        f"(10,000); heads fitted on 9,000 CIFAR-10 training images, combinations standardised on the 1,000 "
        "held-out ones. probe mean = mean over the shift probes. Chosen = the selection rule from ridge "
        "Mahalanobis.",
        "",
    ]
    for name, c in res["configs"].items():
        lines += [
            f"## {name}: chosen headline `{c['chosen']}`",
            "",
            "| score | TinyImageNet | DTD | probe mean |",
            "| --- | --- | --- | --- |",
        ]
        for score, row in c["table"].items():
            cells = [
                f"{100 * row[s]['auroc']:.2f} [{100 * row[s]['lo']:.2f}, {100 * row[s]['hi']:.2f}]"
                for s in ("tinyimagenet", "dtd", "probe_mean")
            ]
            lines.append(f"| {score} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
