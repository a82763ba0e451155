"""Copy the parity report each export measured (manifest.json -> parity) into
benchmarks/results/parity_<bundle>.json (or --out DIR) and print a summary table.

    python -m tools.collect_parity export/c10-fp32 export/c10-fp16 export/c10-int8
    python -m tools.collect_parity --out research/default_detector/results export/accurate-fp32
"""

import json
import sys
from pathlib import Path

from dlsr_deploy.io import atomic_write_text

out_dir = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
bundles = sys.argv[1:]
if bundles[:1] == ["--out"]:
    out_dir, bundles = Path(bundles[1]), bundles[2:]
print(
    "| bundle | precision | images (OOD) | z0 max rel L2 | score | rank corr | max rel err | AUROC eager -> "
    "export (ID vs pooled OOD) | decisions flipped |"
)
print("|---|---|---|---|---|---|---|---|---|")
for b in bundles:
    m = json.loads((Path(b) / "manifest.json").read_text())
    p = m["parity"]
    rep = {
        "bundle": m["name"],
        "precision": m["precision"]["mode"],
        "threshold": m["threshold"],
        "fp16_share": m["precision"].get("fp16_share"),
        "parity": p,
    }
    atomic_write_text(out_dir / f"parity_{m['name']}.json", json.dumps(rep, indent=2) + "\n")
    z = p["tensors"]["z0"]["max_rel_l2"]
    heads = (p.get("paths") or {}).get("heads")
    if heads:  # the headline path (backbone + heads.onnx), checked on the same images
        worst = min(v["spearman"] for v in heads["scores"].values())
        print(
            f"| {m['name']} | heads path | {p['n_images']} | - | every density score | {worst:.6f} (worst) | - | - | "
            f"{'passed' if heads['passed'] else 'FAILED'} |"
        )
    for k, s in p["scores"].items():
        print(
            f"| {m['name']} | {m['precision']['mode']} | {p['n_images']} ({p['n_ood']}) | {z:.1e} | {k[6:]} | "
            f"{s['spearman']:.6f} | {s['max_rel']:.1e} | {100 * s['auroc_eager']:.2f} -> "
            f"{100 * s['auroc_export']:.2f} | {s['flips']} ({100 * s['flip_rate']:.2f} %) |"
        )
