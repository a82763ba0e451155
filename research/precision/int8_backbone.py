"""Static INT8 for the backbone: what each choice of quantized blocks costs in accuracy and
gains in time (issue 13).

    python -m research.precision.int8_backbone export/c50k-fp32 --data ../shared/data

The bundle's FP32 `backbone.onnx` is quantized with `onnx_utils.quantize_backbone_int8` (QDQ,
uint8 activations calibrated by min/max on 256 CIFAR-10 test images, int8 per-channel 7-bit
weights, Conv/Clip/Add of blocks >= FROM; the stem and earlier blocks FP32) and run on ORT CPU
next to the FP32 one; both feed the bundle's FP32 denoiser. Reported per FROM: z0 relative L2
error, AUROC of MFsim and of the headline vs Tiny ImageNet and DTD (600 ID images from CIFAR-10
test, disjoint from the calibration images, 600 per OOD set), decisions flipped at the bundle's
threshold, and backbone p50 at batch 1 / 32. Writes research/precision/results/int8_backbone.{json,md}.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.harness import machine, ort_session, p50_ms, results_dir, write_results

from .table import accuracy_row, backbone_table

RESULTS = results_dir(__file__)


def _scores(backbone, denoiser, images):
    outs = [o.name for o in denoiser.get_outputs()]
    z = np.concatenate([backbone.run(["z0"], {"images": images[i : i + 64]})[0] for i in range(0, len(images), 64)])
    parts = [dict(zip(outs, denoiser.run(outs, {"z0": z[i : i + 64]}))) for i in range(0, len(z), 64)]
    return z, {k: np.concatenate([p[k] for p in parts]) for k in outs}


def main():
    import onnx

    from dlsr_deploy.export import onnx_utils as ou
    from dlsr_deploy.manifest import read_manifest

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
        row = {"from_block": fb, **accuracy_row(ref, got, head, thr)}
        row["backbone_b1_ms"] = p50_ms(lambda s=sess: s.run(["z0"], {"images": test[:1]}), 30)
        row["backbone_b32_ms"] = p50_ms(lambda s=sess: s.run(["z0"], {"images": test[:32]}), 8)
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = {"bundle": a.bundle, "machine": machine(), "threads": a.threads, "headline": head, "rows": rows}
    write_results(RESULTS, "int8_backbone", res, _markdown)


def _markdown(res):
    return backbone_table(
        res,
        "Static INT8 backbone on ONNX Runtime CPU (`python -m research.precision.int8_backbone`)",
        f"Bundle `{res['bundle']}`; {res['threads']} threads; {res['machine']}. Blocks >= FROM quantized (stem and "
        "earlier blocks FP32); the denoiser is the bundle's FP32 one. AUROC in % (600 CIFAR-10 test images vs 600 per "
        f"OOD set); flips of the {res['headline']} decision at the bundle threshold over all 1,800 images.",
        lambda r: "FP32" if r["from_block"] is None else f"INT8 blocks >= {r['from_block']}",
    )


if __name__ == "__main__":
    main()
