"""OpenVINO's INT8 for the backbone (NNCF static QDQ): what each choice costs in accuracy and
gains in time (issue 13).

    python benchmarks/int8_openvino.py export/c50k-fp32 --data ../shared/data

The bundle's FP32 `backbone.onnx` is quantized with `onnx_utils.quantize_backbone_openvino`
(NNCF, calibrated on 300 CIFAR-10 *train* images, disjoint from the test images scored here) and
compiled by OpenVINO's CPU plugin (f32 hint, LATENCY, 2 threads); the denoiser is the bundle's
FP32 one on OpenVINO.
Per variant: z0 relative L2 error, AUROC of MFsim and of the headline vs Tiny ImageNet and DTD
(600 CIFAR-10 test images vs 600 per OOD set), decisions flipped at the bundle's threshold over
all 1,800 images, backbone p50 at batch 1 / 32. Writes benchmarks/results/int8_openvino.{json,md}.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine  # benchmarks/common.py

OUT = Path(__file__).resolve().parent / "results"
# (label, from_block, fast bias correction, taps + last block FP32)
VARIANTS = [
    ("NNCF defaults (fast bias correction), blocks >= 1", 1, True, False),
    ("full bias correction, blocks >= 1", 1, False, False),
    ("full bias correction, blocks >= 1, taps FP32", 1, False, True),
    ("full bias correction, blocks >= 2, taps FP32", 2, False, True),
    ("full bias correction, blocks >= 4, taps FP32", 4, False, True),
    ("full bias correction, blocks >= 8", 8, False, False),
]


class Compiled:
    def __init__(self, core, model, threads):
        cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        self.cm = core.compile_model(model, "CPU", cfg)
        self.req = self.cm.create_infer_request()

    def __call__(self, name, x, out):
        return np.array(self.req.infer({name: np.ascontiguousarray(x)})[self.cm.output(out)])


def main():
    import onnx
    import openvino as ov

    from dlsr_deploy.export import onnx_utils as ou
    from dlsr_deploy.manifest import output_name, read_manifest
    from dlsr_deploy.metrics import auroc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    m = read_manifest(Path(a.bundle))
    head, thr = m.threshold.score, m.threshold.value
    scores = ["mfsim", head]
    test = np.load(a.data / "cifar10_test.npz")["images"]
    sets = {
        "id": test[:600],
        "tinyimagenet": np.load(a.data / "tinyimagenet_val_32.npz")["images"][:600],
        "dtd": np.load(a.data / "dtd_subset10.npz")["images"][:600],
    }
    calib = np.load(a.data / "cifar10_train.npz")["images"][:300]
    core = ov.Core()
    den = Compiled(core, str(m.file("denoiser")), a.threads)

    def run(bb):
        out = {}
        for k, x in sets.items():
            z = np.concatenate([bb("images", x[i : i + 50], "z0") for i in range(0, len(x), 50)])
            out[k] = (z, {s: den("z0", z, output_name(s)) for s in scores})
        return out

    def p50(bb, x, reps):
        bb("images", x, "z0")
        t = []
        for _ in range(reps):
            s = time.perf_counter()
            bb("images", x, "z0")
            t.append(time.perf_counter() - s)
        return float(np.median(t)) * 1e3

    fp32 = onnx.load(str(m.file("backbone")))
    ref_bb = Compiled(core, str(m.file("backbone")), a.threads)
    ref = run(ref_bb)
    rows = []
    for label, fb, fast, taps in [("FP32", None, None, None), *VARIANTS]:
        if fb is None:
            bb, got = ref_bb, ref
        else:
            q = ou.quantize_backbone_openvino(fp32, calib, from_block=fb, fast_bias_correction=fast, fp32_taps=taps)
            with tempfile.TemporaryDirectory() as d:
                onnx.save(q, f"{d}/backbone.onnx")
                bb = Compiled(core, f"{d}/backbone.onnx", a.threads)
            got = run(bb)
        z_ref, z = ref["id"][0], got["id"][0]
        row = {
            "variant": label,
            "from_block": fb,
            "z0_rel": float(np.linalg.norm(z - z_ref, axis=1).mean() / np.linalg.norm(z_ref, axis=1).mean()),
            "backbone_b1_ms": p50(bb, test[:1], 40),
            "backbone_b32_ms": p50(bb, test[:32], 10),
        }
        for s in scores:
            for o in ("tinyimagenet", "dtd"):
                row[f"auroc_{s}_{o}"] = 100 * auroc(got["id"][1][s], got[o][1][s])
        a_ref = np.concatenate([ref[k][1][head] for k in sets])
        a_got = np.concatenate([got[k][1][head] for k in sets])
        row["flips"], row["images"] = int(((a_ref > thr) != (a_got > thr)).sum()), len(a_ref)
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = {"bundle": a.bundle, "machine": machine(), "threads": a.threads, "headline": head, "rows": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / "int8_openvino.json").write_text(json.dumps(res, indent=2) + "\n")
    md = _markdown(res)
    (OUT / "int8_openvino.md").write_text(md + "\n")
    print(md)


def _markdown(res):
    head, base = res["headline"], res["rows"][0]
    lines = [
        "# Static INT8 backbone on OpenVINO CPU (NNCF; `python benchmarks/int8_openvino.py`)",
        "",
        f"Bundle `{res['bundle']}`; OpenVINO CPU, f32 hint, LATENCY, {res['threads']} threads; {res['machine']}. "
        "Calibrated on 300 CIFAR-10 train images; the denoiser is the bundle's FP32 one. AUROC in % (600 CIFAR-10 "
        f"test images vs 600 per OOD set); flips of the {head} decision at the bundle threshold over all 1,800 images "
        "(the guard allows 0.5 % = 9).",
        "",
        f"| backbone | z0 rel. error | MFsim TIN / DTD | {head} TIN / DTD | flips | backbone p50 b1 | b32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['variant']} | {r['z0_rel']:.3f} | {r['auroc_mfsim_tinyimagenet']:.2f} / "
            f"{r['auroc_mfsim_dtd']:.2f} | {r[f'auroc_{head}_tinyimagenet']:.2f} / {r[f'auroc_{head}_dtd']:.2f} | "
            f"{r['flips']} ({r['flips'] / r['images']:.1%}) | {r['backbone_b1_ms']:.2f} ms "
            f"({base['backbone_b1_ms'] / r['backbone_b1_ms']:.2f}x) | {r['backbone_b32_ms']:.1f} ms "
            f"({base['backbone_b32_ms'] / r['backbone_b32_ms']:.2f}x) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
