"""The README's main job on the embedded demo set (no download):
train -> evaluate -> export (FP32, verified, calibrated) -> score with the torch-free runtime.

The demo exports FP32. Its density heads are fitted on 1,260 digit vectors for a 560-dim z0,
fewer than 3 per dimension, so its default headline is gauss_layer (README "Choosing the headline":
the ridge Mahalanobis default needs more data than that)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def run_demo(out: Path, epochs: int = 15) -> dict:
    from dlsr_deploy.config import FeatureConfig, ScoreConfig, TrainConfig
    from dlsr_deploy.data.demo import demo_images
    from dlsr_deploy.eval_pipeline import run_eval
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.log import info
    from dlsr_deploy.pipeline import run_train
    from dlsr_deploy.runtime import Detector

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # split the digits: 1,400 to train on (10 % of them held out for calibration), the rest as the ID test set
    digits = demo_images("id")
    perm = np.random.default_rng(0).permutation(len(digits))
    np.savez_compressed(out / "demo_id_train.npz", images=digits[perm[:1400]])
    np.savez_compressed(out / "demo_id_test.npz", images=digits[perm[1400:]])
    np.savez_compressed(out / "demo_ood.npz", images=demo_images("ood"))
    info("[1/4] dlsr-train: the default LFDN and backbone (EfficientNet-Lite2 @ 160) on the digits (ID)")
    run_train(
        str(out / "demo_id_train.npz"),
        out / "model",
        FeatureConfig(),
        preset="default",
        tcfg=TrainConfig(epochs=epochs, checkpoint_every=5),
        force=True,  # the demo's own folder: a rerun replaces its earlier run
    )
    info("[2/4] dlsr-eval: digits (ID) vs scikit-image photo/texture crops (OOD)")
    result = run_eval(
        out / "model",
        str(out / "demo_id_test.npz"),
        [("skimage-crops", str(out / "demo_ood.npz"))],
        [ScoreConfig()],
        out_dir=out / "eval",
        command="dlsr-demo",
    )
    info("[3/4] dlsr-export: ONNX bundle, verified against PyTorch, threshold calibrated on held-out ID digits")
    bundle = out / "bundle-fp32"
    # parity on every held-out digit (140) and every OOD crop (320): the 0.5 % flip tolerance
    # needs 400+ images before it allows more than one flipped decision
    export_bundle(out / "model", bundle, verify_ood=[str(out / "demo_ood.npz")], n_verify=320, force=True)
    info("[4/4] torch-free runtime (ONNX Runtime CPU) on the held-out sets")
    with Detector.load(bundle, backend="ort-cpu") as det:
        id_pred = det.predict(np.load(out / "demo_id_test.npz")["images"])
        ood_pred = det.predict(np.load(out / "demo_ood.npz")["images"])
    line = (
        f"runtime: {id_pred['is_ood'].mean():.1%} of {len(id_pred['score'])} ID test digits and "
        f"{ood_pred['is_ood'].mean():.1%} of {len(ood_pred['score'])} OOD crops flagged OOD "
        f"(threshold {det.score_name} > {det.threshold:.4g}, 95% ID TPR target)"
    )
    print(line)
    print(f"report: {out / 'eval' / 'eval.html'} (open it in a browser: plots and the images it gets wrong)")
    result["runtime_check"] = line
    return result
