"""golden.npz: the images and outputs a bundle replays on the machine it runs on (the load-time
self-check, `dlsr_deploy.runtime.selfcheck`)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from dlsr_deploy.export.verify import run_bundle_graphs
from dlsr_deploy.names import output_name

GOLDEN_CHUNK = 16  # images per call when the golden outputs are made and replayed
N_GOLDEN = 32  # per side: held-out ID images, and verify-OOD images spread over the sets


def golden_images(cal_images: np.ndarray, ood_images: Dict[str, np.ndarray]):
    """(images, is_ood): N_GOLDEN held-out ID images and N_GOLDEN verify-OOD images, evenly spread."""
    idx = np.unique(np.linspace(0, len(cal_images) - 1, min(N_GOLDEN, len(cal_images))).astype(int))
    parts, labels = [cal_images[idx]], [np.zeros(len(idx), bool)]
    if ood_images:
        pool = np.concatenate(list(ood_images.values()))
        j = np.unique(np.linspace(0, len(pool) - 1, min(N_GOLDEN, len(pool))).astype(int))
        parts.append(pool[j])
        labels.append(np.ones(len(j), bool))
    return np.concatenate(parts), np.concatenate(labels)


def write_golden(
    tmp: Path, ref, cal_images: np.ndarray, ood_images: Dict[str, np.ndarray], engine: str = "ort"
) -> dict:
    """golden.npz: images at native size, is_ood, and for z0 and every score the export machine's
    outputs of this bundle (`bundle/<name>`, on `engine`: what a faithful backend reproduces) and
    of PyTorch eager FP32 (`eager/<name>`, for reference) -> the manifest entry."""
    from dlsr_deploy.io import atomic_write, sha256_file

    images, is_ood = golden_images(cal_images, ood_images)
    # in the chunks the self-check replays: the 8-bit denoiser quantizes activations with one
    # scale per call, so its scores depend (slightly) on which images share a call
    eager, got = ref.outputs(images), run_bundle_graphs(tmp, images, batch=GOLDEN_CHUNK, engine=engine)
    keys = ["z0"] + [output_name(n) for n in ref.score_names]
    arrays = {"images": images, "is_ood": is_ood}
    arrays.update({f"eager/{k}": eager[k] for k in keys})
    arrays.update({f"bundle/{k}": got[k] for k in keys})
    path = Path(tmp) / "golden.npz"
    atomic_write(path, lambda p: np.savez_compressed(open(p, "wb"), **arrays))
    return {
        "name": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "inputs": [],
        "outputs": [],
        "n_id": int((~is_ood).sum()),
        "n_ood": int(is_ood.sum()),
    }
