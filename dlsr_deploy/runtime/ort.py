"""ONNX Runtime backend (CPU or CUDA), with explicit providers and a check of the
provider actually used after session creation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from dlsr_deploy.errors import BackendUnavailable
from dlsr_deploy.runtime.backend import BackendBase, OpenOptions, import_optional

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def import_ort():
    """onnxruntime, or a clear error naming the extra to install."""
    return import_optional("onnxruntime", "cpu")


def _session_options(ort, device: str, threads: Optional[int], spin: bool, arena: bool):
    """ORT SessionOptions: full graph optimisation, threads, spinning and arena as asked."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    if device == "cpu" and not spin:
        # backbone.onnx and denoiser.onnx run back to back, each session with its own
        # pool. With ORT's default spin-waiting the idle pool's threads keep spinning
        # while the other session works and take the cores from it: on the 2-core
        # dev box turning it off made the pipeline 1.32x faster at batch 32 and 1.53x
        # at batch 1 (benchmarks/README.md, suite ort_threads). ORT's global pool would avoid it too, but once made it
        # forces every other session in the process onto it, so a library cannot.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if device == "cpu" and not arena:
        # no CPU memory arena: buffers go back to the allocator after each run, so a process
        # that scored a large batch once does not keep the peak resident
        # (benchmarks/README.md, suite memory, measures both; throughput cost within noise)
        opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 3
    return opts


class OrtSession:
    """One ONNX graph in one InferenceSession."""

    def __init__(
        self,
        path: Path,
        device: str = "cpu",
        *,
        provider_options: Optional[dict] = None,
        strict: bool = False,
        threads: Optional[int] = None,
        spin: bool = True,
        arena: bool = True,
        upcast_fp16: bool = False,
        model: Optional[bytes] = None,
    ):
        """path names the graph (in messages, and is read when `model`, the graph's bytes, is None)."""
        ort = import_ort()
        self.path = Path(path)
        wanted = PROVIDERS[device]
        available = ort.get_available_providers()
        if wanted not in available:
            raise BackendUnavailable(
                f"ONNX Runtime provider {wanted} is not available (available: {available}); install "
                "onnxruntime-gpu for CUDA"
            )
        opts = _session_options(ort, device, threads, spin, arena)
        providers: List = [(wanted, provider_options or {})]
        if device != "cpu":
            providers.append("CPUExecutionProvider")
        self.upcast = None  # what fp16_upcast rewrote, when it did
        source = model if model is not None else str(self.path)
        if upcast_fp16 and device == "cpu":
            source, self.upcast = _upcast(self.path, model)
        self.session = ort.InferenceSession(source, sess_options=opts, providers=providers)
        used = self.session.get_providers()
        self.provider = used[0]
        if self.provider != wanted:
            msg = (
                f"ONNX Runtime fell back to {self.provider} for {self.path.name} although {wanted} was requested "
                f"(providers in use: {used})"
            )
            if strict:
                raise BackendUnavailable(msg)
            import warnings

            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        self.device = "cuda" if self.provider == PROVIDERS["cuda"] else "cpu"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the graph on named inputs -> named outputs (IO binding on CUDA)."""
        if self.device == "cuda":
            return self._run_iobinding(feeds)
        outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs))

    def _run_iobinding(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Inputs copied once to the device, outputs allocated there and copied back once
        (no per-node host round trips)."""
        binding = self.session.io_binding()
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, arr)
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))

    def close(self) -> None:
        """Drop the session(s)."""
        self.session = None


def _upcast(path: Path, model: Optional[bytes] = None):
    """The FP16 graph (its bytes, or read from path) rewritten to FP32 (runtime/fp16_upcast.py) ->
    (model bytes or path, counts)."""
    from dlsr_deploy.runtime.fp16_upcast import Fp16UpcastError, upcast_model

    try:
        return upcast_model(model if model is not None else path.read_bytes())
    except Fp16UpcastError as e:
        import warnings

        warnings.warn(
            f"{path.name}: not rewritten to FP32 ({e}); ONNX Runtime runs it as exported, in half precision "
            "where this CPU has FP16 kernels (ARM64), and its self-check decides",
            RuntimeWarning,
            stacklevel=3,
        )
        return str(path), None


class OrtBackend(BackendBase):
    """The bundle's graphs on one ORT provider ('ort-cpu' or 'ort-cuda'), one session per graph
    opened on first use (or pipeline.onnx with options.fused)."""

    def __init__(self, manifest, options: Optional[OpenOptions] = None, spec=None):
        super().__init__(manifest, options)
        self.name = spec.name if spec is not None else "ort-cpu"
        self.device = "cuda" if self.name == "ort-cuda" else "cpu"
        self.fused = self.options.fused and "pipeline" in manifest.files
        first = "pipeline" if self.fused else "backbone"
        self.provider = self.session(first).provider  # open one graph now: a provider problem shows at load

    def open_graph(self, role: str) -> OrtSession:
        """One session; CPU sessions of a chain do not spin-wait (see OrtSession)."""
        o = self.options
        # FP16 bundles compute in FP32 on every CPU (runtime/fp16_upcast.py: parity on ARM64, speed on x86-64)
        common = dict(provider_options=o.provider_options, strict=o.strict, threads=o.threads)
        common["upcast_fp16"] = self.manifest.precision == "fp16"
        # the bytes verified at load (Manifest.read_bytes), never the path again
        common["model"] = self.manifest.read_bytes(role)
        if role == "pipeline":
            return OrtSession(self.manifest.file(role), self.device, **common)
        return OrtSession(self.manifest.file(role), self.device, spin=False, arena=False, **common)

    def run_timed(self, images: np.ndarray, graphs=None):
        """The graphs (or the fused one) with per-stage seconds."""
        if self.fused:  # one fused graph: no stage split
            t = time.perf_counter()
            out = self.run_graph("pipeline", {"images": images})
            return out, {"pipeline": time.perf_counter() - t}
        return super().run_timed(images, graphs)
