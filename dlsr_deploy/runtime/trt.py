"""TensorRT backend (TensorRT 10.12+ and 11.x Python API).

* `engine_from_onnx()` builds a **strongly typed** plan (precision comes from the ONNX
  graph; TensorRT 11 has no FP16 builder flag and 10.12+ accepts STRONGLY_TYPED) with one
  optimisation profile for the batch, a persistent timing cache, a progress monitor and
  a workspace limit.
* Plans are cached under engines/ by `EngineCache` and rebuilt when TensorRT version,
  GPU, compute capability, profile or source ONNX change (or a clear error with build=False).
* Execution: name-based IO (`set_input_shape`, `set_tensor_address`, `execute_async_v3`)
  on the backend's own CUDA stream; output shapes re-queried after every shape change;
  device memory and pinned host buffers from cuda-python; optional CUDA graph per batch size.
* After a build from an FP16 bundle the engine inspector must show FP16 layers, else
  the backend refuses to call itself fp16.

None of this was executed on the development machines (no GPU, TensorRT not
installable there); `tests/platform/gpu/gpu_check.sh` runs it on a GPU machine in one go.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from dlsr_deploy.errors import BackendUnavailable, BundleError
from dlsr_deploy.log import info
from dlsr_deploy.runtime.backend import BackendBase, OpenOptions, import_optional
from dlsr_deploy.runtime.engine_cache import BuildKey, EngineCache

DEFAULT_ENGINES = Path("engines")


def import_trt():
    """tensorrt, or a clear error naming the extra to install."""
    return import_optional("tensorrt", "trt")


def trt_version() -> str:
    """The installed TensorRT version string."""
    return import_trt().__version__


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _progress_monitor(trt):
    class Progress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.t0 = time.time()

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                info(f"  [{time.time() - self.t0:6.1f}s] {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            pass

    return Progress()


def engine_from_onnx(
    onnx_path,  # a path, or the graph's bytes
    input_name: str,
    profile_shapes: Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]],
    timing_cache: Optional[Path] = None,
    workspace_bytes: Optional[int] = None,
) -> bytes:
    """Build a strongly typed serialized plan from an ONNX file (TensorRT 10.12+ / 11)."""
    trt = import_trt()
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except TypeError as exc:  # "factory function returned nullptr": no usable driver / GPU
        raise BackendUnavailable(
            f"TensorRT could not create a builder (no usable NVIDIA driver or GPU?): {exc}"
        ) from None
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif _major(trt.__version__) < 11:
        raise BackendUnavailable(f"TensorRT {trt.__version__} has no strongly typed networks; install tensorrt>=10.12")
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    data = onnx_path if isinstance(onnx_path, bytes) else Path(onnx_path).read_bytes()
    shown = "the graph" if isinstance(onnx_path, bytes) else onnx_path
    if not parser.parse(data):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"TensorRT could not parse {shown}: {errors}")
    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # so the inspector can show layer precisions
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *profile_shapes)
    config.add_optimization_profile(profile)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=True)
    monitor = _progress_monitor(trt)
    config.progress_monitor = monitor
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendUnavailable(
            f"TensorRT failed to build {shown} (out of GPU memory? try a smaller workspace or max batch)"
        )
    if timing_cache:
        from dlsr_deploy.io import atomic_write_bytes

        atomic_write_bytes(Path(timing_cache), bytes(cache.serialize()))
    return bytes(plan)


def layer_precisions(engine) -> Dict[str, int]:
    """Count of engine layers by output precision, from the engine inspector (JSON)."""
    trt = import_trt()
    insp = engine.create_engine_inspector()
    info = json.loads(insp.get_engine_information(trt.LayerInformationFormat.JSON))
    counts: Dict[str, int] = {}
    for layer in info.get("Layers", []):
        if isinstance(layer, dict):
            for out in layer.get("Outputs", []):
                fmt = str(out.get("Format/Datatype", ""))
                key = (
                    "fp16"
                    if ("Half" in fmt or "FP16" in fmt)
                    else "fp32"
                    if ("Float" in fmt or "FP32" in fmt)
                    else "other"
                )
                counts[key] = counts.get(key, 0) + 1
    return counts


class TrtEngine:
    """One deserialized engine with its context, stream and IO buffers."""

    def __init__(self, plan: bytes, max_batch: int, use_cuda_graph: bool = False):
        from dlsr_deploy.runtime import cuda_mem

        trt = import_trt()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BundleError(
                "TensorRT could not deserialize the plan (built by another TensorRT version or for another GPU?)"
            )
        self.context = self.engine.create_execution_context()
        self.stream = cuda_mem.Stream()
        self.max_batch = max_batch
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if n not in self.inputs]
        self.buffers = {}
        for n in self.names:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
            shape = list(self.engine.get_tensor_shape(n))
            per = int(np.prod([d for d in shape[1:] if d > 0])) if len(shape) > 1 else 1
            self.buffers[n] = cuda_mem.Buffer(per * max_batch * dtype.itemsize, dtype)
            self.context.set_tensor_address(n, int(self.buffers[n].device))
        self.use_cuda_graph = use_cuda_graph
        self.graphs: Dict[int, object] = {}

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the engine on named host inputs -> named host outputs (shapes re-queried per call)."""

        batch = None
        for n, arr in feeds.items():
            self.context.set_input_shape(n, tuple(arr.shape))
            self.buffers[n].to_device(arr, self.stream)
            batch = arr.shape[0]
        shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in self.outputs}  # re-queried every call
        if self.use_cuda_graph:
            self._launch_graph(batch)
        elif not self.context.execute_async_v3(self.stream.ptr):
            raise BackendUnavailable("TensorRT execute_async_v3 failed")
        return {n: self.buffers[n].from_device(shapes[n], self.stream) for n in self.outputs}

    def _launch_graph(self, batch: int) -> None:
        """Capture one CUDA graph per batch size on first use, then replay it."""
        from dlsr_deploy.runtime import cuda_mem

        rt = cuda_mem.cudart()
        if batch not in self.graphs:
            self.context.execute_async_v3(self.stream.ptr)  # warm-up outside capture (allocations)
            cuda_mem.check(
                rt.cudaStreamBeginCapture(self.stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
                "cudaStreamBeginCapture",
            )
            self.context.execute_async_v3(self.stream.ptr)
            graph = cuda_mem.check(rt.cudaStreamEndCapture(self.stream.handle), "cudaStreamEndCapture")
            self.graphs[batch] = cuda_mem.check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        cuda_mem.check(rt.cudaGraphLaunch(self.graphs[batch], self.stream.handle), "cudaGraphLaunch")

    def close(self) -> None:
        """Free buffers, the stream and the engine."""
        for b in self.buffers.values():
            b.close()
        self.stream.close()
        self.context = self.engine = None


class TrtBackend(BackendBase):
    """The bundle's graphs as TensorRT engines (built, or loaded from the engine cache, on first
    use of each graph)."""

    def __init__(
        self,
        manifest,
        options: Optional[OpenOptions] = None,
        spec=None,
        workspace_bytes: Optional[int] = None,
    ):
        from dlsr_deploy.runtime import cuda_mem

        super().__init__(manifest, options)
        self.name = "trt"
        if "trt" not in manifest.backends:
            raise BackendUnavailable(
                f"bundle {manifest.name} is {manifest.precision} for {manifest.backends} only (TensorRT does not "
                "run dynamic INT8); export it with --fp16 for TensorRT"
            )
        self.version = trt_version()
        self.gpu, self.cc = cuda_mem.device_info()
        self.cache = EngineCache(Path(self.options.engines_dir or DEFAULT_ENGINES), manifest.name)
        prof = manifest.batch_profile
        max_batch = self.options.max_batch or prof["max"]
        self.profile = (int(prof["min"]), int(prof["opt"]), int(min(max_batch, prof["max"])))
        self.workspace_bytes = workspace_bytes
        self.build_info: Dict[str, dict] = {}
        self.provider = f"TensorRT {self.version} on {self.gpu}"
        self.session("backbone")

    def _plan(self, graph: str) -> Path:
        """The cached plan of one graph, built when missing or stale (and allowed)."""
        f = self.manifest.files[graph]
        key = BuildKey(self.version, self.gpu, self.cc, self.profile, f["sha256"], self.manifest.precision)
        plan_path, reason = self.cache.lookup(key, graph)
        if plan_path is None:
            if not self.options.build:
                raise BundleError(
                    f"no usable TensorRT plan for {graph} ({reason}); running TensorRT {self.version} on {self.gpu} "
                    f"(sm {self.cc}); build it with `dlsr-build {self.manifest.path}`"
                )
            spec = f["inputs"][0]
            shapes = tuple((b, *spec["shape"][1:]) for b in self.profile)
            t = time.time()
            plan = engine_from_onnx(
                self.manifest.read_bytes(graph),  # the bytes verified at load
                spec["name"],
                shapes,
                self.cache.root / "timing.cache",
                self.workspace_bytes,
            )
            plan_path = self.cache.store(
                key, graph, plan, {"build_seconds": round(time.time() - t, 1), "reason": reason}
            )
        self.build_info[graph] = {"plan": str(plan_path), "reason": reason}
        return plan_path

    def open_graph(self, role: str) -> "TrtEngine":
        """The graph's engine; an FP16 bundle whose engine has no FP16 layer is refused."""
        plan_path = self._plan(role)
        eng = TrtEngine(plan_path.read_bytes(), self.profile[2], self.options.cuda_graphs)
        counts = layer_precisions(eng.engine)
        if (
            self.manifest.precision == "fp16" and role != "heads" and counts.get("fp16", 0) == 0
        ):  # heads: FP32 by design
            eng.close()
            raise BackendUnavailable(
                f"the TensorRT engine for {role} has no FP16 layers although the bundle is FP16 (layer "
                f"outputs by precision: {counts}); refusing to report it as fp16"
            )
        self.build_info[role]["layer_precisions"] = counts
        return eng

    def build_all(self) -> Dict[str, dict]:
        """Build (or load) every graph's engine now (dlsr-build) -> build_info."""
        for role in self.manifest.files:
            if role != "pipeline":
                self.session(role)
        return self.build_info
