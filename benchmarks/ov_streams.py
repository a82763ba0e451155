"""Parallel streams on OpenVINO, measured (issue 28, item 5): the headline path of each bundle at a
large batch in LATENCY mode (one stream, every thread on one request) against THROUGHPUT mode (the
plugin's streams, the batch split over an AsyncInferQueue), same process, interleaved rounds.

    python -m benchmarks ov_streams BUNDLE [BUNDLE ...] [--batch 32] [--rounds 5] [--stem ov_streams]
        -> benchmarks/results/<stem>.{json,md}
"""

import argparse
import time

import numpy as np

from benchmarks.harness import results_dir, write_results
from dlsr_deploy.machine import describe
from dlsr_deploy.manifest import read_manifest
from dlsr_deploy.runtime.openvino import OpenVinoBackend

RESULTS = results_dir(__file__)


def _images_per_s(backend, x, graphs, seconds: float) -> float:
    t_end, n, t0 = time.perf_counter() + seconds, 0, time.perf_counter()
    while time.perf_counter() < t_end or n < 3:
        backend.run(x, graphs)
        n += 1
    return n * len(x) / (time.perf_counter() - t0)


def measure(bundle: str, batch: int, rounds: int, seconds: float) -> dict:
    m = read_manifest(bundle)
    graphs = m.graphs_for([m.headline])
    x = np.random.default_rng(0).integers(0, 256, (batch, m.native_size, m.native_size, 3), dtype=np.uint8)
    backends = {mode: OpenVinoBackend(m, mode=mode) for mode in ("latency", "throughput")}
    for b in backends.values():
        b.run(x, graphs)  # compile and warm up
    rates = {mode: [] for mode in backends}
    for _ in range(rounds):
        for mode, b in backends.items():
            rates[mode].append(_images_per_s(b, x, graphs, seconds))
    for b in backends.values():
        b.close()
    ratio = [t / lat for t, lat in zip(rates["throughput"], rates["latency"])]
    return {
        "bundle": m.name,
        "precision": m.precision,
        "graphs": graphs,
        "batch": batch,
        "latency_images_per_s": float(np.median(rates["latency"])),
        "throughput_images_per_s": float(np.median(rates["throughput"])),
        "ratio_median": float(np.median(ratio)),
        "ratio_rounds": [round(r, 3) for r in ratio],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--stem", default="ov_streams")
    a = ap.parse_args()
    rows = [measure(b, a.batch, a.rounds, a.seconds) for b in a.bundles]
    res = {"machine": describe(), "rows": rows}
    lines = [
        "# OpenVINO streams: LATENCY vs THROUGHPUT mode (`python -m benchmarks ov_streams`)",
        "",
        f"Machine: {res['machine']}. Headline path, batch {a.batch}, {a.rounds} interleaved rounds of "
        f"{a.seconds:.0f} s per mode.",
        "",
        "| bundle | precision | graphs | LATENCY images/s | THROUGHPUT images/s | ratio (per round) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['bundle']} | {r['precision']} | {' + '.join(r['graphs'])} | {r['latency_images_per_s']:.0f} | "
            f"{r['throughput_images_per_s']:.0f} | {r['ratio_median']:.3f} ({', '.join(map(str, r['ratio_rounds']))}) |"
        )
    write_results(RESULTS, a.stem, res, lambda _: "\n".join(lines))


if __name__ == "__main__":
    main()
