"""Memory of the runtime on the CPU (issues 10, 21): peak and resident RSS while scoring 10,000
images through `Detector.predict` (the headline path and every score) and through `dlsr-score`,
each in a fresh process; the first load on a machine (self-check) and `backend="auto"`'s first
load (both CPU backends timed, then the self-check) included.

    python -m benchmarks memory export/default-fp32 --data ../shared/data/cifar10_test.npz

Writes benchmarks/results/memory.{json,md}. Target: every path under 600 MB.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import PEAK_MB, machine, results_dir

RESULTS = results_dir(__file__)

PREDICT = (
    PEAK_MB
    + r"""
import json, sys, time
import numpy as np
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6
images = np.load(sys.argv[2])["images"][: int(sys.argv[3])]
from dlsr_deploy.runtime import Detector
t = time.perf_counter()
det = Detector.load(sys.argv[1], backend=sys.argv[5], self_check=sys.argv[4])
load_s = time.perf_counter() - t
check_s = None
after_load = rss()
t = time.perf_counter()
out = det.predict(images, None if sys.argv[6] == "headline" else "all")
sec = time.perf_counter() - t
peak = peak_mb()
print(json.dumps({"backend": det.backend_name, "after_load_mb": after_load, "after_call_mb": rss(),
                  "peak_mb": peak, "seconds": sec,
                  "load_seconds_incl_self_check": load_s,
                  "images": len(images), "images_per_s": len(images) / sec, "flagged": float(out["is_ood"].mean())}))
"""
)


TIMING = r"""
import json, sys, time
from dlsr_deploy.runtime import Detector
out = {}
for mode in ("never", "always", "never", "always"):  # the second pair: warm file cache
    t = time.perf_counter()
    Detector.load(sys.argv[1], backend="ort-cpu", self_check=mode).close()
    out[mode] = time.perf_counter() - t
print(json.dumps({"load_seconds": out["never"], "self_check_seconds": out["always"] - out["never"]}))
"""


def _json_of(*args, env=None):
    r = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_predict(bundle, data, n):
    """Memory of one predict call in a fresh process; load and self-check times in another."""
    timing = _json_of(TIMING, bundle)  # also leaves the self-check's PASS verdict in the cache
    steady = _json_of(PREDICT, bundle, data, str(n), "auto", "ort-cpu", "headline")  # a machine that checked it
    every = _json_of(PREDICT, bundle, data, str(n), "auto", "ort-cpu", "all")  # every score: denoiser too
    first = _json_of(PREDICT, bundle, data, str(n), "always", "ort-cpu", "all")  # the first load on a new machine
    # backend="auto" on a first load: ORT and OpenVINO are timed, the faster kept, then the self-check
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "DLSR_CACHE": str(Path(cache))}  # no cached verdicts
        auto = _json_of(PREDICT, bundle, data, str(n), "auto", "auto", "all", env=env)
    return {**steady, **timing, "every_score": every, "first_load": first, "auto_first_load": auto}


def run_score_cli(bundle, data, n, tmp):
    import numpy as np

    pack = Path(tmp) / "images.npz"
    np.savez(pack, images=np.load(data)["images"][:n])
    exe = Path(sys.executable).parent / "dlsr-score"
    t = time.perf_counter()
    r = subprocess.run(
        [
            "/usr/bin/time",
            "-f",
            "%M",
            str(exe),
            bundle,
            str(pack),
            "--backend",
            "ort-cpu",
            "--out",
            str(Path(tmp) / "s.csv"),
            "--scores",
            "all",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    sec = time.perf_counter() - t
    peak_kb = int(r.stderr.strip().splitlines()[-1])
    return {"peak_mb": peak_kb / 1e3, "seconds_incl_startup": sec, "images": n, "images_per_s_incl_startup": n / sec}


def main():
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", required=True)
    ap.add_argument("-n", type=int, default=10_000)
    a = ap.parse_args()
    res = {"bundle": a.bundle, "n": a.n, "machine": machine(), "predict": run_predict(a.bundle, a.data, a.n)}
    with tempfile.TemporaryDirectory() as tmp:
        res["dlsr_score"] = run_score_cli(a.bundle, a.data, a.n, tmp)
    from benchmarks.harness import write_results

    res["resident_ratio"] = res["predict"]["after_call_mb"] / res["predict"]["after_load_mb"]
    write_results(RESULTS, "memory", res, markdown)


def markdown(res: dict) -> str:
    p, e, f, au = (
        res["predict"],
        res["predict"]["every_score"],
        res["predict"]["first_load"],
        res["predict"]["auto_first_load"],
    )

    def row(name, r):
        return (
            f"| {name} | {r['peak_mb']:.0f} MB | {r['after_load_mb']:.0f} MB | {r['after_call_mb']:.0f} MB | "
            f"{r['images_per_s']:.1f} |"
        )

    md = [
        "# Runtime memory on the CPU (`python -m benchmarks memory`)",
        "",
        f"Bundle `{res['bundle']}`, {res['n']} images, each measurement in a fresh process. Machine: {res['machine']}.",
        "",
        "| path | peak RSS | resident after load | resident after the call | images/s |",
        "|---|---|---|---|---|",
        row("`Detector.predict`, headline path (one call)", p),
        row("`Detector.predict(scores='all')` (denoiser too)", e),
        row("the same, first load on a machine (runs the self-check on both paths)", f),
        row(f'`backend="auto"`, first load (times ORT vs OpenVINO, keeps {au["backend"]}; self-check; all scores)', au),
        f"| `dlsr-score --scores all` (whole process incl. start-up) | {res['dlsr_score']['peak_mb']:.0f} MB | - | - | "
        f"{res['dlsr_score']['images_per_s_incl_startup']:.1f} |",
        "",
        f"Load-time self-check (golden set, both paths, first load on a machine): {p['self_check_seconds']:.2f} s on "
        f"top of a {p['load_seconds']:.2f} s load.",
    ]
    return "\n".join(md)


if __name__ == "__main__":
    main()
