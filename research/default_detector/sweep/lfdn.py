"""pareto.py lfdn: the LFDN size and the number of DDIM steps K at one (backbone, input size),
chosen by held-out ID loss and cost only, never by OOD sets.

Variants: paper (width 2D, 16 blocks), half width (D), quarter width (D / 2), 8 blocks (width 2D).
Each is trained with dlsr-train's own pipeline (10 % held out, early stopping on the held-out
denoising loss). The rule: the cheapest variant (denoiser FLOPs x K) whose best held-out loss is
within 5 % of the paper preset's, and K = 1 unless its held-out ID reconstruction error (the MSE
score on the 1,000 held-out images) is more than 5 % above K = 2's. The OOD AUROCs of every
variant and K are reported beside, with intervals, for the reader; the rule does not see them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .points import config_name, evidence, features, load_sets, parse_config

TOLERANCE = 0.05


def variants(dim: int) -> dict:
    """{name: (width, blocks)} of the LFDN grid for feature dimension D."""
    return {"paper": (2 * dim, 16), "half": (dim, 16), "quarter": (dim // 2, 16), "blocks8": (2 * dim, 8)}


def cost(width: int, blocks: int, dim: int, k: int) -> float:
    """MatMul FLOPs of the denoiser per image: K steps of input proj, blocks x 2 W x W, output proj."""
    return 2.0 * k * (dim * width + blocks * 2 * width * width + width * dim)


def train_variant(run_dir: Path, data: Path, backbone: str, size: int, width: int, blocks: int, epochs: int) -> dict:
    import json

    from dlsr_deploy.config import FeatureConfig, TrainConfig
    from dlsr_deploy.pipeline import run_train

    if (run_dir / "run.json").exists() and json.loads((run_dir / "run.json").read_text()).get("status") == "done":
        return json.loads((run_dir / "run.json").read_text())  # trained by an earlier invocation
    fcfg = FeatureConfig(backbone=backbone, input_size=size, native_size=32)
    tcfg = TrainConfig(epochs=epochs, patience=10)
    return run_train(
        str(data / "cifar10_train.npz"),
        run_dir,
        fcfg,
        width=width,
        blocks=blocks,
        tcfg=tcfg,
        feature_engine="ort",
        native_size="given",
        force=True,
    )


def dlsr_scores(run_dir: Path, z: dict, k: int) -> dict:
    """{set: {mfsim, mse}} with K steps from t_start 3 (and the held-out ID images as 'holdout')."""
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.model.reference import EagerReference

    ref = EagerReference.from_run(run_dir, ScoreConfig(t_start=3, steps=k), density=False)
    out = {name: {n: v for n, v in ref.score_z0(zs).items() if n in ("mfsim", "mse")} for name, zs in z.items()}
    out["holdout"] = {
        n: v for n, v in ref.score_z0(np.load(run_dir / "holdout_z0.npy")).items() if n in ("mfsim", "mse")
    }
    return out


def step_lfdn(args) -> dict:
    data = Path(args.data)
    sets = {k: v for k, v in load_sets(data).items() if k != "train"}
    res = {"rule": __doc__.split("\n\n")[1].replace("\n", " "), "configs": {}}
    for cfg_name in args.config:
        backbone, size = parse_config(cfg_name)
        z = {k: features(backbone, size, v, f"{cfg_name} {k}") for k, v in sets.items()}
        rows = _variant_rows(args, data, backbone, size, z)
        res["configs"][config_name(backbone, size)] = {"rows": rows, "choice": choose(rows)}
    res["markdown"] = markdown(res)
    return res


def _variant_rows(args, data: Path, backbone: str, size: int, z: dict) -> list:
    from dlsr_deploy.selection import evidence_row

    dim = int(next(iter(z.values())).shape[1])
    rows = []
    for name, (width, blocks) in variants(dim).items():
        run = Path(args.runs) / f"{config_name(backbone, size)}-{name}"
        info = train_variant(run, data, backbone, size, width, blocks, args.epochs)
        for k in (1, 2):
            sc = dlsr_scores(run, z, k)
            ev = evidence({s: v for s, v in sc.items() if s != "holdout"}, args.n_boot)
            rows.append(
                {
                    "variant": name,
                    "width": width,
                    "blocks": blocks,
                    "k": k,
                    "run": str(run),
                    "best_heldout_loss": info["best_heldout_loss"],
                    "epochs_run": info["epochs_run"],
                    "train_seconds": info["train_seconds"],
                    "flops": cost(width, blocks, dim, k),
                    "heldout_mse": float(np.mean(sc["holdout"]["mse"])),
                    "auroc": {s: evidence_row(ev, s) for s in ("mfsim", "mse")},
                }
            )
            loss, mse = info["best_heldout_loss"], rows[-1]["heldout_mse"]
            print(f"{name} K={k}: held-out loss {loss:.4f}, held-out MSE {mse:.3f}", flush=True)
    return rows


def choose(rows: list) -> dict:
    """The rule of the module docstring -> {'variant', 'k', 'why'}."""
    paper = min(r["best_heldout_loss"] for r in rows if r["variant"] == "paper")
    ok = [r for r in rows if r["best_heldout_loss"] <= (1 + TOLERANCE) * paper]
    by_variant = {}
    for r in ok:
        by_variant.setdefault(r["variant"], {})[r["k"]] = r
    picks = []
    for ks in by_variant.values():
        k = 1 if ks[1]["heldout_mse"] <= (1 + TOLERANCE) * ks[2]["heldout_mse"] else 2
        picks.append(ks[k])
    best = min(picks, key=lambda r: r["flops"])
    return {
        "variant": best["variant"],
        "k": best["k"],
        "width": best["width"],
        "blocks": best["blocks"],
        "why": f"cheapest variant whose held-out loss {best['best_heldout_loss']:.4f} is within {TOLERANCE:.0%} of "
        f"the paper preset's {paper:.4f}; K = {best['k']} by held-out ID reconstruction error",
    }


def markdown(res: dict) -> str:
    from dlsr_deploy.machine import describe

    lines = [
        "# LFDN size and steps (`python -m research.default_detector.sweep lfdn`)",
        "",
        f"Machine: {describe()}.",
        "",
        f"Rule: {res['rule']}",
        "",
    ]
    for cfg, c in res["configs"].items():
        ch = c["choice"]
        lines += [
            f"## {cfg}: {ch['variant']} (width {ch['width']}, {ch['blocks']} blocks), K = {ch['k']}",
            "",
            ch["why"],
            "",
            "| variant | width x blocks | K | held-out loss | held-out ID MSE | MFLOP | MFsim TIN / DTD / probes | "
            "MSE TIN / DTD / probes |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in c["rows"]:
            cells = [
                " / ".join(f"{100 * r['auroc'][s][t]['auroc']:.2f}" for t in ("tinyimagenet", "dtd", "probe_mean"))
                for s in ("mfsim", "mse")
            ]
            lines.append(
                f"| {r['variant']} | {r['width']} x {r['blocks']} | {r['k']} | {r['best_heldout_loss']:.4f} | "
                f"{r['heldout_mse']:.3f} | {r['flops'] / 1e6:.0f} | {cells[0]} | {cells[1]} |"
            )
        lines.append("")
    return "\n".join(lines)
