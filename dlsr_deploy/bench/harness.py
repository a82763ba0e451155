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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.errors import BackendUnavailable
from dlsr_deploy.scoring import LR_SIGN


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
    extra: Dict[str, float] = field(default_factory=dict)  # e.g. compile_seconds, compiled_graphs


@dataclass
class BenchResult:
    header: dict
    rows: List[Row]
    unavailable: List[dict]
    compute_bound: dict

    def to_dict(self) -> dict:
        return {
            "header": self.header,
            "rows": [asdict(r) for r in self.rows],
            "unavailable": self.unavailable,
            "compute_bound": self.compute_bound,
        }

    def row(self, backend: str, batch: int, precision: Optional[str] = None) -> Row:
        for r in self.rows:
            if r.backend == backend and r.batch == batch and (precision is None or r.precision == precision):
                return r
        raise KeyError((backend, batch, precision))


class Runner:
    """A backend under test: run(images) -> ({score: [N]}, {stage: seconds}); close()."""

    name = "?"
    precision = "fp32"
    sync: Callable[[], None] = staticmethod(lambda: None)

    def run(self, images: np.ndarray) -> Tuple[Dict[str, np.ndarray], Dict[str, float]]:
        raise NotImplementedError

    def close(self):
        pass


class EagerRunner(Runner):
    """PyTorch eager: the baseline (FP32; on a GPU also FP16 autocast), and the torch.compile
    peer: the functions that actually run (preprocess + backbone pooling, the reconstructor)
    are compiled, with inductor's freezing on; `compile_seconds` and `compiled_graphs` say
    what compiling cost and that it happened."""

    def __init__(
        self,
        manifest,
        device: str = "cpu",
        autocast: bool = False,
        compile: bool = False,
        threads: Optional[int] = None,
        compile_backend: str = "inductor",
    ):
        import torch

        from dlsr_deploy.model.reference import EagerReference

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        m = manifest
        self.ref = EagerReference.from_run(
            m.source_run, m.score_config, with_lr="lr" in m.score_names, density=m.density_heads, combos=m.combinations
        )
        self.names = m.score_names
        self.device = torch.device(device)
        self.ext = self.ref.extractor.to(self.device)
        self.rec = self.ref.reconstructor().to(self.device)
        self.first = self.ref.reconstructor("first").to(self.device) if self.ref.first is not None else None
        self.autocast = autocast
        self.name = "torch-compile" if compile else "torch-eager"
        self.name += "-cuda" if device != "cpu" else ""
        self.precision = "fp16-autocast" if autocast else "fp32"
        self.preprocess, self.pooled, self.reconstruct = self.ext.preprocess, self.ext.pooled, self.rec
        self.compile_seconds, self.compiled_graphs = None, 0
        if device != "cpu":
            self.sync = torch.cuda.synchronize
        if compile:
            self._compile(compile_backend)

    def _compile(self, backend: str) -> None:
        import torch._dynamo
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights become constants: folded and pre-packed
        torch._dynamo.reset()
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        self.preprocess = torch.compile(self.ext.preprocess, backend=backend)
        self.pooled = torch.compile(self.ext.pooled, backend=backend)
        self.reconstruct = torch.compile(self.rec, backend=backend)
        t = time.perf_counter()
        size = self.ext.cfg.native_size or self.ext.cfg.input_size
        self.run(np.zeros((2, size, size, 3), np.uint8))  # compiles (the timed runs reuse the graphs)
        self.compile_seconds = time.perf_counter() - t
        self.compiled_graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before

    def run(self, images):
        from dlsr_deploy.model.features import zscore_layers

        torch = self.torch
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.autocast):
            t = time.perf_counter()
            x = self.preprocess(torch.from_numpy(images).to(self.device))
            self.sync()
            t1 = time.perf_counter()
            z0 = zscore_layers(self.pooled(x).float(), self.ext.layer_sizes, self.ext.cfg.zscore_eps)
            self.sync()
            t2 = time.perf_counter()
            s = self.reconstruct(z0)
            out = {"mfsim": s["mfsim"], "mse": s["mse"]}
            if self.first is not None:
                out["lr"] = LR_SIGN * (self.first(z0)["mse"] - s["mse"])
            out = {k: v.float().cpu().numpy().astype(np.float64) for k, v in out.items()}
            self.ref.add_density_scores(out, z0.float().cpu().numpy())
            self.sync()
            t3 = time.perf_counter()
        return {n: out[n] for n in self.names}, {"input": t1 - t, "backbone": t2 - t1, "denoiser": t3 - t2}


class _PlainDenoiser:
    """The eager reconstructor as a plain module: z0 -> (mfsim, mse)."""

    @staticmethod
    def make(rec):
        import torch

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.rec = rec

            def forward(self, z0):
                s = self.rec(z0)
                return s["mfsim"], s["mse"]

        return M().eval()


class PlainExportRunner(Runner):
    """What a user gets without this toolkit: `torch.onnx.export` of the eager extractor and
    reconstructor modules as they are, run with the engine's default settings (ORT: default
    SessionOptions; OpenVINO: default compile config). Density heads and combinations are
    computed from its z0 in numpy, as in the eager runner, so the accuracy columns compare."""

    def __init__(self, manifest, engine: str = "ort"):
        import torch

        from dlsr_deploy.export import onnx_utils as ou
        from dlsr_deploy.model.features import default_cache_dir
        from dlsr_deploy.model.reference import EagerReference

        m = manifest
        self.ref = EagerReference.from_run(
            m.source_run, m.score_config, with_lr=False, density=m.density_heads, combos=m.combinations
        )
        self.names = [n for n in m.score_names if n != "lr"]
        self.name, self.precision = f"plain-export-{engine}", "fp32"
        folder = default_cache_dir().parent / "plain" / (m.checkpoint_sha256 or "x")[:16]
        folder.mkdir(parents=True, exist_ok=True)
        size = self.ref.cfg.feature.native_size or self.ref.cfg.feature.input_size
        paths = {
            "backbone": folder / "backbone.onnx",
            "denoiser": folder / f"denoiser-{m.score_config.t_start}-{m.steps}.onnx",
        }
        if not paths["backbone"].exists():
            args = (torch.zeros(2, size, size, 3, dtype=torch.uint8),)
            paths["backbone"].write_bytes(ou.torch_to_onnx(self.ref.extractor, args, ["images"], ["z0"]))
        if not paths["denoiser"].exists():
            args = (torch.zeros(2, self.ref.cfg.denoiser.dim),)
            paths["denoiser"].write_bytes(
                ou.torch_to_onnx(_PlainDenoiser.make(self.ref.reconstructor()), args, ["z0"], ["mfsim", "mse"])
            )
        if engine == "ort":
            import onnxruntime as ort

            sess = {g: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for g, p in paths.items()}
            self.call = {
                g: (lambda feeds, s=s: dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds))))
                for g, s in sess.items()
            }
        else:
            from dlsr_deploy.runtime.openvino import import_ov

            core = import_ov().Core()
            cms = {g: core.compile_model(str(p), "CPU") for g, p in paths.items()}
            reqs = {g: cm.create_infer_request() for g, cm in cms.items()}
            self.call = {
                g: (lambda feeds, g=g: {o.get_any_name(): np.array(v) for o, v in reqs[g].infer(feeds).items()})
                for g in cms
            }

    def run(self, images):
        t = time.perf_counter()
        z0 = self.call["backbone"]({"images": np.ascontiguousarray(images)})["z0"]
        t1 = time.perf_counter()
        out = {k: v.astype(np.float64) for k, v in self.call["denoiser"]({"z0": z0}).items()}
        self.ref.add_density_scores(out, z0)
        return {n: out[n] for n in self.names}, {"input": 0.0, "backbone": t1 - t, "denoiser": time.perf_counter() - t1}


class RuntimeRunner(Runner):
    """A dlsr_deploy.runtime backend (ORT CPU / CUDA, TensorRT)."""

    def __init__(self, bundle, backend: str, threads: Optional[int] = None):
        from dlsr_deploy.runtime import Detector

        self.det = Detector.load(bundle, backend=backend, threads=threads, strict_providers=True)
        self.name = backend
        self.precision = self.det.manifest.precision

    def run(self, images):
        from dlsr_deploy.preprocess import as_batch

        t = time.perf_counter()
        x = as_batch(images, self.det.size)
        t1 = time.perf_counter()
        out, stages = self.det.backend.run_timed(x)
        m = self.det.manifest
        return {n: out[o] for n, o in zip(m.score_names, m.output_names)}, {"input": t1 - t, **stages}

    def close(self):
        self.det.close()


def time_runner(
    runner: Runner, images: np.ndarray, warmup_s: float, min_duration: float, min_iters: int, max_iters: int = 10_000
):
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


def eager_key(m) -> str:
    """Bundles that differ only in precision share one eager baseline (and its FLOPs)."""
    return json.dumps(
        [
            m.checkpoint_sha256,
            m.score_config.to_dict(),
            m.score_names,
            m.combinations,
            m.model_config.feature.to_dict(),
        ],
        sort_keys=True,
    )


@dataclass(frozen=True)
class TimingSettings:
    """How long and how often each (runner, batch size) is timed."""

    warmup_s: float = 1.0
    min_duration: float = 3.0
    min_iters: int = 5
    rounds: int = 3
    cv_warn: float = 0.15


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


GPU_EAGER = ("torch-eager-cuda", "torch-eager-cuda-fp16", "torch-compile-cuda")


def _compute_bounds(manifests) -> Tuple[dict, dict]:
    """(compute block of the result, {bundle: {flops_per_image, bound_images_per_s}})."""
    gemm = gemm_gflops()
    per_bundle, fpi_by_key = {}, {}
    for m in manifests:
        if eager_key(m) not in fpi_by_key:  # FP32/FP16/INT8 of one model: counted once
            fpi_by_key[eager_key(m)] = flops_per_image(m)
        fpi = fpi_by_key[eager_key(m)]
        per_bundle[m.name] = {"flops_per_image": fpi, "bound_images_per_s": gemm["gflops"] * 1e9 / fpi if fpi else None}
    compute = {
        "gemm": gemm,
        **per_bundle[manifests[0].name],
        "per_bundle": per_bundle,
        "note": "images/s that the measured SGEMM rate allows for each bundle's conv+matmul FLOPs per image "
        "(eager pipeline, torch FlopCounterMode); top-level values: the first bundle",
    }
    return compute, per_bundle


CPU_PEERS = ("torch-compile", "plain-export-ort", "plain-export-openvino")


def _jobs(manifests, bundles, wanted, avail, eager: bool, unavailable: list, peers: bool = False) -> list:
    """(backend, manifest, bundle) to load: one eager baseline per scoring config (plus the CPU
    peers with `peers`), every wanted runtime backend per bundle, the GPU eager variants where
    torch sees a GPU."""
    jobs, seen = [], set()
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    for m, b in zip(manifests, bundles):
        if eager and eager_key(m) not in seen:
            seen.add(eager_key(m))
            jobs.append(("torch-eager", m, b))
            if peers:
                jobs += [(p, m, b) for p in CPU_PEERS if p != "plain-export-openvino" or "openvino" in avail]
        jobs += [(be, m, b) for be in wanted if be in avail and be in m.backends]
        unavailable += [
            {"backend": be, "bundle": m.name, "reason": f"the bundle is for {m.backends}"}
            for be in wanted
            if be in avail and be not in m.backends
        ]
        if eager and cuda:
            jobs += [(n, m, b) for n in GPU_EAGER]
    if eager and not cuda:
        unavailable += [{"backend": n, "reason": "no CUDA device for PyTorch"} for n in GPU_EAGER]
    return jobs


def _make_runner(be: str, m, bundle, threads: Optional[int]) -> Runner:
    if be == "torch-eager":
        return EagerRunner(m, threads=threads)
    if be == "torch-compile":
        return EagerRunner(m, compile=True, threads=threads)
    if be.startswith("plain-export-"):
        return PlainExportRunner(m, engine=be.rsplit("-", 1)[1])
    if be.startswith("torch-"):
        return EagerRunner(m, device="cuda", autocast=be.endswith("fp16"), compile="compile" in be)
    return RuntimeRunner(bundle, be, threads)


def _accuracy(runner: Runner, headline: str, id_images: np.ndarray, ood_sets: Dict[str, np.ndarray]):
    """(AUROC of the headline score per OOD set, every score) from one pass in batches of 32."""
    from dlsr_deploy.metrics import auroc

    images = np.concatenate([id_images] + list(ood_sets.values()))
    parts = [runner.run(images[i : i + 32])[0] for i in range(0, len(images), 32)]
    sc = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    head, start, aur = sc[headline], len(id_images), {}
    for n, v in ood_sets.items():
        aur[n] = auroc(head[: len(id_images)], head[start : start + len(v)])
        start += len(v)
    return aur, sc


def _load_and_score(jobs, threads, id_images, ood_sets, unavailable: list, rows: list, quiet: bool) -> List[_Live]:
    """Stage 1: make every runner and score once (accuracy columns, score error vs eager)."""
    from tqdm.auto import tqdm

    eager_ref: Dict[str, Dict[str, np.ndarray]] = {}
    live: List[_Live] = []
    for be, m, b in tqdm(jobs, desc="load + accuracy", disable=quiet):
        try:
            runner = _make_runner(be, m, b, threads)
        except BackendUnavailable as exc:
            unavailable.append({"backend": be, "reason": str(exc)})
            continue
        try:
            aur, sc = _accuracy(runner, m.headline, id_images, ood_sets)
        except Exception as exc:  # a backend that cannot even score is reported, not hidden
            rows.append(Row(be, runner.precision, 0, m.steps, "failed", m.name, f"{type(exc).__name__}: {exc}"))
            runner.close()
            continue
        key = eager_key(m)
        if be == "torch-eager":
            eager_ref[key] = sc
        ref = eager_ref.get(key)
        err = (
            float(max(np.max(np.abs(sc[k] - ref[k])) / (np.abs(ref[k]).mean() + 1e-12) for k in ref if k in sc))
            if ref
            else float("nan")
        )
        status = "ok" if m.parity_passed else "exported-but-failed-parity"
        live.append(_Live(be, m, runner, status, aur, err, key, m.relaxed_parity_note))
    return live


def _time_batch(live: List[_Live], imgs: np.ndarray, ts: TimingSettings, bar):
    """Stage 2 for one batch size: `rounds` interleaved rounds, each giving every runner a
    slice of the warm-up and measuring time, so drift of a shared or throttling machine hits
    the baseline and the backends alike. -> (latencies, stage times, failures) per runner."""
    rounds = max(1, int(ts.rounds))
    lats: Dict[int, List[np.ndarray]] = {i: [] for i in range(len(live))}
    stages: Dict[int, List[dict]] = {i: [] for i in range(len(live))}
    failed: Dict[int, str] = {}
    for _ in range(rounds):
        for i, lv in enumerate(live):
            if i not in failed:
                try:
                    lat, st = time_runner(
                        lv.runner,
                        imgs,
                        ts.warmup_s / rounds,
                        ts.min_duration / rounds,
                        max(1, -(-ts.min_iters // rounds)),
                    )
                    lats[i].append(lat)
                    stages[i].append(st)
                except Exception as exc:
                    failed[i] = f"{type(exc).__name__}: {exc}"
            bar.update(1)
    return lats, stages, failed


def _row(
    lv: _Live,
    bs: int,
    lats: List[np.ndarray],
    stages: List[dict],
    failure: Optional[str],
    bound: Optional[float],
    ts: TimingSettings,
) -> Row:
    """Stage 3: one table row from a runner's timings."""
    prec = lv.runner.precision if lv.backend.startswith("torch") else lv.manifest.precision
    row = Row(
        lv.backend, prec, bs, lv.manifest.steps, lv.status, lv.manifest.name, auroc=lv.auroc, max_score_err=lv.err
    )
    keys = ("compile_seconds", "compiled_graphs")
    row.extra = {k: getattr(lv.runner, k) for k in keys if getattr(lv.runner, k, None)}
    row.reason = lv.note
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
    row.stages_ms = {k: float(np.median([s[k] for s in stages])) * 1e3 for k in stages[0]}
    row.cv = float(ms.std() / ms.mean())
    row.iters = len(ms)
    row.raw_ms = [round(float(x), 4) for x in ms]
    if row.cv > ts.cv_warn:
        row.warning = f"high variation (CV {row.cv:.0%}): the machine is noisy or throttling; repeat the run"
    return row


def _ratios(rows: List[Row]) -> None:
    """Each row's speed-up against the eager FP32 row of the same scoring config and batch."""
    for row in rows:
        base = next(
            (
                r
                for r in rows
                if r.backend == "torch-eager" and r.precision == "fp32" and r.status != "failed" and r._key == row._key
            ),
            None,
        )
        if base is not None and row.status != "failed":
            row.speedup_vs_eager = base.p50_ms / row.p50_ms
            row.speedup_rounds = [b / x for b, x in zip(base.round_p50_ms, row.round_p50_ms)]


def run_bench(
    bundles: Sequence[Path],
    id_images: np.ndarray,
    ood_sets: Dict[str, np.ndarray],
    *,
    batch_sizes: Sequence[int] = (1, 8, 32, 128),
    backends: Optional[Sequence[str]] = None,
    timing: TimingSettings = TimingSettings(),
    threads: Optional[int] = None,
    eager: bool = True,
    peers: bool = False,
    quiet: bool = False,
) -> BenchResult:
    """Time eager FP32 and every available backend on each bundle (same images, one
    process, all runners alive at once and timed in interleaved rounds)."""
    from tqdm.auto import tqdm

    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.runtime.backend import available_backends

    manifests = [read_manifest(b) for b in bundles]
    avail, unavailable = available_backends()
    wanted = list(backends) if backends else avail
    unavailable += [
        {"backend": b, "reason": "unknown backend"}
        for b in wanted
        if b not in avail and not any(u["backend"] == b for u in unavailable)
    ]
    header = {**machine_header(threads), "bundles": [str(b) for b in bundles]}
    compute, per_bundle = _compute_bounds(manifests)
    rows: List[Row] = []
    live = _load_and_score(
        _jobs(manifests, bundles, wanted, avail, eager, unavailable, peers),
        threads,
        id_images,
        ood_sets,
        unavailable,
        rows,
        quiet,
    )
    bar = tqdm(total=len(batch_sizes) * max(1, int(timing.rounds)) * len(live), desc="timing", disable=quiet)
    for bs in batch_sizes:
        imgs = np.ascontiguousarray(np.resize(id_images, (bs,) + id_images.shape[1:]))
        lats, stages, failed = _time_batch(live, imgs, timing, bar)
        new_rows = [
            _row(lv, bs, lats[i], stages[i], failed.get(i), per_bundle[lv.manifest.name]["bound_images_per_s"], timing)
            for i, lv in enumerate(live)
        ]
        _ratios(new_rows)
        rows += new_rows
    bar.close()
    order = {(lv.backend, lv.manifest.name): i for i, lv in enumerate(live)}
    rows.sort(key=lambda r: (order.get((r.backend, r.bundle), -1), r.batch))  # per backend, by batch
    for lv in live:
        lv.runner.close()
    return BenchResult(header, rows, unavailable, compute)
