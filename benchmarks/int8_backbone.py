"""Static INT8 for the backbone: what each choice of quantized blocks costs in accuracy and
gains in time (issue 13).

    python benchmarks/int8_backbone.py export/c50k-fp32 --data ../shared/data

The bundle's FP32 `backbone.onnx` is quantized with `onnx_utils.quantize_backbone_int8` (QDQ,
uint8 activations calibrated by min/max on 256 CIFAR-10 test images, int8 per-channel 7-bit
weights, Conv/Clip/Add of blocks >= FROM; the stem and earlier blocks FP32) and run on ORT CPU
next to the FP32 one; both feed the bundle's FP32 denoiser. Reported per FROM: z0 relative L2
error, AUROC of MFsim and of the headline vs Tiny ImageNet and DTD (600 ID images from CIFAR-10
test, disjoint from the calibration images, 600 per OOD set), decisions flipped at the bundle's
threshold, and backbone p50 at batch 1 / 32. Writes benchmarks/results/int8_backbone.{json,md}.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import machine, ort_session  # benchmarks/common.py

OUT = Path(__file__).resolve().parent / "results"


def _scores(backbone, denoiser, images):
    outs = [o.name for o in denoiser.get_outputs()]
    z = np.concatenate([backbone.run(["z0"], {"images": images[i : i + 64]})[0] for i in range(0, len(images), 64)])
    parts = [dict(zip(outs, denoiser.run(outs, {"z0": z[i : i + 64]}))) for i in range(0, len(z), 64)]
    return z, {k: np.concatenate([p[k] for p in parts]) for k in outs}


def _p50(sess, x, reps):
    sess.run(["z0"], {"images": x})
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        sess.run(["z0"], {"images": x})
        t.append(time.perf_counter() - s)
    return float(np.median(t)) * 1e3


def main():
    import onnx

    from dlsr_deploy.export import onnx_utils as ou
    from dlsr_deploy.manifest import output_name, read_manifest
    from dlsr_deploy.metrics import auroc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--from-blocks", type=int, nargs="+", default=[12, 8, 4, 1])
    a = ap.parse_args()
    m = read_manifest(Path(a.bundle))
    head, thr = m.threshold.score, m.threshold.value
    test = np.load(a.data / "cifar10_test.npz")["images"]
    sets = {
        "id": test[:600],
        "tinyimagenet": np.load(a.data / "tinyimagenet_val_32.npz")["images"][:600],
        "dtd": np.load(a.data / "dtd_subset10.npz")["images"][:600],
    }
    calib = test[5000:5256]
    fp32 = onnx.load(str(m.file("backbone")))
    den = ort_session(str(m.file("denoiser")), a.threads)
    ref_b = ort_session(str(m.file("backbone")), a.threads)
    ref = {k: _scores(ref_b, den, x) for k, x in sets.items()}
    rows = []
    for fb in [None, *a.from_blocks]:
        sess = ref_b if fb is None else ort_session(ou.quantize_backbone_int8(fp32, calib, from_block=fb), a.threads)
        got = ref if fb is None else {k: _scores(sess, den, x) for k, x in sets.items()}
        z_ref, z = ref["id"][0], got["id"][0]
        row = {
            "from_block": fb,
            "z0_rel": float(np.linalg.norm(z - z_ref, axis=1).mean() / np.linalg.norm(z_ref, axis=1).mean()),
            "backbone_b1_ms": _p50(sess, test[:1], 30),
            "backbone_b32_ms": _p50(sess, test[:32], 8),
        }
        for score in ("mfsim", head):
            o = output_name(score)
            for s in ("tinyimagenet", "dtd"):
                row[f"auroc_{score}_{s}"] = 100 * auroc(got["id"][1][o], got[s][1][o])
        h = output_name(head)
        a_ref = np.concatenate([ref[k][1][h] for k in sets])
        a_got = np.concatenate([got[k][1][h] for k in sets])
        row["flips"] = int(((a_ref > thr) != (a_got > thr)).sum())
        row["images"] = len(a_ref)
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = {"bundle": a.bundle, "machine": machine(), "threads": a.threads, "headline": head, "rows": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / "int8_backbone.json").write_text(json.dumps(res, indent=2) + "\n")
    md = _markdown(res)
    (OUT / "int8_backbone.md").write_text(md + "\n")
    print(md)


def _markdown(res):
    head = res["headline"]
    base = res["rows"][0]
    lines = [
        "# Static INT8 backbone on ONNX Runtime CPU (`python benchmarks/int8_backbone.py`)",
        "",
        f"Bundle `{res['bundle']}`; {res['threads']} threads; {res['machine']}. Blocks >= FROM quantized (stem and "
        "earlier blocks FP32); the denoiser is the bundle's FP32 one. AUROC in % (600 CIFAR-10 test images vs 600 per "
        f"OOD set); flips of the {head} decision at the bundle threshold over all 1,800 images.",
        "",
        f"| backbone | z0 rel. error | MFsim TIN / DTD | {head} TIN / DTD | flips | backbone p50 b1 | b32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        name = "FP32" if r["from_block"] is None else f"INT8 blocks >= {r['from_block']}"
        lines.append(
            f"| {name} | {r['z0_rel']:.3f} | {r['auroc_mfsim_tinyimagenet']:.2f} / {r['auroc_mfsim_dtd']:.2f} | "
            f"{r[f'auroc_{head}_tinyimagenet']:.2f} / {r[f'auroc_{head}_dtd']:.2f} | {r['flips']} "
            f"({r['flips'] / r['images']:.1%}) | {r['backbone_b1_ms']:.2f} ms "
            f"({base['backbone_b1_ms'] / r['backbone_b1_ms']:.2f}x) | {r['backbone_b32_ms']:.1f} ms "
            f"({base['backbone_b32_ms'] / r['backbone_b32_ms']:.2f}x) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
