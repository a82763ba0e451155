"""python -m benchmarks --list | SUITE [ARGS ...]: run one runtime-measurement suite.

ARGS go to the suite (`python -m benchmarks SUITE --help` shows its own options)."""

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (module or shell script in benchmarks/, what it measures, result files it writes)
SUITES = {
    "cpu": (
        "bench_cpu.sh",
        "dlsr-bench on the CPU: FP32/FP16/INT8 bundles and K = 1, 2, 3 against eager",
        "bench_cpu.*, bench_cpu_steps.*, parity*.md/json, ort_threads.*",
    ),
    "peers": (
        "peers.sh",
        "the bundles against PyTorch eager, torch.compile and a plain ONNX export",
        "bench_cpu_peers.*",
    ),
    "memory": ("memory", "peak and resident RSS while scoring 10,000 images", "memory.*"),
    "footprint": (
        "footprint",
        "what an edge app pays to embed a detector: disk, import, cold start, RSS",
        "footprint.*",
    ),
    "ort_threads": ("ort_threads", "ONNX Runtime thread pools with two graphs back to back", "ort_threads.*"),
    "ov_streams": ("ov_streams", "OpenVINO LATENCY vs THROUGHPUT mode at a large batch", "ov_streams.*"),
    "roofline": ("roofline", "per-stage profile and the roofline of the fastest configurations", "roofline.*"),
    "serve_load": ("serve_load", "load test of dlsr-serve (Ray Serve, dynamic batching)", "serve_load_*"),
    "ray_batch": ("ray_batch", "batch scoring on Ray Data vs dlsr-score in one process", "ray_batch.*"),
}


def run_suite(name: str, args: list) -> int:
    """Run suite `name` with its own arguments; returns its exit status."""
    target = SUITES[name][0]
    if target.endswith(".sh"):
        return subprocess.call(["bash", str(HERE / target), *args], env=dict(os.environ))
    module = importlib.import_module(f"benchmarks.{target}")
    sys.argv = [f"python -m benchmarks {name}", *args]
    module.main()
    return 0


def main(argv=None) -> int:
    """The command line: --list, or a suite and its arguments."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--list", action="store_true", help="list the suites, one per line, and what each measures")
    ap.add_argument("suite", nargs="?", choices=sorted(SUITES), help="the suite to run")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="the suite's own arguments")
    a = ap.parse_args(argv)
    if a.list or not a.suite:
        for name, (_, what, files) in SUITES.items():
            print(f"{name:12s} {what} -> benchmarks/results/{files}")
        return 0
    return run_suite(a.suite, a.args)


if __name__ == "__main__":
    sys.exit(main())
