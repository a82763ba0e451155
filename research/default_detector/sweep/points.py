"""The sweep's points (backbone x input size), its data, features and evidence, shared by its steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    return features_of(images, fcfg, default_cache_dir(), engine="ort", desc=desc)


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
    from dlsr_deploy.pipeline import holdout_split

    return holdout_split(n, 0.1, 0)


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
