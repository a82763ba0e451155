"""What bounds the batch-1 target of issue 28 (>= 1.5x the best accurate peer, <= 0.6x our FP32
latency): each part of the bf16 headline path timed alone at batch 1 on OpenVINO, beside the best
accurate peer (the plain torch.onnx.export with f32 pinned) and our FP32 decision graph, in one
process, interleaved rounds. The bf16 backbone graph alone is the floor of any bf16 headline path:
peer / backbone-alone is the most a free head call could give.

    python benchmarks/batch1_bound.py export/default-family [--rounds 7 --seconds 1.5]
        -> benchmarks/results/batch1_bound.{json,md}
"""

import argparse
import time
from pathlib import Path

import numpy as np
from common import write_results  # benchmarks/common.py

from dlsr_deploy.machine import describe
from dlsr_deploy.runtime import Detector


def _p50(fn, seconds: float) -> float:
    t_end, lat = time.perf_counter() + seconds, []
    while time.perf_counter() < t_end or len(lat) < 20:
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    return float(np.median(lat)) * 1e3


def _calls(family: Path, x: np.ndarray) -> dict:
    """name -> a zero-argument call at batch 1 (the Detectors stay open for the run)."""
    from dlsr_deploy.bench.peers import PlainExportRunner

    bf16 = Detector.load(family / "bf16", backend="openvino")
    fp32 = Detector.load(family / "fp32", backend="openvino")
    int8 = Detector.load(family / "int8", backend="openvino")
    peer = PlainExportRunner(fp32.manifest, engine="openvino-f32", path="headline")
    z0 = bf16.backend.run_graph("backbone", {"images": x})["z0"]
    ours = bf16.graphs_for()
    return {
        "peer: plain export, OpenVINO f32": lambda: peer.run(x),
        "ours FP32: decision.onnx": lambda: fp32.backend.run(x, fp32.graphs_for()),
        f"ours bf16: {' + '.join(['backbone'] + ours)}": lambda: bf16.backend.run(x, ours),
        "bf16 backbone.onnx alone": lambda: bf16.backend.run_graph("backbone", {"images": x}),
        "head.onnx alone (f32)": lambda: bf16.backend.run_graph(ours[0], {"z0": z0}),
        "ours int8: decision.onnx": lambda: int8.backend.run(x, int8.graphs_for()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("family", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=1.5)
    a = ap.parse_args()
    x = np.load(Path(__file__).resolve().parents[2] / "shared/data/cifar10_test.npz")["images"][:1]
    calls = _calls(a.family, x)
    for fn in calls.values():  # warm-up
        _p50(fn, 0.5)
    times = {k: [] for k in calls}
    for _ in range(a.rounds):  # interleaved: drift on a shared machine hits every row alike
        for k, fn in calls.items():
            times[k].append(_p50(fn, a.seconds))
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    names = list(p50)
    peer, fp32, ours, alone = (p50[n] for n in names[:4])
    res = {
        "machine": describe(),
        "command": f"python benchmarks/batch1_bound.py {a.family}",
        "p50_ms": p50,
        "rounds": times,
        "ratios": {
            "peer / ours bf16": peer / ours,
            "peer / bf16 backbone alone (a free head call)": peer / alone,
            "ours bf16 / ours FP32": ours / fp32,
            "bf16 backbone alone / ours FP32": alone / fp32,
            "peer / ours int8": peer / p50[names[5]],
            "ours int8 / ours FP32": p50[names[5]] / fp32,
        },
    }
    write_results("batch1_bound", res, lambda r: _markdown(r, a))


def _markdown(res: dict, a) -> str:
    lines = [
        "# Batch 1 on OpenVINO: the bf16 headline path and what bounds it (issue 28)",
        "",
        f"Machine: {res['machine']}. Command: `{res['command']}`. p50 latency per call at batch 1, median of "
        f"{a.rounds} interleaved rounds of {a.seconds:g} s each.",
        "",
        "| call | p50 (ms) |",
        "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in res["p50_ms"].items()],
        "",
        "| ratio | value | target |",
        "|---|---|---|",
    ]
    targets = {k: ">= 1.5" for k in res["ratios"] if k.startswith("peer / ours")}
    targets.update({k: "<= 0.6" for k in res["ratios"] if k.startswith("ours") and k.endswith("/ ours FP32")})
    for k, v in res["ratios"].items():
        lines.append(f"| {k} | {v:.2f} | {targets.get(k, '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
