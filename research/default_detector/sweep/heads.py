"""Step `heads`: every density head and combination per (backbone, input size), with intervals."""

from __future__ import annotations

from pathlib import Path

from .points import config_name, evidence, features, head_scores, load_sets


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


def heads_markdown(res: dict) -> str:
    from dlsr_deploy.machine import describe

    lines = [
        "# Density heads per backbone and input size (`python -m research.default_detector.sweep heads`)",
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
