"""Batch scoring on Ray Data vs `dlsr-score` in one process (issue 12).

    python -m benchmarks ray_batch export/c50k-fp32 --data ../shared/data -n 20000

The same 20,000 images (CIFAR-10 test + the first 10,000 of train, as .npz packs) through
`dlsr-score` (one process, ORT CPU) and through `dlsr-score --ray` on a local cluster of this
machine's CPUs (one actor holding every core; decode tasks beside it). Each runs in a fresh
process; wall time includes start-up (Ray's cluster start, for the Ray run), and the Ray run's
own rate (from its first batch to its last shard) is reported as well. The order alternates
over `--repeats` rounds. Writes benchmarks/results/ray_batch.{json,md}.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import machine
from dlsr_deploy.io import atomic_write_text

OUT = Path(__file__).resolve().parent / "results"


def _packs(data: Path, n: int, tmp: Path):
    import numpy as np

    test = np.load(data / "cifar10_test.npz")["images"]
    train = np.load(data / "cifar10_train.npz")["images"]
    images = np.concatenate([test, train])[:n]
    half = len(images) // 2
    paths = [tmp / "part_a.npz", tmp / "part_b.npz"]
    np.savez(paths[0], images=images[:half])
    np.savez(paths[1], images=images[half:])
    return [str(p) for p in paths], len(images)


def _timed(cmd):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    sec = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return sec


def run_single(exe, bundle, packs, tmp):
    return _timed([exe, bundle, *packs, "--backend", "ort-cpu", "--out", str(tmp / "single.csv"), "--quiet"])


def run_ray(exe, bundle, packs, tmp, k, cpus_per_actor):
    out = tmp / f"ray{k}"
    sec = _timed(
        [
            exe,
            bundle,
            *packs,
            "--backend",
            "ort-cpu",
            "--ray",
            "--out",
            str(out),
            "--quiet",
            "--shard-size",
            "2048",
            "--cpus-per-actor",
            str(cpus_per_actor),
        ]
    )
    summary = json.loads((out / "_summary.json").read_text())
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("part-*.parquet"))
    return sec, summary["images_per_s"], rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("-n", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    exe = str(Path(sys.executable).parent / "dlsr-score")
    cpus = os.cpu_count()
    res = {"bundle": a.bundle, "cpus": cpus, "machine": machine(), "rounds": []}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        packs, n = _packs(a.data, a.n, tmp)
        res["images"] = n
        for k in range(a.repeats):
            order = ("single", "ray") if k % 2 == 0 else ("ray", "single")
            rnd = {}
            for what in order:
                if what == "single":
                    rnd["single_s"] = run_single(exe, a.bundle, packs, tmp)
                else:
                    rnd["ray_s"], rnd["ray_pipeline_images_per_s"], rnd["ray_rows"] = run_ray(
                        exe, a.bundle, packs, tmp, k, cpus
                    )
            res["rounds"].append(rnd)
            print(json.dumps(rnd), flush=True)
    single = statistics.median(r["single_s"] for r in res["rounds"])
    ray_s = statistics.median(r["ray_s"] for r in res["rounds"])
    pipe = statistics.median(r["ray_pipeline_images_per_s"] for r in res["rounds"])
    res.update(
        single_images_per_s=n / single,
        ray_images_per_s=n / ray_s,
        ray_pipeline_images_per_s=pipe,
        ratio_wall=single / ray_s,
        ratio_pipeline=pipe / (n / single),
        exactly_once=all(r["ray_rows"] == n for r in res["rounds"]),
    )
    OUT.mkdir(exist_ok=True)
    atomic_write_text(OUT / "ray_batch.json", json.dumps(res, indent=2) + "\n")
    md = [
        "# Batch scoring: Ray Data pipeline vs one `dlsr-score` process (`python -m benchmarks ray_batch`)",
        "",
        f"Bundle `{a.bundle}`, {n} images (two .npz packs), ORT CPU FP32, one node: {cpus} CPUs, "
        f"{res['machine']}; median of {a.repeats} alternating rounds, each command in a fresh process.",
        "",
        "| path | wall time (incl. start-up) | images/s (wall) | images/s (pipeline, excl. Ray start) |",
        "|---|---|---|---|",
        f"| `dlsr-score` (one process) | {single:.1f} s | {n / single:.1f} | - |",
        f"| `dlsr-score --ray` (local cluster, 1 actor x {cpus} threads) | {ray_s:.1f} s | {n / ray_s:.1f} | "
        f"{pipe:.1f} |",
        "",
        f"Ray vs one process: {res['ratio_wall']:.1%} of its throughput on wall time, {res['ratio_pipeline']:.1%} on "
        f"the pipeline's own rate. Rows written = inputs in every round: {res['exactly_once']}.",
    ]
    atomic_write_text(OUT / "ray_batch.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
