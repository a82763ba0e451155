"""One graph per decision, measured (issue 28, item 4): the headline through decision.onnx (one call)
against backbone.onnx + heads.onnx (two calls), same bundle, same process, interleaved rounds.

    python -m research.precision.decision_graph BUNDLE [BUNDLE ...] [--backend ort-cpu]
        [--stem decision_graph]   -> research/precision/results/<stem>.{json,md}
"""

import argparse

import numpy as np

from benchmarks.harness import p50_for_ms, results_dir, write_results
from dlsr_deploy.machine import describe
from dlsr_deploy.runtime import Detector

RESULTS = results_dir(__file__)


def _p50(backend, x, graphs, seconds: float) -> float:
    return p50_for_ms(lambda: backend.run(x, graphs), seconds)


def measure(bundle: str, backend: str, batches, rounds: int, seconds: float) -> list:
    rows = []
    with Detector.load(bundle, backend=backend) as det:
        m = det.manifest
        if m.decision_score is None:
            return [{"bundle": m.name, "status": "no decision.onnx (the headline needs the denoiser)"}]
        two = [g for g in m.score_graphs if m.headline in m.score_graphs[g]][:1]
        for b in batches:
            x = np.random.default_rng(0).integers(0, 256, (b, m.native_size, m.native_size, 3), dtype=np.uint8)
            for g in (["decision"], two):  # warm-up
                _p50(det.backend, x, g, 0.2)
            one, pair = [], []
            for _ in range(rounds):  # interleaved: drift on a shared machine hits both alike
                one.append(_p50(det.backend, x, ["decision"], seconds))
                pair.append(_p50(det.backend, x, two, seconds))
            rows.append(
                {
                    "bundle": m.name,
                    "precision": m.precision,
                    "backend": det.backend_name,
                    "batch": b,
                    "one_graph_ms": float(np.median(one)),
                    "two_graphs_ms": float(np.median(pair)),
                    "speedup": float(np.median(pair) / np.median(one)),
                    "status": "ok",
                }
            )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--backend", default="ort-cpu")
    ap.add_argument("--batch", type=int, action="append", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--stem", default="decision_graph")
    a = ap.parse_args()
    rows = [r for b in a.bundles for r in measure(b, a.backend, a.batch or [1, 32], a.rounds, a.seconds)]
    res = {
        "machine": describe(),
        "command": "python -m research.precision.decision_graph " + " ".join(a.bundles),
        "rows": rows,
    }
    lines = [
        "# One graph per decision: decision.onnx vs backbone.onnx + heads.onnx",
        "",
        f"Machine: {res['machine']}. Command: `{res['command']}`. p50 latency per call, median of "
        f"{a.rounds} interleaved rounds of {a.seconds:g} s each.",
        "",
        "| bundle | precision | backend | batch | one graph (ms) | two graphs (ms) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['bundle']} | | | | {r['status']} | | |")
            continue
        lines.append(
            f"| {r['bundle']} | {r['precision']} | {r['backend']} | {r['batch']} | {r['one_graph_ms']:.3f} | "
            f"{r['two_graphs_ms']:.3f} | {r['speedup']:.2f}x |"
        )
    write_results(RESULTS, a.stem, res, lambda _: "\n".join(lines))


if __name__ == "__main__":
    main()
