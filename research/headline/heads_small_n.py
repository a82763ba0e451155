"""Which density head holds when a user trains on few images? (issue 22: a default that holds)

    python -m research.headline.heads_small_n [--model runs/default50k] [--data ../shared/data]

The default headline (maha_ridge) was chosen at 45,000 training vectors for 560 dimensions. Its
covariance gets a fixed ridge of 1e-6 x the mean variance, so with few training vectors the
directions the data did not span are weighted by up to 1e6: the score of an unseen image is then
mostly its distance from the training span, and FP16 rounding moves it by orders of magnitude.
Ledoit-Wolf (maha_lw, gauss_layer) picks its shrinkage from the data and converges to the same
estimate as n grows. This refits each head on random subsets of the run's training z0 (the same
z0 the heads of a bundle are fitted on; no denoiser, no torch) and scores CIFAR-10 test (ID)
against the real OOD sets and the shift probes through the feature cache dlsr-eval filled.

Writes research/headline/results/heads_small_n.{json,md}. Nothing is fitted on OOD data.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dlsr_deploy.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
HEADS = ("maha_ridge", "maha_lw", "gauss_layer")


def features(model: Path, data: Path, cache: Path):
    """(training z0, ID test z0, {real set: z0}, {probe: z0}) through the feature cache."""
    from dlsr_deploy.config import ModelConfig
    from dlsr_deploy.eval_pipeline import eval_features

    cfg = ModelConfig.load(model / "config.json")
    ood = [("tinyimagenet", str(data / "tinyimagenet_val_32.npz")), ("dtd", str(data / "dtd_subset10.npz"))]
    o = dict(cache_dir=cache, limit=None, engine="ort", probes=1000)
    _, z_id, z_ood = eval_features(cfg, str(data / "cifar10_test.npz"), ood, o)
    from dlsr_deploy.probes import PROBES

    real = {k: v for k, v in z_ood.items() if not k.startswith("probe:")}
    shift = {k: v for k, v in z_ood.items() if k.startswith("probe:") and PROBES[k[6:]].kind == "shift"}
    return np.load(model / "train_z0.npy"), z_id, real, shift, cfg


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "runs/default50k"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--cache-dir", default=str(ROOT / "build/eval-cache"), help="dlsr-eval's feature cache")
    ap.add_argument("--n", type=int, action="append", help="training sizes (default 250 .. all)")
    ap.add_argument("--repeats", type=int, default=3, help="random subsets per size")
    a = ap.parse_args(argv)
    from dlsr_deploy.metrics import auroc
    from dlsr_deploy.scoring import DensityHead

    t0 = time.time()
    train, z_id, real, shift, cfg = features(Path(a.model), Path(a.data), Path(a.cache_dir))
    sizes, dim = cfg.layer_sizes, train.shape[1]
    ns = sorted(a.n or [250, 500, 1000, 2000, 5000, len(train)])
    rows = []
    for n in ns:
        for rep in range(a.repeats if n < len(train) else 1):
            idx = np.random.default_rng(1000 * n + rep).choice(len(train), n, replace=False)
            for head in HEADS:
                h = DensityHead.fit(head, train[idx], sizes)
                s_id = h.score(z_id)
                r = {k: auroc(s_id, h.score(v)) for k, v in real.items()}
                r["probe_mean"] = float(np.mean([auroc(s_id, h.score(v)) for v in shift.values()]))
                # FP16 sensitivity: relative score change when z0 is rounded to float16
                s16 = h.score(z_id.astype(np.float16).astype(np.float32))
                r["fp16_rel_change_median"] = float(np.median(np.abs(s16 - s_id) / np.abs(s_id)))
                rows.append({"n": int(n), "repeat": rep, "head": head, **r})
            print(f"n={n} rep={rep} done ({time.time() - t0:.0f} s)", flush=True)
    res = {
        "command": "python -m research.headline.heads_small_n",
        "model": a.model,
        "dims": int(dim),
        "real_sets": list(real),
        "probes": sorted(k[6:] for k in shift),
        "rows": rows,
        "seconds": round(time.time() - t0, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "heads_small_n.json", json.dumps(res, indent=1))
    atomic_write_text(RESULTS / "heads_small_n.md", markdown(res))
    print(markdown(res))


def markdown(res: dict) -> str:
    real = res["real_sets"]
    lines = [
        "# Density heads when trained on few images (`python -m research.headline.heads_small_n`)",
        "",
        f"Heads refitted on random subsets of `{res['model']}`'s training z0 ({res['dims']} dims); AUROC % "
        "(CIFAR-10 test as ID), mean and range over the subsets; worst = the lower of the real sets; "
        "probe mean over the shift probes; fp16 = median relative change of the ID score when z0 is "
        "rounded to float16.",
        "",
        "| n train | head | " + " | ".join(real) + " | worst real | probe mean | fp16 change |",
        "| --- | --- | " + " | ".join("---" for _ in real) + " | --- | --- | --- |",
    ]
    by = {}
    for r in res["rows"]:
        by.setdefault((r["n"], r["head"]), []).append(r)
    for (n, head), rs in by.items():

        def cell(vals):
            v = 100 * np.asarray(vals)
            return f"{v.mean():.2f}" if len(v) == 1 else f"{v.mean():.2f} [{v.min():.2f}, {v.max():.2f}]"

        cells = [cell([r[s] for r in rs]) for s in real]
        cells.append(cell([min(r[s] for s in real) for r in rs]))
        cells.append(cell([r["probe_mean"] for r in rs]))
        cells.append(f"{np.median([r['fp16_rel_change_median'] for r in rs]):.1e}")
        lines.append(f"| {n} | `{head}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
