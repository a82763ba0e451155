"""OpenVINO backend (CPU): the bundle's ONNX graphs compiled by OpenVINO, behind the same
interface as ONNX Runtime (`pip install 'dlsr-deploy[openvino]'`).

* `INFERENCE_PRECISION_HINT` is pinned to f32 for every graph of every bundle except the backbone
  of a bf16 bundle (`dlsr-export --precision bf16`), whose density heads were fitted on the
  features that bf16 backbone produces; its heads and denoiser still run f32. A bf16 bundle on a
  CPU without bf16 units (OpenVINO's OPTIMIZATION_CAPABILITIES has no BF16: AVX2-only x86, most
  ARM64) is refused at load, never run in f32 against heads fitted for bf16. Why pinned: OpenVINO's
  CPU default runs bf16
  on CPUs with AMX / avx512_bf16 (this dev box has avx512_bf16), a silent accuracy change, and an
  "f16" hint on this CPU also ran bf16 (provider string `<Type: 'bfloat16'>`): the load-time
  self-check caught it (z0 relative error 6.9e-2, 2 of 56 decisions flipped) before a score was
  served. FP16 bundles therefore run with their FP16 weights upcast to f32 on OpenVINO CPU.
* `PERFORMANCE_HINT` LATENCY (one stream, all threads on one request) by default; THROUGHPUT
  (several streams, batches split over an `AsyncInferQueue`) with `mode="throughput"`.
* Explicit thread count (`threads`), and a compiled-model cache (`CACHE_DIR`, default
  ~/.cache/dlsr-deploy/openvino) so later loads skip compilation.
* The load-time self-check covers it like every backend (`Detector.load(self_check="auto")`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from dlsr_deploy.errors import BackendUnavailable
from dlsr_deploy.runtime.backend import BackendBase, OpenOptions, cache_root, import_optional, usable_cache_dir


def import_ov():
    """openvino, or a clear error naming the extra to install."""
    return import_optional("openvino", "openvino")


def cpu_runs_bf16(core=None) -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 on this CPU (AMX or avx512_bf16)."""
    ov = import_ov()
    return "BF16" in (core or ov.Core()).get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def ov_config(
    mode: str = "latency", threads: Optional[int] = None, cache_dir: Optional[Path] = None, precision: str = "f32"
) -> dict:
    """The CPU plugin's settings for a graph: the precision hint (f32 but for a bf16 bundle's
    backbone; see the module's notes), the performance hint, the thread count and the cache."""
    config = {"PERFORMANCE_HINT": mode.upper(), "INFERENCE_PRECISION_HINT": precision}
    cache = usable_cache_dir(Path(cache_dir) if cache_dir else cache_root() / "openvino")
    if cache is not None:  # an unwritable or full cache location: compile every time, never fail
        config["CACHE_DIR"] = str(cache)
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def _hint(compiled) -> str:
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return str(getattr(hint, "type_name", None) or hint)  # e.g. "f32"


class OpenVinoSession:
    """One ONNX graph compiled for OpenVINO's CPU plugin, with OrtSession's `run(feeds)`. The
    backend holds one per graph; the exporter calibrates and verifies bundles made for OpenVINO
    (`--int8-scheme openvino`) with it."""

    def __init__(
        self,
        path: Path,
        threads: Optional[int] = None,
        mode: str = "latency",
        cache_dir: Optional[Path] = None,
        core=None,
        model: Optional[bytes] = None,
        precision: str = "f32",
    ):
        """path: the graph (read when `model`, its bytes, is None); precision: 'f32' or 'bf16'
        (refused, BackendUnavailable, where the CPU plugin would not compute bf16)."""
        self._ov = import_ov()
        core = core or self._ov.Core()
        if precision == "bf16" and not cpu_runs_bf16(core):
            caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            raise BackendUnavailable(
                f"{Path(path).name}: this bundle's backbone is bf16 and its density heads were fitted on bf16 "
                f"features, but this CPU has no bf16 units (OpenVINO CPU capabilities {list(caps)}; bf16 needs AMX "
                "or avx512_bf16); load the fp32 (or int8) bundle of the same run, or a bundle family "
                "(dlsr-export --precision fp32,bf16), which picks what this CPU was verified for"
            )
        source = core.read_model(model) if model is not None else str(path)
        self.compiled = core.compile_model(source, "CPU", ov_config(mode, threads, cache_dir, precision))
        self.precision = _hint(self.compiled)
        if self.precision != precision:
            raise BackendUnavailable(
                f"{Path(path).name}: OpenVINO compiled it in {self.precision}, not the {precision} it was verified in"
            )
        self.request = self.compiled.create_infer_request()

    def _outputs(self, get) -> Dict[str, np.ndarray]:
        return {o.get_any_name(): np.array(get(o)) for o in self.compiled.outputs}

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """All outputs of the graph, by name."""
        result = self.request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return self._outputs(result.__getitem__)

    def run_split(self, name: str, x: np.ndarray) -> Dict[str, np.ndarray]:
        """One large batch split over the plugin's streams (THROUGHPUT mode), reassembled in order."""
        cm = self.compiled
        n_req = max(1, int(cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        parts: Dict[int, Dict[str, np.ndarray]] = {}
        queue = self._ov.AsyncInferQueue(cm, n_req)
        queue.set_callback(lambda req, i: parts.__setitem__(i, self._outputs(lambda o: req.get_tensor(o).data)))
        for i, idx in enumerate(np.array_split(np.arange(len(x)), n_req)):
            if len(idx):
                queue.start_async({name: np.ascontiguousarray(x[idx])}, i)
        queue.wait_all()
        keys = sorted(parts)
        return {k: np.concatenate([parts[i][k] for i in keys]) for k in parts[keys[0]]}


def graph_precision(bundle_precision: str, role: str) -> str:
    """OpenVINO's inference precision for one graph of a bundle: bf16 for a bf16 bundle's backbone
    only (decision.onnx, which holds the heads too, is not written for bf16 bundles)."""
    return "bf16" if bundle_precision == "bf16" and role == "backbone" else "f32"


class OpenVinoBackend(BackendBase):
    """The bundle's graphs compiled for OpenVINO's CPU plugin (one OpenVinoSession each, compiled
    on first use). mode 'latency' (default) or 'throughput' (large batches split over streams)."""

    def __init__(
        self,
        manifest,
        options: Optional[OpenOptions] = None,
        spec=None,
        mode: str = "latency",
        cache_dir: Optional[Path] = None,
    ):
        super().__init__(manifest, options)
        self._ov = import_ov()
        if mode not in ("latency", "throughput"):
            raise ValueError(f"openvino mode: expected 'latency' or 'throughput', got {mode!r}")
        self.name = "openvino"
        self.mode = mode
        self.cache_dir = cache_dir
        self.core = self._ov.Core()
        self.precision_hint = self.session("backbone").precision  # "f32", or "bf16" for a bf16 bundle
        self.provider = f"OpenVINO {self._ov.__version__} CPU ({mode}, {self.precision_hint})"

    def open_graph(self, role: str) -> OpenVinoSession:
        """One graph compiled with the backend's settings."""
        o = self.options
        data = self.manifest.read_bytes(role)  # the bytes verified at load, never the path again
        prec = graph_precision(self.manifest.precision, role)
        return OpenVinoSession(self.manifest.file(role), o.threads, self.mode, self.cache_dir, self.core, data, prec)

    def run_graph(self, graph: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """One graph; in throughput mode a large batch is split over the plugin's streams."""
        name, x = next(iter(feeds.items()))
        if self.mode == "throughput" and len(x) >= 16:
            return self.session(graph).run_split(name, x)
        return self.session(graph).run({name: x})
