"""Memory of the runtime on ONNX Runtime CPU (issue 10): peak and resident RSS while scoring
10,000 images through `Detector.predict` and through `dlsr-score`, each in a fresh process.

    python benchmarks/memory.py export/c50k-fp32 --data ../shared/data/cifar10_test.npz

Writes benchmarks/results/memory.{json,md}. Targets: peak < 600 MB, resident after the call
within 1.5x of the post-load figure, throughput >= 95 % of the batch-32 figure of dlsr-bench.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import machine  # benchmarks/common.py

OUT = Path(__file__).resolve().parent / "results"

PREDICT = r"""
import json, resource, sys, time
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
out = det.predict(images)
sec = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
print(json.dumps({"backend": det.backend_name, "after_load_mb": after_load, "after_call_mb": rss(),
                  "peak_mb": peak, "seconds": sec,
                  "load_seconds_incl_self_check": load_s,
                  "images": len(images), "images_per_s": len(images) / sec, "flagged": float(out["is_ood"].mean())}))
"""


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
    steady = _json_of(PREDICT, bundle, data, str(n), "auto", "ort-cpu")  # a machine that has checked the bundle
    first = _json_of(PREDICT, bundle, data, str(n), "always", "ort-cpu")  # the first load on a new machine
    # backend="auto" on a first load: ORT and OpenVINO are timed, the faster kept, then the self-check
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "DLSR_CACHE": str(Path(cache) / "features")}  # no cached verdicts
        auto = _json_of(PREDICT, bundle, data, str(n), "auto", "auto", env=env)
    return {**steady, **timing, "first_load": first, "auto_first_load": auto}


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
    p = res["predict"]
    f = p["first_load"]
    au = p["auto_first_load"]
    res["resident_ratio"] = p["after_call_mb"] / p["after_load_mb"]
    OUT.mkdir(exist_ok=True)
    (OUT / "memory.json").write_text(json.dumps(res, indent=2) + "\n")
    md = [
        "# Runtime memory on the CPU (`python benchmarks/memory.py`)",
        "",
        f"Bundle `{a.bundle}`, {a.n} images of `{a.data}`, each measurement in a fresh process. "
        f"Machine: {res['machine']}.",
        "",
        "| path | peak RSS | resident after load | resident after the call | images/s |",
        "|---|---|---|---|---|",
        f"| `Detector.predict` (one call) | {p['peak_mb']:.0f} MB | {p['after_load_mb']:.0f} MB | "
        f"{p['after_call_mb']:.0f} MB "
        f"({res['resident_ratio']:.2f}x) | {p['images_per_s']:.1f} |",
        f"| the same, first load on a machine (runs the self-check) | {f['peak_mb']:.0f} MB | "
        f"{f['after_load_mb']:.0f} MB | "
        f"{f['after_call_mb']:.0f} MB | {f['images_per_s']:.1f} |",
        f'| `backend="auto"`, first load (times ORT vs OpenVINO, keeps {au["backend"]}; self-check) | '
        f"{au['peak_mb']:.0f} MB | {au['after_load_mb']:.0f} MB | {au['after_call_mb']:.0f} MB | "
        f"{au['images_per_s']:.1f} |",
        f"| `dlsr-score` (whole process incl. start-up) | {res['dlsr_score']['peak_mb']:.0f} MB | - | - | "
        f"{res['dlsr_score']['images_per_s_incl_startup']:.1f} |",
        "",
        f"Load-time self-check (golden set, first load on a machine): {p['self_check_seconds']:.2f} s on top of a "
        f"{p['load_seconds']:.2f} s load.",
    ]
    (OUT / "memory.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
