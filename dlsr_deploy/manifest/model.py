"""The bundle contract's typed view: `Manifest` accessors over a read manifest.json (stdlib only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from dlsr_deploy.errors import BundleError
from dlsr_deploy.names import SCORE_PREFIX, output_name, score_of, view_name

SCHEMA_VERSION = 3  # 2: heads.onnx beside denoiser.onnx, native-size provenance, verified targets; 3: decision.onnx
READABLE_SCHEMAS = (1, 2, 3)
REQUIRED = ("schema_version", "name", "files", "preprocessing", "precision", "scores", "threshold", "config")
DEFAULT_PROFILE = {"min": 1, "opt": 32, "max": 256}
PRECISIONS = ("fp32", "fp16", "int8", "bf16")
GRAPH_COST_ORDER = ("head", "heads", "denoiser", "pipeline")  # score graphs, cheapest first (head: the headline only)
IMAGE_GRAPHS = ("backbone", "pipeline", "decision")  # graphs fed with images (the others take z0)


@dataclass(frozen=True)
class Threshold:
    """The calibrated decision: `score` > `value` is OOD; (score - center) / scale is the normalised score."""

    score: str
    value: Optional[float]
    center: float
    scale: float
    target_tpr: Optional[float]
    all: Dict[str, float]
    id_quantiles: Optional[List[float]] = None  # the headline on the ID calibration images, 0..100 %


@dataclass
class Manifest:
    """A read, validated manifest.json with typed accessors; `data` keeps the raw JSON."""

    path: Path  # the bundle folder
    data: Dict[str, Any]
    # the folder and its files held open by read_manifest(hold=True): what read_bytes() reads
    snapshot: Any = field(default=None, repr=False, compare=False)

    def file_entries(self) -> List[dict]:
        """The manifest's entries of every file of the bundle (graphs, then the golden set)."""
        return list(self.files.values()) + ([self.golden] if self.golden else [])

    def read_bytes(self, role: str) -> bytes:
        """The bytes of a graph ('backbone', 'heads', ...) or of the golden set ('golden'), checked
        against the manifest's sha256 as they are read. With a snapshot (a loaded Detector's
        manifest) they come from the file opened and verified at load, whatever the folder holds now."""
        if role == "golden":
            self.golden_path()  # a clear error for bundles without a golden set
            info = self.golden
        else:
            self.file(role)
            info = self.files[role]
        if self.snapshot is not None:
            return self.snapshot.read(info["name"], info["sha256"], info.get("bytes"))
        from dlsr_deploy.manifest.snapshot import BundleSnapshot

        snap = BundleSnapshot(self.path)
        try:
            return snap.read(info["name"], info["sha256"], info.get("bytes"))
        finally:
            snap.close()

    def close(self) -> None:
        """Release the files held open since load (no-op without a snapshot); later reads go by path."""
        if self.snapshot is not None:
            self.snapshot.close()
            self.snapshot = None

    @property
    def name(self) -> str:
        """The bundle's name."""
        return self.data["name"]

    @property
    def files(self) -> Dict[str, dict]:
        """Graph entries by role (backbone, denoiser, pipeline): name, sha256, bytes, inputs, outputs."""
        return self.data["files"]

    def file(self, role: str) -> Path:
        """The path of a graph inside the bundle (never outside it)."""
        if role not in self.files:
            raise BundleError(f"{self.path}: the bundle has no '{role}' graph (has {sorted(self.files)})")
        return safe_join(self.path, self.files[role]["name"])

    @property
    def native_size(self) -> int:
        """The native image size the graphs take (uint8 [batch, size, size, 3]); the backbone's own
        input size is inside the graph (config.feature.input_size)."""
        return int(self.data["preprocessing"]["native_size"])

    @property
    def views(self) -> List[str]:
        """Every feature view the bundle decides with, the primary one first ('lite2@128',
        'lite1@128:flip'); one entry for a one-view bundle."""
        pre = self.data["preprocessing"]
        extra = [str(v["view"]) for v in pre.get("views") or []]
        return [view_name(pre.get("backbone", "?"), pre.get("input_size", "?")), *extra]

    @property
    def profile(self) -> Optional[str]:
        """The dlsr-train --profile the bundle's settings are (fast / balanced / accurate), or None."""
        return self.data["preprocessing"].get("profile")

    @property
    def input_size(self) -> int:
        """The same as native_size (the name earlier versions used; kept for their callers)."""
        return self.native_size

    @property
    def score_names(self) -> List[str]:
        """Every score the bundle outputs, in graph order."""
        return list(self.data["scores"]["names"])

    @property
    def output_names(self) -> List[str]:
        """Graph output names of every score, in score_names order."""
        return [output_name(s) for s in self.score_names]

    @staticmethod
    def output_name(score: str) -> str:
        """Graph output name of a score (`score_<name>`)."""
        return output_name(score)

    @property
    def score_graphs(self) -> Dict[str, List[str]]:
        """{score graph role: the scores it outputs}: 'heads' (density heads and their combinations,
        from z0) and 'denoiser' (every score). Bundles of schema 1 have the denoiser only."""
        out = {}
        for role, f in self.files.items():
            if role in IMAGE_GRAPHS:  # these take images, not z0
                continue
            out[role] = [
                score_of(o["name"]) for o in f.get("outputs", []) if str(o.get("name")).startswith(SCORE_PREFIX)
            ]
        return out

    @property
    def decision_score(self) -> Optional[str]:
        """The score decision.onnx computes from images in one call (the headline), or None."""
        f = self.files.get("decision")
        return str(f.get("headline")) if isinstance(f, dict) and f.get("headline") else None

    def graphs_for(self, names) -> List[str]:
        """The graphs that compute `names`: ['decision'] (images -> the headline, one call) when that
        is all that is asked and the bundle has it; else the score graphs to run after the backbone:
        the cheapest single graph that outputs all of them, else the cheapest graphs that together do."""
        if list(names) == [self.decision_score] and self.decision_score is not None:
            return ["decision"]
        graphs = self.score_graphs
        order = sorted(graphs, key=lambda r: (GRAPH_COST_ORDER.index(r) if r in GRAPH_COST_ORDER else 99, r))
        need = set(names)
        single = [r for r in order if need <= set(graphs[r])]
        if single:
            return [single[0]]
        chosen = []
        for r in order:
            if need & set(graphs[r]):
                chosen.append(r)
                need -= set(graphs[r])
        if need:
            raise BundleError(f"{self.path}: no graph of the bundle outputs {sorted(need)}")
        return chosen

    @property
    def verified_targets(self) -> List[str]:
        """CPU architectures / targets this bundle's precision was verified on (empty: not recorded)."""
        return [str(t) for t in (self.data.get("precision") or {}).get("verified_targets") or []]

    @property
    def native_size_source(self) -> str:
        """How the native size was chosen ('data: ...', 'given: --native-size', ...)."""
        return str(self.data["preprocessing"].get("native_size_source", "given"))

    @property
    def headline(self) -> str:
        """The score the threshold is calibrated for."""
        return self.data["scores"]["headline"]

    @property
    def precision(self) -> str:
        """'fp32', 'fp16', 'int8' or 'bf16' (backbone bf16 on OpenVINO, heads fitted on its features)."""
        return self.data["precision"]["mode"]

    @property
    def threshold(self) -> Threshold:
        """The calibrated threshold and normalisation of the headline score."""
        t = self.data["threshold"]
        return Threshold(
            t.get("score", self.headline),
            t.get("value"),
            float(t.get("center", 0.0)),
            float(t.get("scale", 1.0)),
            t.get("target_tpr"),
            dict(t.get("all", {})),
            t.get("id_quantiles"),
        )

    @property
    def backends(self) -> List[str]:
        """The backends the bundle is for (INT8 bundles are not for TensorRT)."""
        if "backends" in self.data:
            return list(self.data["backends"])
        from dlsr_deploy.registry import default_backends

        return default_backends(self.precision, (self.data.get("precision") or {}).get("int8_scheme"))

    @property
    def batch_profile(self) -> Dict[str, int]:
        """min / opt / max batch of the TensorRT optimisation profile (max is also the runtime's chunk size)."""
        return {k: int(v) for k, v in self.data.get("batch_profile", DEFAULT_PROFILE).items()}

    @property
    def source_run(self) -> Optional[str]:
        """The run directory the bundle was exported from (as recorded at export)."""
        return (self.data.get("source") or {}).get("run")

    @property
    def checkpoint_sha256(self) -> Optional[str]:
        """sha256 of the exported model weights."""
        return (self.data.get("source") or {}).get("checkpoint_sha256")

    @property
    def model_config(self):
        """The run's ModelConfig."""
        from dlsr_deploy.config import ModelConfig

        return ModelConfig.from_dict(self.data["config"])

    @property
    def score_config(self):
        """The ScoreConfig the denoiser graph was exported with."""
        from dlsr_deploy.config import ScoreConfig

        s = self.data["schedule"]
        import dataclasses

        return ScoreConfig(**{f.name: s[f.name] for f in dataclasses.fields(ScoreConfig) if f.name in s})

    @property
    def steps(self) -> int:
        """DDIM steps K unrolled into the denoiser graph."""
        return int(self.data["schedule"]["steps"])

    @property
    def combinations(self) -> List[dict]:
        """The combined scores in the graph (components, how, robust centre / scale)."""
        return list(self.data["scores"].get("combinations", []))

    @property
    def golden(self) -> Optional[dict]:
        """The golden set entry (name, sha256, bytes, n_id, n_ood) or None for older bundles."""
        return self.data.get("golden")

    def golden_path(self) -> Path:
        """Path of golden.npz inside the bundle."""
        if not self.golden:
            raise BundleError(f"{self.path}: the bundle has no golden set (exported before self-checks); re-export it")
        return safe_join(self.path, self.golden["name"])

    @property
    def self_check_tolerances(self) -> Dict[str, float]:
        """The tolerances the load-time self-check applies (rank_corr, auroc_change, flip_rate, z0_rel)."""
        sc = self.data.get("self_check") or {}
        tol = sc.get("tolerances")
        if not isinstance(tol, dict) or set(tol) != {"rank_corr", "auroc_change", "flip_rate", "z0_rel"}:
            raise BundleError(
                f"{self.path}: 'self_check.tolerances' must name rank_corr, auroc_change, flip_rate and z0_rel"
            )
        return {k: float(v) for k, v in tol.items()}

    @property
    def density_heads(self) -> List[str]:
        """Names of the density heads the bundle outputs (graph order)."""
        return list(self.data["scores"].get("density_heads") or [])

    @property
    def parity_passed(self) -> bool:
        """Whether the export's parity check passed (True when none was run)."""
        return bool((self.data.get("parity") or {}).get("passed", True))

    @property
    def parity_failures(self) -> List[str]:
        """What the export's parity check found over its tolerances (empty when it passed)."""
        return [str(f) for f in (self.data.get("parity") or {}).get("failures") or []]

    @property
    def relaxed_parity(self) -> Dict[str, Tuple[float, float]]:
        """The score tolerances the export's parity check ran looser than its precision's defaults,
        as {name: (used, default)} (e.g. a bundle exported with --flip-rate 0.02); empty for the
        defaults or when no parity check ran. z0_rel is left out: an 8-bit backbone loosens it by
        design, and the scores' checks are what the decisions depend on."""
        from dlsr_deploy.parity import Tolerances

        used = (self.data.get("parity") or {}).get("tolerances") or {}
        default = Tolerances.for_precision(self.precision).to_dict()
        out = {}
        for k, looser in (("rank_corr", min), ("auroc_change", max), ("flip_rate", max)):
            if k in used and looser(float(used[k]), default[k]) != default[k]:
                out[k] = (float(used[k]), default[k])
        return out

    @property
    def relaxed_parity_note(self) -> str:
        """relaxed_parity in words ('' for the defaults): what dlsr-export and dlsr-bench print."""
        relaxed = self.relaxed_parity
        if not relaxed:
            return ""
        return "parity passed at relaxed tolerances: " + ", ".join(
            f"{k} {u:g} (default {d:g})" for k, (u, d) in relaxed.items()
        )


def safe_join(folder: Path, name: str) -> Path:
    """folder / name, refused when it resolves outside the folder."""
    p = (Path(folder) / name).resolve()
    root = Path(folder).resolve()
    if root not in p.parents:
        raise BundleError(f"manifest names a file outside the bundle folder: {name!r}")
    return p
