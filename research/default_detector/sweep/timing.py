"""pareto.py time: the speed of every sweep point, in one process, interleaved rounds.

Headline path per (backbone, input size): an FP32 bundle of that config whose headline is the
score `pareto.py heads` chose there. Its LFDN is a 2-epoch stub (quarter width): the headline
path of a density headline runs backbone.onnx + heads.onnx only, so the stub never runs in these
rows and changes nothing they measure. All-scores path: the LFDN grid of `pareto.py lfdn` (each
variant at K = 1 and 2) exported at the config it was trained at. Per bundle: batch-1 p50 and
batch-32 images/s on ONNX Runtime CPU and OpenVINO CPU (f32 pinned), bundle size on disk, peak
RSS of a process that loads it and scores 1,000 images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.harness import peak_rss_mb

from .points import config_name, parse_config

RESULTS = Path(__file__).resolve().parents[1] / "results"
BATCHES = (1, 32)


def stub_run(runs: Path, data: Path, backbone: str, size: int) -> Path:
    from dlsr_deploy.config import FeatureConfig, TrainConfig
    from dlsr_deploy.pipeline import run_train

    run = runs / f"{config_name(backbone, size)}-stub"
    if not (run / "run.json").exists() or json.loads((run / "run.json").read_text()).get("status") != "done":
        fcfg = FeatureConfig(backbone=backbone, input_size=size, native_size=32)
        run_train(
            str(data / "cifar10_train.npz"),
            run,
            fcfg,
            preset="small",
            tcfg=TrainConfig(epochs=2),
            feature_engine="ort",
            native_size="given",
            force=True,
        )
    return run


def export(run: Path, out: Path, data: Path, headline: str, steps: int = 2) -> Path:
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.scoring import DENSITY_HEADS

    if not (out / "manifest.json").exists():
        export_bundle(
            run,
            out,
            score_cfg=ScoreConfig(t_start=3, steps=steps),
            headline=headline,
            density=DENSITY_HEADS,
            verify_ood=[str(data / "dtd_subset10.npz")],
            n_verify=128,
            force=True,
        )
    return out


def bundles(args) -> list:
    """[(label, bundle, path)] for the headline rows (every config) and the all-scores rows (LFDN grid)."""
    heads = json.loads((RESULTS / "pareto_heads.json").read_text())
    data, runs, out = Path(args.data), Path(args.runs), Path("export/pareto")
    todo = []
    for name, c in heads["configs"].items():
        run = stub_run(runs, data, c["backbone"], c["input_size"])
        todo.append((name, export(run, out / name, data, c["chosen"]), "headline"))
    lfdn = json.loads((RESULTS / "pareto_lfdn.json").read_text()) if (RESULTS / "pareto_lfdn.json").exists() else {}
    for cfg, c in lfdn.get("configs", {}).items():
        chosen = heads["configs"][cfg]["chosen"]
        for r in c["rows"]:
            label = f"{cfg}-{r['variant']}-k{r['k']}"
            todo.append((label, export(Path(r["run"]), out / label, data, chosen, r["k"]), "all"))
    return todo


def time_all(todo: list, images: np.ndarray, rounds: int) -> dict:
    """{label: {backend: {batch: {p50_ms, images_per_s, round_p50_ms}}}} from interleaved rounds."""
    from dlsr_deploy.runtime import Detector
    from dlsr_deploy.timing import interleaved, pooled

    dets = {(label, be): Detector.load(b, backend=be) for label, b, _ in todo for be in ("ort-cpu", "openvino")}
    paths = {label: path for label, _, path in todo}
    out: dict = {}
    for bs in BATCHES:
        x = np.ascontiguousarray(images[:bs])
        calls = {
            k: (lambda d=d, p=paths[k[0]], x=x: d.score(x, None if p == "headline" else "all")) for k, d in dets.items()
        }
        timed = interleaved(calls, rounds=rounds, warmup_s=1.0, min_duration=3.0, min_iters=10)
        for (label, be), ts in timed.items():
            t = pooled(ts)
            out.setdefault(label, {}).setdefault(be, {})[str(bs)] = {
                "p50_ms": t.p50_ms,
                "images_per_s": bs / (t.p50_ms / 1e3),
                "round_p50_ms": [r.p50_ms for r in ts],
            }
    for d in dets.values():
        d.close()
    return out


def step_time(args) -> dict:
    from dlsr_deploy.machine import describe, versions

    todo = bundles(args)
    images = np.load(Path(args.data) / "cifar10_test.npz")["images"][::97][:64]
    times = time_all(todo, images, rounds=3)
    rows = []
    for label, b, path in todo:
        size = sum(p.stat().st_size for p in Path(b).iterdir() if p.is_file())
        rows.append(
            {
                "label": label,
                "bundle": str(b),
                "path": path,
                "bytes": size,
                "peak_rss_mb": peak_rss_mb(b, "ort-cpu", path, 1000, Path(args.data) / "cifar10_test.npz"),
                "timing": times[label],
            }
        )
    res = {"machine": describe(), "versions": versions(("onnxruntime", "openvino", "numpy")), "rows": rows}
    res["markdown"] = markdown(res)
    return res


def markdown(res: dict) -> str:
    lines = [
        "# Sweep timings (`python -m research.default_detector.sweep time`)",
        "",
        f"Machine: {res['machine']}; {res['versions']}.",
        "Interleaved rounds (3), p50 of every call; images/s = batch / p50.",
        "",
        "| point | path | ORT b1 ms | ORT b32 img/s | OpenVINO b1 ms | OpenVINO b32 img/s | bundle MB | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in res["rows"]:
        t = r["timing"]
        lines.append(
            f"| {r['label']} | {r['path']} | {t['ort-cpu']['1']['p50_ms']:.2f} | "
            f"{t['ort-cpu']['32']['images_per_s']:.0f} | {t['openvino']['1']['p50_ms']:.2f} | "
            f"{t['openvino']['32']['images_per_s']:.0f} | {r['bytes'] / 1e6:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


__all__ = ["step_time", "parse_config"]
