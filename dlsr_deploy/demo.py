"""The README's main job: train -> evaluate on the embedded demo set (no download)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def run_demo(out: Path, epochs: int = 15, quiet: bool = False) -> dict:
    from dlsr_deploy.config import FeatureConfig, ScoreConfig, TrainConfig
    from dlsr_deploy.data.demo import demo_images
    from dlsr_deploy.pipeline import run_eval, run_train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # split the digits: 1,400 to train on, the rest as the ID test set
    digits = demo_images("id")
    perm = np.random.default_rng(0).permutation(len(digits))
    np.savez_compressed(out / "demo_id_train.npz", images=digits[perm[:1400]])
    np.savez_compressed(out / "demo_id_test.npz", images=digits[perm[1400:]])
    np.savez_compressed(out / "demo_ood.npz", images=demo_images("ood"))
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    say("[1/2] dlsr-train on scikit-learn digits (ID)")
    run_train(str(out / "demo_id_train.npz"), out / "model", FeatureConfig(), preset="paper", tcfg=TrainConfig(epochs=epochs, checkpoint_every=5), quiet=quiet)
    say("[2/2] dlsr-eval: digits (ID) vs scikit-image photo/texture crops (OOD)")
    return run_eval(out / "model", str(out / "demo_id_test.npz"), [("skimage-crops", str(out / "demo_ood.npz"))], [ScoreConfig()], out_dir=out / "eval", command="dlsr-demo", quiet=quiet)
