"""The small harness every suite shares (and the research studies, which import it as
`benchmarks.harness`): the machine's description, sessions made as the runtime makes them,
timing loops, peak memory of a fresh process, and result files written whole."""

from pathlib import Path


def machine() -> str:
    """CPU model and its SIMD flags (dlsr_deploy.machine.describe)."""
    from dlsr_deploy.machine import describe

    return describe()


def ort_session(model_or_path, threads=None):
    """An ORT CPU session as the runtime makes them (explicit threads, no spin-waiting)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    if threads:
        o.intra_op_num_threads = threads
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, o, providers=["CPUExecutionProvider"])


def p50_ms(call, reps: int) -> float:
    """Median wall time of call() in ms, after one warm-up call (dlsr_deploy.timing)."""
    from dlsr_deploy.timing import median_seconds

    return median_seconds(call, reps) * 1e3


def p50_for_ms(call, seconds: float, min_calls: int = 20) -> float:
    """Median wall time of call() in ms over `seconds` (at least `min_calls` calls)."""
    import time

    import numpy as np

    t_end, lat = time.perf_counter() + seconds, []
    while time.perf_counter() < t_end or len(lat) < min_calls:
        t = time.perf_counter()
        call()
        lat.append(time.perf_counter() - t)
    return float(np.median(lat)) * 1e3


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the forking parent, so a
# child started by a large process reported the parent's peak; VmHWM belongs to the new address space
PEAK_MB = """
def peak_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
"""

PEAK_RSS_SCRIPT = (
    PEAK_MB
    + """
import sys, numpy as np
from dlsr_deploy.runtime import Detector
bundle, backend, path, n, data = sys.argv[1:6]
images = np.load(data)["images"][: int(n)]
with Detector.load(bundle, backend=backend) as det:
    for i in range(0, len(images), 32):
        det.predict(images[i : i + 32], None if path == "headline" else "all")
print(peak_mb())
"""
)


def peak_rss_mb(bundle, backend: str, path: str, n: int, data) -> float:
    """Peak resident memory (MB) of a fresh process that loads the bundle and scores n images of
    `data` (a .npz) in chunks of 32 on the given scoring path ('headline' or 'all')."""
    import subprocess
    import sys

    args = [sys.executable, "-c", PEAK_RSS_SCRIPT, str(bundle), backend, path, str(n), str(data)]
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def results_dir(module_file: str) -> Path:
    """The `results/` folder beside a suite or study (its README names every file in it)."""
    return Path(module_file).resolve().parent / "results"


def write_results(out: Path, stem: str, res: dict, markdown) -> None:
    """out/<stem>.json and .md (markdown(res)), each written to a temporary file and renamed (no
    half-written result after an interrupted run); prints the Markdown."""
    import json

    from dlsr_deploy.io import atomic_write_bytes

    md = markdown(res)
    atomic_write_bytes(out / f"{stem}.json", (json.dumps(res, indent=2) + "\n").encode())
    atomic_write_bytes(out / f"{stem}.md", (md + "\n").encode())
    print(md)
