"""TensorRT vs ONNX Runtime CPU parity on a GPU machine (see gpu_check.sh), then the GPU bench."""

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dlsr_deploy.io import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def get_bundles(argv, tmp: Path):
    """({precision: bundle}, images): the bundles given, else a tiny run exported FP32 / FP16 here."""
    from dlsr_deploy.manifest import read_manifest

    if len(argv) >= 2:
        bundles = {"fp32": Path(argv[0]), "fp16": Path(argv[1])}
        size = read_manifest(bundles["fp32"]).native_size
        return bundles, np.random.default_rng(0).integers(0, 255, (64, size, size, 3), dtype=np.uint8)
    from bundles import make_run

    from dlsr_deploy.export.exporter import export_bundle

    run, id_path, ood_path = make_run(tmp)
    bundles = {p: tmp / p for p in ("fp32", "fp16")}
    for p, b in bundles.items():
        export_bundle(run, b, fp16=p == "fp16", verify_ood=[str(ood_path)], n_verify=64)
    # a detector of several views (issue 32): the flip view is a Slice with step -1 inside backbone.onnx,
    # the second backbone a second branch of the same graph; FP16, as an edge GPU would run it
    bundles["views-fp16"] = tmp / "views-fp16"
    export_bundle(_views_run(tmp, id_path), bundles["views-fp16"], fp16=True, verify_ood=[str(ood_path)], n_verify=64)
    return bundles, np.concatenate([np.load(id_path)["images"][:32], np.load(ood_path)["images"][:32]])


def _views_run(tmp: Path, id_path: Path) -> Path:
    from dlsr_deploy.config import FeatureConfig, TrainConfig, ViewConfig
    from dlsr_deploy.pipeline import run_train

    run = tmp / "views-run"
    run_train(
        str(id_path), run, FeatureConfig(backbone="efficientnet-lite0", input_size=64), preset="small",
        tcfg=TrainConfig(epochs=2, batch_size=32), holdout=0.25, cache_dir=tmp / "cache",
        views=(ViewConfig.parse("lite0@64:flip"), ViewConfig.parse("lite1@64")),
    )  # fmt: skip
    return run


def parity(bundle: Path, images: np.ndarray, engines: Path) -> dict:
    """TensorRT against ORT CPU on one bundle: rank correlation and max relative error per score."""
    from dlsr_deploy.parity import spearman
    from dlsr_deploy.runtime import Detector

    with Detector.load(bundle, backend="ort-cpu") as ref:
        r = ref.score(images, "all")
    t = time.time()
    with Detector.load(bundle, backend="trt", engines_dir=engines) as det:
        build_s = time.time() - t
        g = det.score(images, "all")
        info, prov = det.backend.build_info, det.backend.provider
    res = {"provider": prov, "build_seconds": round(build_s, 1), "engines": info}
    for name in r:
        err = float(np.max(np.abs(r[name] - g[name])) / (np.abs(r[name]).mean() + 1e-12))
        res[name] = {"spearman": spearman(r[name], g[name]), "max_rel": err}
    return res


def main(argv):
    from dlsr_deploy.bench import report as bench_report
    from dlsr_deploy.bench.harness import BenchRequest, run_bench

    tmp = Path(tempfile.mkdtemp())
    bundles, images = get_bundles(argv, tmp)
    report = {"machine": platform.platform(), "results": {}}
    for prec, b in bundles.items():
        res = report["results"][prec] = parity(b, images, tmp / "engines")
        scores = "; ".join(
            f"{k} rank {v['spearman']:.6f} max rel {v['max_rel']:.1e}"
            for k, v in res.items()
            if isinstance(v, dict) and "spearman" in v
        )
        print(f"{prec}: {res['provider']}; {scores}")
    out = RESULTS / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    # the GPU benchmark suite: same harness and files as on the CPU (eager FP32 / FP16 autocast /
    # torch.compile on the GPU, ORT-CUDA when onnxruntime-gpu is installed, TensorRT)
    half = len(images) // 2
    req = BenchRequest(list(bundles.values()), images[:half], [("ood", images[half:])], batch_sizes=(1, 8, 32, 128))
    res = run_bench(req)
    paths = bench_report.write(res, RESULTS, "bench_gpu", "python tests/platform/gpu/gpu_check.py " + " ".join(argv))
    print(bench_report.markdown(res))
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main(sys.argv[1:])
