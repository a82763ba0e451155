"""Helpers shared by the benchmark scripts (imported as `common` from benchmarks/)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def accuracy_row(ref: dict, got: dict, head: str, thr: float) -> dict:
    """A backbone variant's accuracy against the reference backbone, both feeding the same
    denoiser. ref / got: {'id' | ood set: (z0 [N, D], {output name: scores [N]})}. -> z0
    relative L2 error on the ID images, AUROC in % of MFsim and of the headline vs each OOD set,
    and the headline decisions flipped at the threshold over all images."""
    import numpy as np

    from dlsr_deploy.manifest import output_name
    from dlsr_deploy.metrics import auroc

    z_ref, z = ref["id"][0], got["id"][0]
    row = {"z0_rel": float(np.linalg.norm(z - z_ref, axis=1).mean() / np.linalg.norm(z_ref, axis=1).mean())}
    for score in ("mfsim", head):
        o = output_name(score)
        for s in (k for k in got if k != "id"):
            row[f"auroc_{score}_{s}"] = 100 * auroc(got["id"][1][o], got[s][1][o])
    h = output_name(head)
    a_ref = np.concatenate([ref[k][1][h] for k in ref])
    a_got = np.concatenate([got[k][1][h] for k in ref])
    row["flips"], row["images"] = int(((a_ref > thr) != (a_got > thr)).sum()), len(a_ref)
    return row


def backbone_table(res: dict, title: str, note: str, label) -> str:
    """The Markdown table of benchmarks/int8_backbone.py and int8_openvino.py: one line per
    variant (label(row) names it), speed-ups against the first (FP32) row."""
    head, base = res["headline"], res["rows"][0]
    lines = [
        f"# {title}",
        "",
        note,
        "",
        f"| backbone | z0 rel. error | MFsim TIN / DTD | {head} TIN / DTD | flips | backbone p50 b1 | b32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {label(r)} | {r['z0_rel']:.3f} | {r['auroc_mfsim_tinyimagenet']:.2f} / {r['auroc_mfsim_dtd']:.2f} | "
            f"{r[f'auroc_{head}_tinyimagenet']:.2f} / {r[f'auroc_{head}_dtd']:.2f} | {r['flips']} "
            f"({r['flips'] / r['images']:.1%}) | {r['backbone_b1_ms']:.2f} ms "
            f"({base['backbone_b1_ms'] / r['backbone_b1_ms']:.2f}x) | {r['backbone_b32_ms']:.1f} ms "
            f"({base['backbone_b32_ms'] / r['backbone_b32_ms']:.2f}x) |"
        )
    return "\n".join(lines)


def write_results(stem: str, res: dict, markdown) -> None:
    """benchmarks/results/<stem>.json and .md (markdown(res)), each written to a temporary file
    and renamed (no half-written result after an interrupted run); prints the Markdown."""
    import json

    from dlsr_deploy.io import atomic_write_bytes

    out = Path(__file__).resolve().parent / "results"
    md = markdown(res)
    atomic_write_bytes(out / f"{stem}.json", (json.dumps(res, indent=2) + "\n").encode())
    atomic_write_bytes(out / f"{stem}.md", (md + "\n").encode())
    print(md)
