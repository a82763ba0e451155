"""Session-wide tiny run and bundles shared by the export / runtime / bench tests."""

from pathlib import Path

import numpy as np


def make_sets(folder: Path):
    r = np.random.default_rng(0)
    base = r.integers(40, 200, (1, 32, 32, 3))
    idimgs = np.clip(base + r.integers(-25, 25, (96, 32, 32, 3)), 0, 255).astype(np.uint8)
    ood = r.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    # ID images the run never saw (id.npz is its training data): with 72 training vectors for 512
    # dimensions a training vector has no component outside the training span, so a density head's
    # score of it is flat and its ranks among such images are rounding noise
    fresh = np.clip(base + r.integers(-25, 25, (24, 32, 32, 3)), 0, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "id.npz", images=idimgs)
    np.savez(folder / "ood.npz", images=ood)
    np.savez(folder / "id_unseen.npz", images=fresh)
    return folder / "id.npz", folder / "ood.npz"


def make_run(folder: Path):
    from dlsr_deploy.config import FeatureConfig, TrainConfig
    from dlsr_deploy.pipeline import run_train

    id_path, ood_path = make_sets(folder)
    run_train(
        str(id_path),
        folder / "run",
        FeatureConfig(backbone="efficientnet-lite0", input_size=64),
        preset="small",
        tcfg=TrainConfig(epochs=2, batch_size=32),
        holdout=0.25,
        cache_dir=folder / "cache",
    )
    return folder / "run", id_path, ood_path


def export_tiny(tiny_run, out: Path, **options) -> Path:
    """A bundle of the tiny run at `out`, verified against its OOD set (64 images per set)."""
    from dlsr_deploy.export.exporter import export_bundle

    run, _, ood = tiny_run
    export_bundle(run, out, verify_ood=[str(ood)], n_verify=64, **options)
    return out
