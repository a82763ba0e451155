"""TensorRT vs ONNX Runtime CPU parity on a GPU machine (see gpu_check.sh)."""

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv):
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.parity import spearman
    from dlsr_deploy.runtime import Detector

    tmp = Path(tempfile.mkdtemp())
    if len(argv) >= 2:
        bundles = {"fp32": Path(argv[0]), "fp16": Path(argv[1])}
        size = read_manifest(bundles["fp32"]).input_size
        images = np.random.default_rng(0).integers(0, 255, (64, size, size, 3), dtype=np.uint8)
    else:
        from bundles import make_run

        from dlsr_deploy.export.exporter import export_bundle

        run, id_path, ood_path = make_run(tmp)
        bundles = {p: tmp / p for p in ("fp32", "fp16")}
        for p, b in bundles.items():
            export_bundle(run, b, fp16=p == "fp16", verify_ood=[str(ood_path)], n_verify=64)
        images = np.concatenate([np.load(id_path)["images"][:32], np.load(ood_path)["images"][:32]])
    report = {"machine": platform.platform(), "results": {}}
    for prec, b in bundles.items():
        with Detector.load(b, backend="ort-cpu") as ref:
            r = ref.score(images)
        t = time.time()
        with Detector.load(b, backend="trt", engines_dir=tmp / "engines") as det:
            build_s = time.time() - t
            g = det.score(images)
            info = det.backend.build_info
            prov = det.backend.provider
        res = {"provider": prov, "build_seconds": round(build_s, 1), "engines": info}
        for name in r:
            res[name] = {
                "spearman": spearman(r[name], g[name]),
                "max_rel": float(np.max(np.abs(r[name] - g[name])) / (np.abs(r[name]).mean() + 1e-12)),
            }
        report["results"][prec] = res
        print(
            f"{prec}: {prov}; "
            + "; ".join(
                f"{k} rank {v['spearman']:.6f} max rel {v['max_rel']:.1e}"
                for k, v in res.items()
                if isinstance(v, dict) and "spearman" in v
            )
        )
    out = Path("benchmarks/results/gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    # the GPU benchmark suite: same harness and files as on the CPU (eager FP32 / FP16
    # autocast / torch.compile on the GPU, ORT-CUDA when onnxruntime-gpu is installed, TensorRT)
    from dlsr_deploy.bench import report as bench_report
    from dlsr_deploy.bench.harness import run_bench

    half = len(images) // 2
    res = run_bench(list(bundles.values()), images[:half], {"ood": images[half:]}, batch_sizes=(1, 8, 32, 128))
    paths = bench_report.write(
        res, Path("benchmarks/results"), "bench_gpu", "python benchmarks/gpu_check.py " + " ".join(argv)
    )
    print(bench_report.markdown(res))
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main(sys.argv[1:])
