"""Timing harness.

Per (backend, precision, batch): warm-up by time, then at least `min_duration` seconds
and `min_iters` calls, split over `rounds` rounds in which every runner takes its turn
(so a drifting machine slows the baseline and the backends alike, and the per-round
ratios show how stable a ratio is); every call is timed end to end (numpy uint8 images in, scores
out: for GPU backends that includes the copies and an explicit synchronisation) and
per stage (input / backbone / denoiser). Reported: p50/p90/p95/p99, images/s, the ratio
to eager FP32 *measured in the same run*, the coefficient of variation (warning above
`cv_warn`), AUROC on the given ID/OOD data and the max score error against eager FP32.
Absolute times only compare within one run; ratios are what reports quote.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.scoring import LR_SIGN

from dlsr_deploy.errors import BackendUnavailable


@dataclass
class Row:
    backend: str
    precision: str
    batch: int
    steps: int
    status: str = "ok"  # ok | exported-but-failed-parity | failed
    bundle: str = ""
    reason: str = ""
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")
    mean_ms: float = float("nan")
    images_per_s: float = float("nan")
    speedup_vs_eager: float = float("nan")
    speedup_rounds: List[float] = field(default_factory=list)  # the ratio within each timing round
    round_p50_ms: List[float] = field(default_factory=list)
    bound_share: float = float("nan")  # images/s / the compute bound of this bundle's FLOPs
    stages_ms: Dict[str, float] = field(default_factory=dict)
    cv: float = float("nan")
    warning: str = ""
    iters: int = 0
    auroc: Dict[str, float] = field(default_factory=dict)
    max_score_err: float = float("nan")
    raw_ms: List[float] = field(default_factory=list)


@dataclass
class BenchResult:
    header: dict
    rows: List[Row]
    unavailable: List[dict]
    compute_bound: dict

    def to_dict(self) -> dict:
        return {"header": self.header, "rows": [asdict(r) for r in self.rows], "unavailable": self.unavailable, "compute_bound": self.compute_bound}

    def row(self, backend: str, batch: int, precision: Optional[str] = None) -> Row:
        for r in self.rows:
            if r.backend == backend and r.batch == batch and (precision is None or r.precision == precision):
                return r
        raise KeyError((backend, batch, precision))


class Runner:
    """A backend under test: stages(images) -> {stage: seconds} and scores(images)."""

    name = "?"
    precision = "fp32"
    sync: Callable[[], None] = staticmethod(lambda: None)

    def run(self, images: np.ndarray) -> Tuple[Dict[str, np.ndarray], Dict[str, float]]:
        raise NotImplementedError

    def close(self):
        pass


class EagerRunner(Runner):
    """PyTorch eager: the baseline (FP32; on a GPU also FP16 autocast / torch.compile)."""

    def __init__(self, manifest, device: str = "cpu", autocast: bool = False, compile: bool = False, threads: Optional[int] = None):
        import torch

        from dlsr_deploy.config import ModelConfig, ScoreConfig
        from dlsr_deploy.model.detector import build_reconstructor
        from dlsr_deploy.model.features import build_extractor
        from dlsr_deploy.model.train import load_lfdn

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        cfg = ModelConfig.from_dict(manifest.data["config"])
        s = manifest.data["schedule"]
        sc = ScoreConfig(**{k: s[k] for k in ("t_start", "steps", "eta", "noise_seed", "n_noise", "mode", "mfsim_skip_first")})
        run = manifest.data["source"]["run"]
        self.device = torch.device(device)
        self.ext = build_extractor(cfg.feature).to(self.device)
        self.rec = build_reconstructor(load_lfdn(run), sc, cfg.schedule, cfg.layer_sizes).to(self.device)
        self.first = build_reconstructor(load_lfdn(run, "first"), sc, cfg.schedule, cfg.layer_sizes).to(self.device) if "lr" in manifest.score_names else None
        self.autocast = autocast
        self.name = "torch-eager" + ("-compile" if compile else "") + ("-cuda" if device != "cpu" else "")
        self.precision = "fp16-autocast" if autocast else "fp32"
        if compile:
            self.ext = torch.compile(self.ext)
        if device != "cpu":
            self.sync = torch.cuda.synchronize

    def run(self, images):
        torch = self.torch
        st = {}
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.autocast):
            t = time.perf_counter()
            x = self.ext.preprocess(torch.from_numpy(images).to(self.device))
            self.sync()
            t1 = time.perf_counter()
            from dlsr_deploy.model.features import zscore_layers

            z0 = zscore_layers(self.ext.pooled(x).float(), self.ext.layer_sizes, self.ext.cfg.zscore_eps)
            self.sync()
            t2 = time.perf_counter()
            s = self.rec(z0)
            out = {"mfsim": s["mfsim"], "mse": s["mse"]}
            if self.first is not None:
                out["lr"] = LR_SIGN * (self.first(z0)["mse"] - s["mse"])
            out = {k: v.float().cpu().numpy() for k, v in out.items()}
            self.sync()
            t3 = time.perf_counter()
        return out, {"input": t1 - t, "backbone": t2 - t1, "denoiser": t3 - t2}


class RuntimeRunner(Runner):
    """A dlsr_deploy.runtime backend (ORT CPU / CUDA, TensorRT)."""

    def __init__(self, bundle, backend: str, threads: Optional[int] = None):
        from dlsr_deploy.runtime import Detector

        self.det = Detector.load(bundle, backend=backend, threads=threads, strict_providers=True)
        self.name = backend
        self.precision = self.det.manifest.precision
        self.names = self.det.manifest.score_names

    def run(self, images):
        from dlsr_deploy.runtime.inputs import as_batch

        be = self.det.backend
        t = time.perf_counter()
        x = as_batch(images, self.det.size)
        t1 = time.perf_counter()
        if hasattr(be, "run_backbone"):
            z0 = be.run_backbone(x)
            t2 = time.perf_counter()
            out = be.run_denoiser(z0)
        else:  # TensorRT: engines run back to back
            z0 = be.engines["backbone"].run({"images": x})["z0"]
            t2 = time.perf_counter()
            out = be.engines["denoiser"].run({"z0": z0})
        t3 = time.perf_counter()
        return {n: out[f"score_{n}"] for n in self.names}, {"input": t1 - t, "backbone": t2 - t1, "denoiser": t3 - t2}

    def close(self):
        self.det.close()


def time_runner(runner: Runner, images: np.ndarray, warmup_s: float, min_duration: float, min_iters: int, max_iters: int = 10_000):
    t_end = time.perf_counter() + warmup_s
    runner.run(images)
    while time.perf_counter() < t_end:
        runner.run(images)
    lat, stages = [], []
    t0 = time.perf_counter()
    while (time.perf_counter() - t0 < min_duration or len(lat) < min_iters) and len(lat) < max_iters:
        t = time.perf_counter()
        _, st = runner.run(images)
        lat.append(time.perf_counter() - t)
        stages.append(st)
    return np.array(lat), {k: float(np.median([s[k] for s in stages])) for k in stages[0]}


def gemm_gflops(n: int = 2048, seconds: float = 1.5, windows: int = 5) -> dict:
    """Single-precision GEMM rate (torch if installed, else numpy): the best of `windows`
    equal windows, because a bound is what the machine can do when nothing interferes."""
    try:
        import torch

        a, b = torch.randn(n, n), torch.randn(n, n)
        mm, lib = (lambda: torch.mm(a, b)), f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
        mm, lib = (lambda: a @ b), f"numpy {np.__version__}"
    mm()
    rates = []
    for _ in range(windows):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / windows or count == 0:
            mm()
            count += 1
        rates.append(2 * n**3 * count / (time.perf_counter() - t0) / 1e9)
    return {"gflops": max(rates), "windows_gflops": [round(r, 1) for r in rates], "n": n, "library": lib}


def flops_per_image(manifest) -> Optional[float]:
    """Conv + matmul FLOPs of the eager pipeline for one image (torch FlopCounterMode)."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    r = EagerRunner(manifest)
    size = manifest.input_size
    with FlopCounterMode(display=False) as fc:
        r.run(np.zeros((1, size, size, 3), np.uint8))
    return float(fc.get_total_flops())


def machine_header(threads: Optional[int]) -> dict:
    from dlsr_deploy.evaluation import machine_info, now

    h = {"created": now(), **machine_info(), "threads_requested": threads}
    for mod in ("torch", "onnxruntime", "tensorrt", "numpy"):
        try:
            m = __import__(mod)
            h[mod] = m.__version__
        except ImportError:
            h[mod] = None
    try:
        import torch

        h["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            h["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    h["load_avg_at_start"] = os.getloadavg()
    return h


def _available_runtime_backends() -> Tuple[List[str], List[dict]]:
    from dlsr_deploy.runtime.detector import _gpu_present

    ok, missing = ["ort-cpu"], []
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers() and _gpu_present():
            ok.append("ort-cuda")
        else:
            missing.append({"backend": "ort-cuda", "reason": "onnxruntime-gpu with a CUDA device not available"})
    except ImportError:
        ok.remove("ort-cpu")
        missing.append({"backend": "ort-cpu", "reason": "onnxruntime not installed"})
    try:
        import tensorrt  # noqa: F401

        if _gpu_present():
            ok.append("trt")
        else:
            missing.append({"backend": "trt", "reason": "tensorrt installed but no CUDA device"})
    except ImportError:
        missing.append({"backend": "trt", "reason": "tensorrt not installed (pip install 'dlsr-deploy[trt]' on an NVIDIA GPU machine)"})
    return ok, missing


def eager_key(m) -> str:
    """Bundles that differ only in precision share one eager baseline (and its FLOPs)."""
    sched = {k: m.data["schedule"][k] for k in ("t_start", "steps", "eta", "n_noise", "noise_seed", "mode", "mfsim_skip_first")}
    return json.dumps([m.data["source"]["checkpoint_sha256"], sched, m.score_names, m.data["config"]["feature"]], sort_keys=True)


def run_bench(
    bundles: Sequence[Path],
    id_images: np.ndarray,
    ood_sets: Dict[str, np.ndarray],
    batch_sizes: Sequence[int] = (1, 8, 32, 128),
    backends: Optional[Sequence[str]] = None,
    warmup_s: float = 1.0,
    min_duration: float = 3.0,
    min_iters: int = 5,
    threads: Optional[int] = None,
    cv_warn: float = 0.15,
    eager: bool = True,
    rounds: int = 3,
    quiet: bool = False,
) -> BenchResult:
    """Time eager FP32 and every available backend on each bundle (same images, one
    process, all runners alive at once and timed in `rounds` interleaved rounds)."""
    from tqdm.auto import tqdm

    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.metrics import auroc

    manifests = [read_manifest(b) for b in bundles]
    avail, unavailable = _available_runtime_backends()
    wanted = list(backends) if backends else avail
    for b in wanted:
        if b not in avail and not any(u["backend"] == b for u in unavailable):
            unavailable.append({"backend": b, "reason": "unknown backend"})
    rows: List[Row] = []
    header = machine_header(threads)
    header["bundles"] = [str(b) for b in bundles]
    gemm = gemm_gflops()
    per_bundle, fpi_by_key = {}, {}
    for m in manifests:
        if eager_key(m) not in fpi_by_key:  # FP32/FP16/INT8 of one model: counted once
            fpi_by_key[eager_key(m)] = flops_per_image(m)
        fpi = fpi_by_key[eager_key(m)]
        per_bundle[m.data["name"]] = {"flops_per_image": fpi, "bound_images_per_s": gemm["gflops"] * 1e9 / fpi if fpi else None}
    first = per_bundle[manifests[0].data["name"]]
    compute = {"gemm": gemm, **first, "per_bundle": per_bundle,
               "note": "images/s that the measured SGEMM rate allows for each bundle's conv+matmul FLOPs per image "
                       "(eager pipeline, torch FlopCounterMode); top-level values: the first bundle"}
    timing_pool = id_images
    eval_images = np.concatenate([id_images] + list(ood_sets.values()))

    def accuracy(runner) -> Tuple[Dict[str, float], Dict[str, np.ndarray]]:
        parts = []
        for i in range(0, len(eval_images), 32):
            parts.append(runner.run(eval_images[i : i + 32])[0])
        sc = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        head = sc["mfsim"]
        aur = {}
        start = len(id_images)
        for n, v in ood_sets.items():
            aur[n] = auroc(head[: len(id_images)], head[start : start + len(v)])
            start += len(v)
        return aur, sc

    jobs, seen = [], set()
    for m, b in zip(manifests, bundles):
        if eager and eager_key(m) not in seen:
            seen.add(eager_key(m))
            jobs.append(("torch-eager", m, b))
        for be in wanted:
            if be in avail:
                jobs.append((be, m, b))
        try:
            import torch

            if eager and torch.cuda.is_available():
                jobs += [("torch-eager-cuda", m, b), ("torch-eager-cuda-fp16", m, b), ("torch-compile-cuda", m, b)]
        except ImportError:
            pass
    if eager:
        for n in ("torch-eager-cuda", "torch-eager-cuda-fp16", "torch-compile-cuda"):
            if not any(j[0] == n for j in jobs):
                unavailable.append({"backend": n, "reason": "no CUDA device for PyTorch"})
    # 1. every runner is made and scored once (accuracy columns, error vs eager)
    eager_ref: Dict[str, Dict[str, np.ndarray]] = {}
    live = []  # (backend, manifest, runner, status, auroc, err, key)
    for be, m, b in tqdm(jobs, desc="load + accuracy", disable=quiet):
        steps = int(m.data["schedule"]["steps"])
        try:
            if be == "torch-eager":
                runner = EagerRunner(m, threads=threads)
            elif be.startswith("torch-"):
                runner = EagerRunner(m, device="cuda", autocast=be.endswith("fp16"), compile="compile" in be)
            else:
                runner = RuntimeRunner(b, be, threads)
        except BackendUnavailable as exc:
            unavailable.append({"backend": be, "reason": str(exc)})
            continue
        status = "ok"
        if not (m.data.get("parity") or {}).get("passed", True):
            status = "exported-but-failed-parity"
        try:
            aur, sc = accuracy(runner)
        except Exception as exc:  # a backend that cannot even score is reported, not hidden
            rows.append(Row(be, runner.precision, 0, steps, "failed", m.data["name"], f"{type(exc).__name__}: {exc}"))
            runner.close()
            continue
        key = eager_key(m)
        if be == "torch-eager":
            eager_ref[key] = sc
        ref = eager_ref.get(key)
        err = float(max(np.max(np.abs(sc[k] - ref[k])) / (np.abs(ref[k]).mean() + 1e-12) for k in ref)) if ref else float("nan")
        live.append((be, m, runner, status, aur, err, key))

    # 2. timing, interleaved: per batch size, `rounds` rounds that each give every runner
    # a slice of the warm-up and measuring time, so that drift of a shared or throttling
    # machine hits the baseline and the backends alike
    rounds = max(1, int(rounds))
    bar = tqdm(total=len(batch_sizes) * rounds * len(live), desc="timing", disable=quiet)
    for bs in batch_sizes:
        imgs = np.ascontiguousarray(np.resize(timing_pool, (bs,) + timing_pool.shape[1:]))
        lats: Dict[int, List[np.ndarray]] = {i: [] for i in range(len(live))}
        stages: Dict[int, List[dict]] = {i: [] for i in range(len(live))}
        failed: Dict[int, str] = {}
        for _ in range(rounds):
            for i, (be, m, runner, *_rest) in enumerate(live):
                if i in failed:
                    bar.update(1)
                    continue
                try:
                    lat, st = time_runner(runner, imgs, warmup_s / rounds, min_duration / rounds, max(1, -(-min_iters // rounds)))
                    lats[i].append(lat)
                    stages[i].append(st)
                except Exception as exc:
                    failed[i] = f"{type(exc).__name__}: {exc}"
                bar.update(1)
        new_rows = []
        for i, (be, m, runner, status, aur, err, key) in enumerate(live):
            steps = int(m.data["schedule"]["steps"])
            row = Row(be, runner.precision if be.startswith("torch") else m.precision, bs, steps, status, m.data["name"], auroc=aur, max_score_err=err)
            row._key = key  # not serialised: matches rows to their eager baseline
            if i in failed:
                row.status, row.reason = "failed", failed[i]
                new_rows.append(row)
                continue
            ms = np.concatenate(lats[i]) * 1e3
            row.p50_ms, row.p90_ms, row.p95_ms, row.p99_ms = (float(np.percentile(ms, q)) for q in (50, 90, 95, 99))
            row.mean_ms = float(ms.mean())
            row.images_per_s = bs / (row.p50_ms / 1e3)
            row.round_p50_ms = [float(np.median(x) * 1e3) for x in lats[i]]
            bound = per_bundle[row.bundle]["bound_images_per_s"]
            if bound:
                row.bound_share = row.images_per_s / bound
            row.stages_ms = {k: float(np.median([s[k] for s in stages[i]])) * 1e3 for k in stages[i][0]}
            row.cv = float(ms.std() / ms.mean())
            row.iters = len(ms)
            row.raw_ms = [round(float(x), 4) for x in ms]
            if row.cv > cv_warn:
                row.warning = f"high variation (CV {row.cv:.0%}): the machine is noisy or throttling; repeat the run"
            new_rows.append(row)
        for row in new_rows:
            base = next((r for r in new_rows if r.backend == "torch-eager" and r.precision == "fp32" and r.status != "failed" and r._key == row._key), None)
            if base is not None and row.status != "failed":
                row.speedup_vs_eager = base.p50_ms / row.p50_ms
                row.speedup_rounds = [b / x for b, x in zip(base.round_p50_ms, row.round_p50_ms)]
        rows += new_rows
    bar.close()
    order = {(be, m.data["name"]): i for i, (be, m, *_rest) in enumerate(live)}
    rows.sort(key=lambda r: (order.get((r.backend, r.bundle), -1), r.batch))  # per backend, by batch
    for _, _, runner, *_rest in live:
        runner.close()
    return BenchResult(header, rows, unavailable, compute)
