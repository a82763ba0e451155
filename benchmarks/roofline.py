"""Where the time goes on the CPU: per-stage profile of the fastest configurations and the
roofline they sit under (issue 13).

    python -m benchmarks roofline export/c50k-fp32 export/c50k-int8

Measures on this machine: the FP32 GEMM rate (torch SGEMM, best of 5 windows), the 8-bit GEMM
rate (ONNX Runtime MatMulInteger, u8 x u8 as the 8-bit denoiser runs, 2048^3), and the memory
bandwidth (numpy copy of 512 MB: bytes read + written per second). Counts from the graphs: FLOPs
per image of each graph (Conv and MatMul/Gemm, shapes by ONNX shape inference at batch 1) and the
weight bytes each graph reads per call (every initializer feeding a Conv/MatMul/Gemm node, per
node, so the unrolled DDIM steps that share weights count once per step). Times per stage: the
fastest accuracy-guarded configurations of dlsr-bench, i.e. ORT CPU with the 8-bit denoiser at
batch 1 and OpenVINO FP32 at batch 32 (plus ORT FP32 at both for reference), median of rounds.
Writes benchmarks/results/roofline.{json,md}.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.harness import machine, results_dir, write_results

RESULTS = results_dir(__file__)


HEAVY = ("Conv", "MatMul", "Gemm", "MatMulInteger", "ConvInteger", "QLinearConv", "DynamicQuantizeMatMul")


def graph_costs(path: Path) -> dict:
    """FLOPs per image and weight bytes read per call of one ONNX graph (batch 1)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    for inp in model.graph.input:
        d = inp.type.tensor_type.shape.dim
        if d and not d[0].dim_value:
            d[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[v.name] = [x.dim_value for x in v.type.tensor_type.shape.dim]
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    missing = [n.output[0] for n in model.graph.node if n.op_type in HEAVY and not all(shapes.get(n.output[0]) or [0])]
    if missing:  # shapes computed at run time (the in-graph resize): run one input and read them
        shapes.update(_run_shapes(model, missing))
    for name, arr in inits.items():
        shapes[name] = list(arr.shape)
    flops, weight_bytes = 0.0, 0
    for n in model.graph.node:
        if n.op_type not in HEAVY:
            continue
        w = next((i for i in n.input[1:] if i in inits), None)
        weight_bytes += inits[w].nbytes if w else 0
        out = shapes.get(n.output[0])
        if not out or not all(out):
            continue
        if "Conv" in n.op_type:
            wshape = shapes.get(n.input[1] if n.op_type != "QLinearConv" else n.input[3])
            if wshape:
                flops += 2 * float(np.prod(out)) * float(np.prod(wshape[1:]))
        else:
            a = shapes.get(n.input[0])
            if a:
                flops += 2 * float(np.prod(out)) * a[-1]
    return {"flops_per_image": flops, "weight_bytes_per_call": weight_bytes}


def _run_shapes(model, names):
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in names:
        m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in s.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.zeros(shape, np.uint8 if "uint8" in i.type else np.float32)
    out = s.run(names, feeds)
    return {n: list(o.shape) for n, o in zip(names, out)}


def sgemm_gflops():
    from dlsr_deploy.bench.roofline import gemm_gflops

    return gemm_gflops()


def int8_gemm_gops(n=2048, threads=None):
    """u8 x u8 MatMulInteger on ONNX Runtime (the 8-bit denoiser's kernel family)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "mmi",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.UINT8, [n, n]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    r = np.random.default_rng(0)
    feeds = {"a": r.integers(0, 255, (n, n), dtype=np.uint8), "b": r.integers(0, 255, (n, n), dtype=np.uint8)}
    from dlsr_deploy.timing import measure

    rates = 2 * n**3 / measure(lambda: s.run(None, feeds), min_iters=5, max_iters=5).seconds / 1e9
    return {"gops": float(rates.max()), "windows": [round(float(x), 1) for x in rates], "n": n}


def bandwidth_gbs(mb=512):
    a = np.ones(mb * (1 << 20) // 8)
    b = np.empty_like(a)
    from dlsr_deploy.timing import measure

    rates = 2 * a.nbytes / measure(lambda: np.copyto(b, a), min_iters=5, max_iters=5).seconds / 1e9
    return {
        "gbs": float(rates.max()),
        "windows": [round(float(x), 1) for x in rates],
        "how": f"numpy copy of {mb} MB (read + write)",
    }


def stage_times(bundle, backend, batch, rounds, threads):
    from dlsr_deploy.runtime import Detector

    with Detector.load(bundle, backend=backend, threads=threads, self_check="never") as det:
        s = det.manifest.native_size
        x = np.random.default_rng(0).integers(0, 255, (batch, s, s, 3), dtype=np.uint8)
        from dlsr_deploy.timing import measure

        return measure(lambda: det.backend.run_timed(x), min_iters=rounds, max_iters=rounds).stages


def main():
    from dlsr_deploy.manifest import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32_bundle")
    ap.add_argument("int8_bundle")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    res = {"machine": machine(), "threads": a.threads}
    res["sgemm"] = sgemm_gflops()
    res["int8_gemm"] = int8_gemm_gops(threads=a.threads)
    res["bandwidth"] = bandwidth_gbs()
    print(json.dumps(res), flush=True)
    costs = {}
    for tag, b in (("fp32", a.fp32_bundle), ("int8", a.int8_bundle)):
        m = read_manifest(Path(b))
        costs[tag] = {g: graph_costs(m.file(g)) for g in ("backbone", "denoiser")}
    res["costs"] = costs
    configs = [
        ("ORT CPU, 8-bit denoiser", a.int8_bundle, "ort-cpu", 1, 40),
        ("ORT CPU FP32", a.fp32_bundle, "ort-cpu", 1, 40),
        ("OpenVINO FP32", a.fp32_bundle, "openvino", 1, 40),
        ("OpenVINO FP32", a.fp32_bundle, "openvino", 32, 8),
        ("ORT CPU FP32", a.fp32_bundle, "ort-cpu", 32, 8),
        ("ORT CPU, 8-bit denoiser", a.int8_bundle, "ort-cpu", 32, 8),
    ]
    res["stages"] = []
    for name, b, be, batch, rounds in configs:
        st = stage_times(b, be, batch, rounds, a.threads)
        tag = "int8" if b == a.int8_bundle else "fp32"
        row = {"config": name, "backend": be, "batch": batch, **{f"{k}_ms": v * 1e3 for k, v in st.items()}}
        for g in ("backbone", "denoiser"):
            c = costs[tag][g]
            row[f"{g}_gflops"] = c["flops_per_image"] * batch / st[g] / 1e9
            row[f"{g}_weight_gbs"] = c["weight_bytes_per_call"] / st[g] / 1e9
        row["images_per_s"] = batch / (st["backbone"] + st["denoiser"])
        res["stages"].append(row)
        print(json.dumps(row), flush=True)
    write_results(RESULTS, "roofline", res, _markdown)


def _markdown(res):
    c = res["costs"]
    bb, dn = c["fp32"]["backbone"], c["fp32"]["denoiser"]
    dn8 = c["int8"]["denoiser"]
    lines = [
        "# Where the time goes on the CPU (`python -m benchmarks roofline`)",
        "",
        f"{res['machine']}, {res['threads']} threads. Measured ceilings: FP32 GEMM "
        f"{res['sgemm']['gflops']:.0f} GFLOP/s ({res['sgemm']['library']}), 8-bit GEMM (ORT MatMulInteger u8 x u8) "
        f"{res['int8_gemm']['gops']:.0f} GOP/s, memory bandwidth {res['bandwidth']['gbs']:.1f} GB/s "
        f"({res['bandwidth']['how']}).",
        "",
        "| graph | GFLOP per image | weight MB read per call | compute floor at the GEMM rate "
        "| bandwidth floor at batch 1 |",
        "|---|---|---|---|---|",
    ]
    for name, g, rate in (
        ("backbone FP32", bb, res["sgemm"]["gflops"]),
        ("denoiser FP32", dn, res["sgemm"]["gflops"]),
        ("denoiser 8-bit", dn8, res["int8_gemm"]["gops"]),
    ):
        wb = g["weight_bytes_per_call"]
        lines.append(
            f"| {name} | {g['flops_per_image'] / 1e9:.3f} | {wb / 1e6:.1f} | "
            f"{g['flops_per_image'] / rate / 1e6:.2f} ms/image | {wb / res['bandwidth']['gbs'] / 1e6:.2f} ms |"
        )
    lines += [
        "",
        "| configuration | batch | backbone | denoiser | images/s | backbone GFLOP/s | denoiser GFLOP/s "
        "| denoiser weight GB/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["stages"]:
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['backbone_ms']:.1f} ms | {r['denoiser_ms']:.1f} ms | "
            f"{r['images_per_s']:.1f} | {r['backbone_gflops']:.0f} | {r['denoiser_gflops']:.0f} | "
            f"{r['denoiser_weight_gbs']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
