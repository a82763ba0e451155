"""dlsr-bench's harness: which runners to load, their accuracy, interleaved timing, table rows.

Per (runner, scoring path, batch): warm-up by time, then at least `min_duration` seconds and
`min_iters` calls, split over `rounds` rounds in which every runner takes its turn (so a
drifting machine slows the baseline and the backends alike, and the per-round ratios show how
stable a ratio is); every call is timed end to end (numpy uint8 images in, scores out) and per
stage. Reported: p50/p90/p95/p99, images/s, the ratio to eager FP32 on the same path *measured
in the same run*, the coefficient of variation, AUROC of the headline on the given ID/OOD data
and the max score error against eager FP32. Absolute times only compare within one run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.bench.result import BenchResult, Row
from dlsr_deploy.bench.roofline import compute_bounds, eager_key
from dlsr_deploy.bench.runners import EagerRunner, Runner, RuntimeRunner
from dlsr_deploy.bench.timing import TimingSettings, time_batch
from dlsr_deploy.errors import BackendUnavailable
from dlsr_deploy.log import progress

GPU_EAGER = ("torch-eager-cuda", "torch-eager-cuda-fp16", "torch-compile-cuda")
CPU_PEERS = (
    "torch-compile",
    "plain-export-ort",
    "plain-export-openvino",
    "plain-export-openvino-f32",
    "plain-export-openvino-int8",
)


@dataclass
class BenchRequest:
    """What dlsr-bench is asked: bundles, images (sources or arrays), batch sizes, backends, paths."""

    bundles: List[Path]
    data: object = None  # ID source, or id_images
    ood: Sequence[Tuple[str, object]] = ()  # (name, source or array)
    n_eval: int = 500
    batch_sizes: Tuple[int, ...] = (1, 8, 32, 128)
    backends: Optional[List[str]] = None
    paths: Tuple[str, ...] = ("headline", "all")
    timing: TimingSettings = TimingSettings()
    threads: Optional[int] = None
    eager: bool = True
    peers: bool = False


@dataclass
class _Live:
    """A loaded runner with its accuracy, ready to be timed."""

    backend: str
    manifest: object
    runner: Runner
    status: str
    auroc: Dict[str, float]
    err: float
    key: str
    note: str = ""  # shown after an "ok" status, e.g. the relaxed tolerances its parity passed at


def machine_header(threads: Optional[int]) -> dict:
    """Machine, versions and threads: the header every bench result carries."""
    import os

    from dlsr_deploy.machine import gpu_name, summary, versions

    h = {
        **summary(),
        "threads_requested": threads,
        **versions(("torch", "onnxruntime", "openvino", "tensorrt", "numpy")),
    }
    try:
        import torch

        h["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    h["gpu"] = gpu_name()
    h["load_avg_at_start"] = os.getloadavg()
    return h


def _subset(images: np.ndarray, n: int) -> np.ndarray:
    # evenly spaced over the set, not its first N: packs are often ordered by class
    return images[np.unique(np.linspace(0, len(images) - 1, min(n, len(images))).astype(int))]


def _images(req: BenchRequest, size: int) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    from dlsr_deploy.data import load_images

    def get(x):
        return x if isinstance(x, np.ndarray) else load_images(x, size=size).images

    return _subset(get(req.data), req.n_eval), {n: _subset(get(src), req.n_eval) for n, src in req.ood}


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def plan_jobs(manifests, bundles, wanted, avail, req: BenchRequest, unavailable: list) -> list:
    """(backend, manifest, bundle, path) to load: per scoring config and path one eager baseline
    (plus the CPU peers), every wanted runtime backend per bundle and path, GPU eager variants."""
    jobs, seen, cuda = [], set(), _cuda()
    for m, b in zip(manifests, bundles):
        for path in req.paths:
            if req.eager and (eager_key(m), path) not in seen:
                seen.add((eager_key(m), path))
                jobs.append(("torch-eager", m, b, path))
                if req.peers:
                    jobs += [(p, m, b, path) for p in CPU_PEERS if "openvino" not in p or "openvino" in avail]
                if cuda:
                    jobs += [(n, m, b, path) for n in GPU_EAGER]
            jobs += [(be, m, b, path) for be in wanted if be in avail and be in m.backends]
        unavailable += [
            {"backend": be, "bundle": m.name, "reason": f"the bundle is for {m.backends}"}
            for be in wanted
            if be in avail and be not in m.backends
        ]
    if req.eager and not cuda:
        unavailable += [{"backend": n, "reason": "no CUDA device for PyTorch"} for n in GPU_EAGER]
    return jobs


def make_runner(be: str, m, bundle, threads: Optional[int], path: str) -> Runner:
    """The runner for a job (eager, torch.compile, a plain export, a GPU eager variant or a runtime backend)."""
    if be == "torch-eager":
        return EagerRunner(m, threads=threads, path=path)
    if be == "torch-compile":
        return EagerRunner(m, compile=True, threads=threads, path=path)
    if be.startswith("plain-export-"):
        from dlsr_deploy.bench.peers import PlainExportRunner

        return PlainExportRunner(m, engine=be[len("plain-export-") :], path=path)
    if be.startswith("torch-"):
        return EagerRunner(m, device="cuda", autocast=be.endswith("fp16"), compile="compile" in be, path=path)
    return RuntimeRunner(bundle, be, threads, path=path)


def _accuracy(runner: Runner, headline: str, id_images: np.ndarray, ood_sets: Dict[str, np.ndarray]):
    """(AUROC of the headline score per OOD set, every score the runner gives) from one pass in batches of 32."""
    from dlsr_deploy.metrics import auroc

    images = np.concatenate([id_images] + list(ood_sets.values()))
    parts = [runner.run(images[i : i + 32])[0] for i in range(0, len(images), 32)]
    sc = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    head, start, aur = sc[headline], len(id_images), {}
    for n, v in ood_sets.items():
        aur[n] = auroc(head[: len(id_images)], head[start : start + len(v)])
        start += len(v)
    return aur, sc


def _score_error(sc: dict, ref: Optional[dict]) -> float:
    if not ref:
        return float("nan")
    common = [k for k in ref if k in sc]
    return float(max(np.max(np.abs(sc[k] - ref[k])) / (np.abs(ref[k]).mean() + 1e-12) for k in common))


def load_and_score(jobs, req: BenchRequest, id_images, ood_sets, unavailable: list, rows: list) -> List[_Live]:
    """Stage 1: make every runner and score once (accuracy columns, score error vs eager)."""
    from tqdm.auto import tqdm

    eager_ref: Dict[str, Dict[str, np.ndarray]] = {}
    live: List[_Live] = []
    for be, m, b, path in tqdm(jobs, desc="load + accuracy", disable=not progress()):
        try:
            runner = make_runner(be, m, b, req.threads, path)
        except BackendUnavailable as exc:
            unavailable.append({"backend": be, "reason": str(exc)})
            continue
        try:
            aur, sc = _accuracy(runner, m.headline, id_images, ood_sets)
        except Exception as exc:  # a backend that cannot even score is reported, not hidden
            rows.append(Row(be, runner.precision, 0, m.steps, "failed", m.name, f"{type(exc).__name__}: {exc}", path))
            runner.close()
            continue
        if be == "torch-eager":
            eager_ref.setdefault(eager_key(m), {}).update(sc)
        status = "ok" if m.parity_passed else "exported-but-failed-parity"
        err = _score_error(sc, eager_ref.get(eager_key(m)))
        live.append(_Live(be, m, runner, status, aur, err, eager_key(m), m.relaxed_parity_note))
    return live


def make_row(
    lv: _Live,
    bs: int,
    lats: List[np.ndarray],
    stages: List[dict],
    failure: Optional[str],
    bound: Optional[float],
    ts: TimingSettings,
) -> Row:
    """Stage 3: one table row from a runner's timings."""
    prec = lv.manifest.precision if isinstance(lv.runner, RuntimeRunner) else lv.runner.precision
    row = Row(
        lv.backend,
        prec,
        bs,
        lv.manifest.steps,
        lv.status,
        lv.manifest.name,
        lv.note,
        lv.runner.path,
        auroc=lv.auroc,
        max_score_err=lv.err,
    )
    row.extra = {
        k: getattr(lv.runner, k) for k in ("compile_seconds", "compiled_graphs") if getattr(lv.runner, k, None)
    }
    row._key = lv.key  # not serialised: matches rows to their eager baseline
    if failure is not None:
        row.status, row.reason = "failed", failure
        return row
    ms = np.concatenate(lats) * 1e3
    row.p50_ms, row.p90_ms, row.p95_ms, row.p99_ms = (float(np.percentile(ms, q)) for q in (50, 90, 95, 99))
    row.mean_ms = float(ms.mean())
    row.images_per_s = bs / (row.p50_ms / 1e3)
    row.round_p50_ms = [float(np.median(x) * 1e3) for x in lats]
    if bound:
        row.bound_share = row.images_per_s / bound
    row.stages_ms = {k: float(np.median([s[k] for s in stages if k in s])) * 1e3 for k in stages[0]}
    row.cv, row.iters = float(ms.std() / ms.mean()), len(ms)
    row.raw_ms = [round(float(x), 4) for x in ms]
    if row.cv > ts.cv_warn:
        row.warning = f"high variation (CV {row.cv:.0%}): the machine is noisy or throttling; repeat the run"
    return row


def _ratios(rows: List[Row]) -> None:
    """Each row's speed-up against the eager FP32 row of the same scoring config, path and batch."""
    for row in rows:
        base = next(
            (
                r
                for r in rows
                if r.backend == "torch-eager"
                and r.precision == "fp32"
                and r.status != "failed"
                and r._key == row._key
                and r.path == row.path
            ),
            None,
        )
        if base is not None and row.status != "failed":
            row.speedup_vs_eager = base.p50_ms / row.p50_ms
            row.speedup_rounds = [b / x for b, x in zip(base.round_p50_ms, row.round_p50_ms)]


def _backends(req: BenchRequest):
    from dlsr_deploy.runtime.backend import available_backends

    avail, unavailable = available_backends()
    wanted = list(req.backends) if req.backends else avail
    unavailable += [
        {"backend": b, "reason": "unknown backend"}
        for b in wanted
        if b not in avail and not any(u["backend"] == b for u in unavailable)
    ]
    return wanted, avail, unavailable


def run_bench(req: BenchRequest) -> BenchResult:
    """Time eager FP32 and every available backend on each bundle and path (same images, one
    process, all runners alive at once and timed in interleaved rounds)."""
    from tqdm.auto import tqdm

    from dlsr_deploy.manifest import read_manifest

    manifests = [read_manifest(b) for b in req.bundles]
    id_images, ood_sets = _images(req, manifests[0].native_size)
    wanted, avail, unavailable = _backends(req)
    header = {**machine_header(req.threads), "bundles": [str(b) for b in req.bundles], "paths": list(req.paths)}
    compute, per_bundle = compute_bounds(manifests)
    rows: List[Row] = []
    jobs = plan_jobs(manifests, req.bundles, wanted, avail, req, unavailable)
    live = load_and_score(jobs, req, id_images, ood_sets, unavailable, rows)
    bar = tqdm(
        total=len(req.batch_sizes) * max(1, int(req.timing.rounds)) * len(live), desc="timing", disable=not progress()
    )
    for bs in req.batch_sizes:
        imgs = np.ascontiguousarray(np.resize(id_images, (bs,) + id_images.shape[1:]))
        lats, stages, failed = time_batch([lv.runner for lv in live], imgs, req.timing, bar)
        new = []
        for i, lv in enumerate(live):
            b, sfx = per_bundle[lv.manifest.name], "_headline" if lv.runner.path == "headline" else ""
            row = make_row(lv, bs, lats[i], stages[i], failed.get(i), b[f"bound{sfx}_images_per_s"], req.timing)
            fp32 = b[f"bound_fp32{sfx}_images_per_s"]
            if b[f"bound{sfx}_images_per_s"] != fp32 and fp32 and row.status != "failed":  # bf16 / int8 bound
                row.extra["fp32_bound_share"] = row.images_per_s / fp32
            new.append(row)
        _ratios(new)
        rows += new
    bar.close()
    order = {(lv.backend, lv.manifest.name, lv.runner.path): i for i, lv in enumerate(live)}
    rows.sort(key=lambda r: (order.get((r.backend, r.bundle, r.path), -1), r.batch))
    for lv in live:
        lv.runner.close()
    return BenchResult(header, rows, unavailable, compute)
