"""The extension points: registries of runtime backends, reconstruction scores and density heads (stdlib only).

Adding a backend is one module with a class (see `dlsr_deploy/runtime/backend.py` for the
interface) plus one `register_backend(BackendSpec(...))` line; `Detector.load`, `auto`, the
manifest's default backend list, the CLI's `--backend` choices and help, and `dlsr-bench` read
it. Adding a DLSR reconstruction score (a function of z0 and its reconstruction) is one
function pair plus one `register_score(ScoreSpec(...))` line; the exported denoiser graph, the
eager reference, `dlsr-eval` and the bench iterate it. Adding a density head (a score of z0
alone, ||(f(z0) - mean) @ proj||^2) is one fit function plus one `register_head(HeadSpec(...))`
line; `dlsr-train` fits every registered head, `dlsr-eval` reports them, and the exporter writes
them into heads.onnx (fitted from the run's training z0 when the run predates the head). Input
kinds (what `dlsr-score`, `dlsr-train` ... accept) are the table `dlsr_deploy.inputs.INPUT_KINDS`.

The registry imports nothing heavy: classes and score implementations are named by
"module:attribute" strings (or given as callables) and imported when used.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from dlsr_deploy.errors import BackendUnavailable, ConfigError

Target = Union[str, Callable[..., Any]]


def resolve(target: Target) -> Any:
    """A callable or class given directly or as 'package.module:attribute'."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


# --------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class BackendSpec:
    """One runtime backend.

    name: what users type (`--backend`, `Detector.load(backend=...)`) and the manifest lists.
    cls: the backend class ('module:Class'), constructed as cls(manifest, options) where
        options is a `runtime.backend.OpenOptions`.
    probe: () -> None when this machine can run it, else the reason it cannot (with the install hint).
    precisions: bundle precisions it runs; int8_schemes: which 8-bit schemes among them.
    chunk: images per call by default (None: the bundle's batch-profile maximum).
    device: 'cpu' or 'gpu'. gpu_rank: `auto`'s order among GPU backends (lower first);
    cpu_candidate: `auto` times it against the other CPU candidates on the golden set.
    engine: how reports name it ("ONNX Runtime CPU").
    """

    name: str
    cls: Target
    probe: Target  # () -> None when usable here, else the reason; a callable or "module:function"
    precisions: Tuple[str, ...] = ("fp32", "fp16", "int8")
    int8_schemes: Tuple[str, ...] = ()
    chunk: Optional[int] = None
    device: str = "cpu"
    gpu_rank: Optional[int] = None
    cpu_candidate: bool = False
    engine: str = ""
    in_manifest_by_default: bool = True

    def runs(self, precision: str, int8_scheme: Optional[str] = None) -> bool:
        """Whether bundles of this precision (and 8-bit scheme) run here."""
        if precision not in self.precisions:
            return False
        return precision != "int8" or (int8_scheme or "dynamic") in self.int8_schemes


BACKENDS: Dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec, replace: bool = False) -> BackendSpec:
    """Add a backend to the registry (replace=True to override an entry of the same name)."""
    if spec.name in BACKENDS and not replace:
        raise ConfigError(f"backend {spec.name!r} is already registered")
    if spec.name == "auto" or not spec.name:
        raise ConfigError(f"backend name {spec.name!r} is reserved")
    BACKENDS[spec.name] = spec
    return spec


def unregister_backend(name: str) -> None:
    """Remove a backend (tests that register toy backends clean up with it)."""
    BACKENDS.pop(name, None)


def backend_spec(name: str) -> BackendSpec:
    """The registry entry of a backend, or BackendUnavailable naming the choices."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendUnavailable(f"backend: expected one of {['auto', *BACKENDS]}, got {name!r}") from None


def backend_names() -> List[str]:
    """Every registered backend name, in registration order."""
    return list(BACKENDS)


def default_backends(precision: str, int8_scheme: Optional[str] = None) -> List[str]:
    """The backends a new bundle of this precision lists in its manifest."""
    return [s.name for s in BACKENDS.values() if s.in_manifest_by_default and s.runs(precision, int8_scheme)]


def availability() -> Tuple[List[str], List[dict]]:
    """(backends this machine can run, in registry order; [{backend, reason}] for the others)."""
    ok, missing = [], []
    for spec in BACKENDS.values():
        try:
            reason = resolve(spec.probe)()
        except Exception as exc:  # a probe must never take the process down
            reason = f"probe failed ({exc.__class__.__name__}: {exc})"
        if reason is None:
            ok.append(spec.name)
        else:
            missing.append({"backend": spec.name, "reason": reason})
    return ok, missing


def auto_help() -> str:
    """What `auto` does, generated from the registry (the CLI's --backend help)."""
    gpu = sorted((s for s in BACKENDS.values() if s.gpu_rank is not None), key=lambda s: s.gpu_rank)
    cpu = [s.name for s in BACKENDS.values() if s.cpu_candidate]
    gpu_txt = " > ".join(s.name for s in gpu) if gpu else "none"
    return (
        f"auto = the first usable GPU backend ({gpu_txt}) the bundle lists; on a CPU, the faster of "
        f"{' and '.join(cpu) or 'the CPU backends'} measured on the bundle's golden images the first time "
        "(verdict cached per machine and library versions)"
    )


def module_found(module: str) -> bool:
    """Whether a module can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------- reconstruction scores


@dataclass(frozen=True)
class ScoreSpec:
    """A DLSR reconstruction score: higher = more OOD.

    numpy: (z0 [N, D], z0_hat [N, D], layer sizes, options) -> float64 [N] (evaluation, tests).
    torch: the same in torch on float32 [B, D] tensors (traced into denoiser.onnx and used by the
        eager reference), 'module:function' or a callable.
    definition: one line for the manifest and the reports.
    lr: also reported as `lr_<name>` = score(first-epoch model) - score(final model).
    """

    name: str
    numpy: Target
    torch: Target
    definition: str
    lr: bool = True
    options: Dict[str, Any] = field(default_factory=dict)


SCORES: Dict[str, ScoreSpec] = {}


def register_score(spec: ScoreSpec, replace: bool = False) -> ScoreSpec:
    """Add a reconstruction score (replace=True to override one of the same name)."""
    if spec.name in SCORES and not replace:
        raise ConfigError(f"score {spec.name!r} is already registered")
    if not spec.name.isidentifier() or spec.name.startswith(("lr", "sum_", "max_")):
        raise ConfigError(f"score name {spec.name!r}: expected an identifier not starting with lr / sum_ / max_")
    SCORES[spec.name] = spec
    return spec


def unregister_score(name: str) -> None:
    """Remove a reconstruction score (tests clean up with it)."""
    SCORES.pop(name, None)


def reconstruction_scores() -> List[str]:
    """Registered reconstruction scores, in registration order (the graph's output order)."""
    return list(SCORES)


# --------------------------------------------------------------------------- density heads


@dataclass(frozen=True)
class HeadSpec:
    """A density head: a score of z0 alone, higher = more OOD, computed as ||(f(z0) - mean) @ proj||^2
    (f = identity, or l2 normalisation) so every head is one MatMul in heads.onnx.

    fit: (z [N, D] float64 training features, layer sizes) -> dict(mean [D], proj [D, D], and
        optionally l2: bool, info: dict, blocks: layer sizes when proj is block-diagonal);
        'module:function' or a callable.
    definition: one line for the reports.
    """

    name: str
    fit: Target
    definition: str


HEADS: Dict[str, HeadSpec] = {}


def register_head(spec: HeadSpec, replace: bool = False) -> HeadSpec:
    """Add a density head (replace=True to override one of the same name)."""
    if spec.name in HEADS and not replace:
        raise ConfigError(f"density head {spec.name!r} is already registered")
    if not spec.name.isidentifier() or spec.name.startswith(("lr", "sum_", "max_")) or spec.name in SCORES:
        raise ConfigError(
            f"density head name {spec.name!r}: expected an identifier not starting with lr / sum_ / max_ and not a "
            "reconstruction score's name"
        )
    HEADS[spec.name] = spec
    return spec


def unregister_head(name: str) -> None:
    """Remove a density head (tests, plug-ins)."""
    HEADS.pop(name, None)


def density_heads() -> List[str]:
    """Every registered density head, in registration order."""
    return list(HEADS)


# the built-in density heads, in registration order, with the one line the manifest and the reports
# record for each (the one table of them: scoring.DENSITY_HEADS and the manifest read it)
BUILTIN_HEADS = {
    "maha_lw": "Mahalanobis distance to the training z0, Ledoit-Wolf covariance",
    "gauss_layer": "sum over tap layers of each layer's Mahalanobis distance (Ledoit-Wolf), Rippel et al. 2020",
    "maha_l2": "maha_lw on l2-normalised z0 (Mahalanobis++)",
    "maha_ridge": "Mahalanobis distance to the training z0, covariance + 1e-6 * mean variance",
    "gauss_layer_dn": "sum over tap layers of each layer's Mahalanobis distance divided by the layer's dimension",
}


def _register_builtin_heads() -> None:
    for name, definition in BUILTIN_HEADS.items():
        register_head(HeadSpec(name, f"dlsr_deploy.scoring:fit_{name}", definition))


def _register_builtin_scores() -> None:
    register_score(
        ScoreSpec(
            "mfsim",
            "dlsr_deploy.scoring:mfsim_score",
            "dlsr_deploy.model.detector:torch_mfsim",
            "-mean over layers of cos(z0_m, z0_hat_m)",
        )
    )
    register_score(
        ScoreSpec("mse", "dlsr_deploy.scoring:mse_score", "dlsr_deploy.model.detector:torch_mse", "sum (z0 - z0_hat)^2")
    )


def _register_builtin_backends() -> None:
    ort = "dlsr_deploy.runtime.ort:OrtBackend"
    register_backend(
        BackendSpec(
            "trt",
            "dlsr_deploy.runtime.trt:TrtBackend",
            "dlsr_deploy.runtime.probes:tensorrt",
            ("fp32", "fp16"),
            device="gpu",
            gpu_rank=0,
            engine="TensorRT",
        )
    )
    register_backend(
        BackendSpec(
            "ort-cuda",
            ort,
            "dlsr_deploy.runtime.probes:ort_cuda",
            int8_schemes=("dynamic", "weight-only"),
            device="gpu",
            gpu_rank=1,
            engine="ONNX Runtime CUDA",
        )
    )
    register_backend(
        # images per call on the CPU. Throughput is flat from here up, memory is not: scoring 10,000
        # images on the paper-size bundle peaked at 571 MB with chunks of 24 vs 624 MB with 32
        BackendSpec(
            "ort-cpu",
            ort,
            "dlsr_deploy.runtime.probes:ort_cpu",
            int8_schemes=("dynamic", "weight-only"),
            chunk=24,
            cpu_candidate=True,
            engine="ONNX Runtime CPU",
        )
    )
    register_backend(
        # OpenVINO keeps its activation buffers for the largest batch it has run: chunks of 8 kept a
        # first load through auto under 600 MB on the paper-size bundle (benchmarks/README.md, suite memory)
        BackendSpec(
            "openvino",
            "dlsr_deploy.runtime.openvino:OpenVinoBackend",
            "dlsr_deploy.runtime.probes:openvino",
            ("fp32", "fp16", "int8", "bf16"),
            int8_schemes=("dynamic", "openvino"),
            chunk=8,
            cpu_candidate=True,
            engine="OpenVINO CPU",
        )
    )


_register_builtin_scores()
_register_builtin_heads()
_register_builtin_backends()
