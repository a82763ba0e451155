"""OpenVINO's INT8 for the backbone (NNCF static QDQ): what each choice costs in accuracy and
gains in time (issue 13).

    python -m research.precision.int8_openvino export/c50k-fp32 --data ../shared/data

The bundle's FP32 `backbone.onnx` is quantized with `onnx_utils.quantize_backbone_openvino`
(NNCF, calibrated on 300 CIFAR-10 *train* images, disjoint from the test images scored here) and
compiled by OpenVINO's CPU plugin (f32 hint, LATENCY, 2 threads); the denoiser is the bundle's
FP32 one on OpenVINO.
Per variant: z0 relative L2 error, AUROC of MFsim and of the headline vs Tiny ImageNet and DTD
(600 CIFAR-10 test images vs 600 per OOD set), decisions flipped at the bundle's threshold over
all 1,800 images, backbone p50 at batch 1 / 32. Writes research/precision/results/int8_openvino.{json,md}.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.harness import machine, p50_ms, results_dir, write_results

from .table import accuracy_row, backbone_table

# (label, from_block, fast bias correction, taps + last block FP32)
RESULTS = results_dir(__file__)
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
            out[k] = (z, {output_name(s): den("z0", z, output_name(s)) for s in scores})
        return out

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
        row = {"variant": label, "from_block": fb, **accuracy_row(ref, got, head, thr)}
        row["backbone_b1_ms"] = p50_ms(lambda b=bb: b("images", test[:1], "z0"), 40)
        row["backbone_b32_ms"] = p50_ms(lambda b=bb: b("images", test[:32], "z0"), 10)
        rows.append(row)
        print(json.dumps(row), flush=True)
    res = {"bundle": a.bundle, "machine": machine(), "threads": a.threads, "headline": head, "rows": rows}
    write_results(RESULTS, "int8_openvino", res, _markdown)


def _markdown(res):
    return backbone_table(
        res,
        "Static INT8 backbone on OpenVINO CPU (NNCF; `python -m research.precision.int8_openvino`)",
        f"Bundle `{res['bundle']}`; OpenVINO CPU, f32 hint, LATENCY, {res['threads']} threads; {res['machine']}. "
        "Calibrated on 300 CIFAR-10 train images; the denoiser is the bundle's FP32 one. AUROC in % (600 CIFAR-10 "
        f"test images vs 600 per OOD set); flips of the {res['headline']} decision at the bundle threshold over all "
        "1,800 images (the guard allows 0.5 % = 9).",
        lambda r: r["variant"],
    )


if __name__ == "__main__":
    main()
