"""How ONNX Runtime's thread pools interact when backbone.onnx and denoiser.onnx run back
to back on the CPU (the profile behind OrtSession's spin-wait setting).

    .venv/bin/python -m benchmarks ort_threads export/c10-fp32 [--data ../shared/data/cifar10_test.npz]

Variants, timed in one process, interleaved round by round so that machine drift hits
them alike (p50 of end-to-end calls: uint8 images in, scores out):
  default-spin   two sessions, each with ORT's default pool (idle threads spin-wait)
  shipped        dlsr_deploy.runtime's OrtBackend: two sessions, spin-wait off
  fused          one session on pipeline.onnx (bundle exported with --fused), default pool
Writes benchmarks/results/ort_threads.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.harness import results_dir
from dlsr_deploy.bench.harness import machine_header
from dlsr_deploy.io import atomic_write_text
from dlsr_deploy.manifest import read_manifest
from dlsr_deploy.runtime.ort import OrtBackend, OrtSession


def variants(bundle: Path):
    m = read_manifest(bundle)
    bb = OrtSession(m.file("backbone"), "cpu")
    dn = OrtSession(m.file("denoiser"), "cpu")
    out = {"default-spin": lambda x: dn.run({"z0": bb.run({"images": x})["z0"]})}
    shipped = OrtBackend(m)
    out["shipped"] = shipped.run
    if "pipeline" in m.files:
        fused = OrtSession(m.file("pipeline"), "cpu")
        out["fused"] = lambda x: fused.run({"images": x})
    return out


def p50_ms(f, x, seconds: float) -> float:
    """Median ms of f(x) over at least `seconds` (dlsr_deploy.timing, two warm-up calls)."""
    from dlsr_deploy.timing import measure

    f(x)
    return measure(lambda: f(x), min_duration=seconds, min_iters=5).p50_ms


def measure_rounds(vs: dict, pool: np.ndarray, batches, rounds: int, seconds: float) -> dict:
    """{variant: {batch: [p50 ms per round]}}, variants interleaved within each round."""
    res = {v: {b: [] for b in batches} for v in vs}
    for r in range(rounds):
        for b in batches:
            x = np.ascontiguousarray(pool[np.linspace(0, len(pool) - 1, b).astype(int)])
            for v, f in vs.items():
                res[v][b].append(p50_ms(f, x, seconds))
                print(f"round {r + 1}/{rounds} batch {b:3d} {v:13s} {res[v][b][-1]:8.1f} ms", file=sys.stderr)
    return res


def markdown(doc: dict, rounds: int, seconds: float) -> str:
    header = doc["header"]
    lines = [
        "# ONNX Runtime CPU thread pools: two sessions back to back",
        "",
        f"Command: `{doc['command']}`",
        "",
        f"Machine: {header.get('cpu')} [{header.get('simd')}], {header['cpu_count']} cores; onnxruntime "
        f"{header['onnxruntime']}; created {header['created']}",
        "",
        f"p50 end-to-end latency (uint8 images in, scores out), median over {rounds} interleaved rounds of "
        f"{seconds:g} s each.",
        "",
        "| variant | batch | p50 ms | images/s | x default-spin | rounds (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['variant']} | {r['batch']} | {r['p50_ms']:.1f} | {r['images_per_s']:.1f} | "
            f"{r['x_default_spin']:.2f} | " + ", ".join(f"{x:.1f}" for x in r["rounds_ms"]) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", default="../shared/data/cifar10_test.npz")
    ap.add_argument("--batch", type=int, action="append", help="default: 1, 8, 32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="measured seconds per variant, batch and round")
    ap.add_argument("--out", type=Path, default=results_dir(__file__))
    a = ap.parse_args()
    batches = a.batch or [1, 8, 32]
    vs = variants(a.bundle)
    res = measure_rounds(vs, np.load(a.data)["images"], batches, a.rounds, a.seconds)
    rows = []
    for v in vs:
        for b in batches:
            med, base = float(np.median(res[v][b])), float(np.median(res["default-spin"][b]))
            rows.append(
                {
                    "variant": v,
                    "batch": b,
                    "p50_ms": med,
                    "images_per_s": b / med * 1e3,
                    "x_default_spin": base / med,
                    "rounds_ms": res[v][b],
                }
            )
    doc = {
        "header": machine_header(None),
        "bundle": str(a.bundle),
        "command": " ".join(["python"] + sys.argv),
        "rows": rows,
        "note": "median over rounds of each round's p50; all variants in one process, interleaved",
    }
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out / "ort_threads.json", json.dumps(doc, indent=1))
    md = markdown(doc, a.rounds, a.seconds)
    atomic_write_text(a.out / "ort_threads.md", md + "\n")
    print(md)


if __name__ == "__main__":
    main()
