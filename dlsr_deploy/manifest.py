"""The bundle contract: read, validate and write manifest.json (stdlib + numpy only).

A bundle is a folder with manifest.json and the ONNX files it lists. Loading verifies
every file's sha256 and refuses file names that leave the folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from dlsr_deploy.errors import BundleError
from dlsr_deploy.io import atomic_write_text, sha256_file

SCHEMA_VERSION = 1
REQUIRED = ("schema_version", "name", "files", "preprocessing", "precision", "scores", "threshold", "config")
SCORE_PREFIX = "score_"
DEFAULT_PROFILE = {"min": 1, "opt": 32, "max": 256}
SCORE_DEFINITIONS = {
    "mfsim": "-mean over layers of cos(z0_m, z0_hat_m)",
    "mse": "sum (z0 - z0_hat)^2",
    "lr": "MSE(first-epoch model) - MSE(final model), same stored noise",
    "maha_lw": "Mahalanobis distance to the training z0, Ledoit-Wolf covariance",
    "maha_ridge": "Mahalanobis distance to the training z0, covariance + 1e-6 * mean variance",
    "gauss_layer": "sum over tap layers of each layer's Mahalanobis distance (Ledoit-Wolf), Rippel et al. 2020",
    "maha_l2": "maha_lw on l2-normalised z0 (Mahalanobis++)",
}
PRECISION_HOW = {
    "fp16": "FP16 weights and activations written into the graph (strongly typed); FP32 inputs/outputs, "
    "preprocessing, pooling, z-score, GroupNorm statistics, DDIM arithmetic, density heads and score reductions",
    "int8": "denoiser MatMul weights 8-bit: int8_scheme 'dynamic' = uint8 weights per output channel with "
    "activations quantized per call (ONNX Runtime DynamicQuantizeMatMul, U8U8 kernels, exact on every x86 CPU), "
    "'weight-only' = int8 weights in blocks of 32 (MatMulNBits, activations to int8 per block in the kernel); "
    "backbone FP32, or with int8_backbone_from its blocks from that index static INT8 (QDQ: uint8 activations "
    "calibrated on held-out ID images, int8 weights per channel in 7 bits); norms, DDIM arithmetic, density "
    "heads and scores FP32. For ONNX Runtime on CPUs; TensorRT does not run dynamic quantization",
    "fp32": "FP32 throughout",
}


def output_name(score: str) -> str:
    """Graph output name of a score."""
    return SCORE_PREFIX + score


def score_of(output: str) -> str:
    """Score name of a graph output (`score_<name>`)."""
    if not output.startswith(SCORE_PREFIX):
        raise BundleError(f"graph output {output!r} is not a score (expected {SCORE_PREFIX}<name>)")
    return output[len(SCORE_PREFIX) :]


@dataclass(frozen=True)
class Threshold:
    """The calibrated decision: `score` > `value` is OOD; (score - center) / scale is the normalised score."""

    score: str
    value: Optional[float]
    center: float
    scale: float
    target_tpr: Optional[float]
    all: Dict[str, float]


@dataclass
class Manifest:
    """A read, validated manifest.json with typed accessors; `data` keeps the raw JSON."""

    path: Path  # the bundle folder
    data: Dict[str, Any]

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
    def input_size(self) -> int:
        """The native image size the graphs take (uint8 [batch, size, size, 3])."""
        return int(self.data["preprocessing"]["native_size"])

    @property
    def score_names(self) -> List[str]:
        """Every score the bundle outputs, in graph order."""
        return list(self.data["scores"]["names"])

    @property
    def output_names(self) -> List[str]:
        """Graph output names of every score, in score_names order."""
        return [output_name(s) for s in self.score_names]

    @property
    def headline(self) -> str:
        """The score the threshold is calibrated for."""
        return self.data["scores"]["headline"]

    @property
    def precision(self) -> str:
        """'fp32', 'fp16' or 'int8'."""
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
        )

    @property
    def backends(self) -> List[str]:
        """The backends the bundle is for (INT8 bundles are not for TensorRT)."""
        return list(self.data.get("backends", ["ort-cpu", "ort-cuda", "trt"]))

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


def build_manifest(
    *,
    name: str,
    producer: dict,
    run_dir: Path,
    cfg,
    score_cfg,
    plan: dict,
    native: int,
    files: dict,
    precision: str,
    fp16_shares: dict,
    score_names: List[str],
    headline: str,
    headline_choice: dict,
    heads: dict,
    combos: List[dict],
    with_first: bool,
    threshold: dict,
    batch_profile,
    parity: Optional[dict],
    export_seconds: float,
) -> Dict[str, Any]:
    """The manifest.json content of a bundle (see DESIGN.md section 4)."""
    run_dir = Path(run_dir)
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "producer": dict(producer),
        "source": {
            "run": str(run_dir),
            "checkpoint_sha256": sha256_file(run_dir / "model.safetensors"),
            "first_epoch_sha256": sha256_file(run_dir / "model_first_epoch.safetensors") if with_first else None,
            "density_sha256": sha256_file(run_dir / "density.npz") if heads else None,
        },
        "config": cfg.to_dict(),
        "preprocessing": _preprocessing(cfg, native),
        "files": files,
        "precision": {
            "mode": precision,
            "how": PRECISION_HOW[precision],
            "fp16_share": fp16_shares,
            "tensorrt": "strongly typed build (NetworkDefinitionCreationFlag.STRONGLY_TYPED), no precision flag",
        },
        "schedule": {
            **score_cfg.to_dict(),
            "T": cfg.schedule.timesteps,
            "beta_start": cfg.schedule.beta_start,
            "beta_end": cfg.schedule.beta_end,
            "plan": plan,
        },
        "scores": _scores(score_names, headline, headline_choice, heads, combos),
        "threshold": _threshold(headline, threshold),
        "backends": ["ort-cpu", "ort-cuda", "openvino"] + ([] if precision == "int8" else ["trt"]),
        "batch_profile": {"min": batch_profile[0], "opt": batch_profile[1], "max": batch_profile[2]},
        "parity": parity,
        "export_seconds": export_seconds,
    }


def _preprocessing(cfg, native: int) -> dict:
    return {
        "input": "images uint8 [batch, native_size, native_size, 3], RGB, channel-last",
        "native_size": native,
        "input_size": cfg.feature.input_size,
        "resize": "bilinear, half-pixel (align_corners=False), inside the graph",
        "bring_to_native": "centre square crop + Pillow bilinear (dlsr_deploy.preprocess)",
        "mean": list(cfg.feature.mean),
        "std": list(cfg.feature.std),
        "backbone": cfg.feature.backbone,
        "layer_sizes": list(cfg.layer_sizes),
        "dim": cfg.denoiser.dim,
    }


def _scores(names: List[str], headline: str, choice: dict, heads: dict, combos: List[dict]) -> dict:
    combo_def = "combination ({}) of scores standardised by their held-out ID median / IQR"
    return {
        "names": list(names),
        "headline": headline,
        "headline_choice": choice,
        "direction": "higher score = more OOD",
        "density_heads": {n: {"l2": bool(h.l2), "fitted_on": "training z0 of the run"} for n, h in heads.items()},
        "combinations": combos,
        "definitions": {n: SCORE_DEFINITIONS.get(n, combo_def.format(n)) for n in names},
    }


def _threshold(headline: str, t: dict) -> dict:
    return {
        "score": headline,
        **{k: t[k] for k in ("value", "all", "center", "scale", "target_tpr", "n_images")},
        "method": f"{t['target_tpr']:.0%} quantile of ID scores; ID only ({t['how']})",
        "backend": "ONNX Runtime CPU on this bundle's graphs",  # the exporter names the engine it used
        "normalized": "(score - center) / scale: 0 = median ID score, 1.0 = threshold",
    }


def safe_join(folder: Path, name: str) -> Path:
    """folder / name, refused when it resolves outside the folder."""
    p = (Path(folder) / name).resolve()
    root = Path(folder).resolve()
    if root not in p.parents:
        raise BundleError(f"manifest names a file outside the bundle folder: {name!r}")
    return p


def write_manifest(folder: Path, data: Dict[str, Any], sign_key=None) -> Path:
    """Write manifest.json atomically after checking the required keys, with its digest (and an
    Ed25519 signature of the digest when `sign_key`, a PEM private key path, is given)."""
    data = dict(data)
    data.setdefault("schema_version", SCHEMA_VERSION)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise BundleError(f"manifest is missing required key(s) {missing}")
    data.pop("digest", None)
    data.pop("signature", None)
    data["digest"] = content_digest(data)
    if sign_key is not None:
        from dlsr_deploy.signing import sign_manifest

        data = sign_manifest(data, sign_key)
    path = Path(folder) / "manifest.json"
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def content_digest(data: Dict[str, Any]) -> str:
    """sha256 over the manifest's canonical JSON (sorted keys, no whitespace), without the
    `digest` and `signature` fields themselves: any edit of any other field changes it."""
    import hashlib

    body = {k: v for k, v in data.items() if k not in ("digest", "signature")}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


def verify_digest(data: Dict[str, Any], path: Path) -> None:
    """Raise BundleError when manifest.json was edited after export (or has no digest)."""
    got = data.get("digest")
    if got is None:
        raise BundleError(
            f"{path}: no 'digest' field; the manifest is not protected (re-export the bundle with this dlsr-deploy)"
        )
    if got != content_digest(data):
        raise BundleError(
            f"{path}: the manifest was modified after export (its content does not match its digest {str(got)[:19]}...)"
        )


def read_manifest(folder: Path, verify: bool = True, trusted_keys=None) -> Manifest:
    """Load and validate a bundle's manifest; with verify, check its digest and every file's
    sha256; with trusted_keys (PEM public keys), require a signature by one of them."""
    folder = Path(folder)
    if folder.is_file() and folder.name == "manifest.json":
        folder = folder.parent
    path = folder / "manifest.json"
    if not folder.exists():
        raise BundleError(f"bundle not found: {folder}")
    if not path.exists():
        raise BundleError(f"{folder}: no manifest.json (is this a bundle written by dlsr-export?)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: corrupt manifest ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise BundleError(f"{path}: missing key(s) {missing}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"{path}: schema version {data['schema_version']}, this dlsr-deploy reads version {SCHEMA_VERSION}; "
            "re-export the bundle or upgrade"
        )
    validate(data, path)
    m = Manifest(folder, data)
    if verify or trusted_keys:
        verify_digest(data, path)
    if trusted_keys:
        from dlsr_deploy.signing import verify_signature

        verify_signature(data, trusted_keys, path)
    if verify:
        verify_files(m)
    return m


def _need(cond: bool, path: Path, what: str, got: Any) -> None:
    if not cond:
        shown = json.dumps(got) if isinstance(got, (str, int, float, list, dict, type(None))) else repr(got)
        raise BundleError(f"{path}: {what}, got {shown[:120]}")


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _obj(data: Dict[str, Any], key: str, path: Path) -> dict:
    v = data[key]
    _need(isinstance(v, dict), path, f"'{key}' must be an object", v)
    return v


def validate(data: Dict[str, Any], path: Path) -> None:
    """Every field a consumer reads, with the type it must have (one clear error each)."""
    _need(isinstance(data["name"], str) and data["name"] != "", path, "'name' must be a non-empty string", data["name"])
    files = _obj(data, "files", path)
    _validate_files(files, path)
    native = _obj(data, "preprocessing", path).get("native_size")
    _need(_is_int(native) and native > 0, path, "'preprocessing.native_size' must be a positive integer", native)
    mode = _obj(data, "precision", path).get("mode")
    _need(
        isinstance(mode, str) and mode in PRECISION_HOW,
        path,
        f"'precision.mode' must be one of {sorted(PRECISION_HOW)}",
        mode,
    )
    names = _validate_scores(_obj(data, "scores", path), _obj(data, "threshold", path), path)
    prof = data.get("batch_profile", DEFAULT_PROFILE)
    ok = isinstance(prof, dict) and all(_is_int(prof.get(k)) and prof[k] >= 1 for k in ("min", "opt", "max"))
    _need(
        ok and prof["min"] <= prof["opt"] <= prof["max"],
        path,
        "'batch_profile' must have integers 1 <= min <= opt <= max",
        prof,
    )
    _validate_graph_io(files, names, native, path)


def _validate_files(files: dict, path: Path) -> None:
    _need(len(files) > 0, path, "'files' must name at least one graph", files)
    for role, f in files.items():
        _need(isinstance(f, dict), path, f"'files.{role}' must be an object", f)
        for key, ok in (
            ("name", lambda v: isinstance(v, str) and v != ""),
            ("sha256", lambda v: isinstance(v, str)),
            ("bytes", _is_int),
        ):
            _need(
                ok(f.get(key)),
                path,
                f"'files.{role}.{key}' must be a {'string' if key != 'bytes' else 'integer'}",
                f.get(key),
            )
        for io in ("inputs", "outputs"):
            specs = f.get(io, [])
            _need(
                isinstance(specs, list) and all(isinstance(x, dict) for x in specs),
                path,
                f"'files.{role}.{io}' must be a list of objects",
                specs,
            )


def _validate_scores(sc: dict, thr: dict, path: Path) -> List[str]:
    names = sc.get("names")
    _need(
        isinstance(names, list) and names and all(isinstance(n, str) for n in names),
        path,
        "'scores.names' must be a non-empty list of strings",
        names,
    )
    head = sc.get("headline")
    _need(isinstance(head, str) and head in names, path, f"'scores.headline' must be one of {names}", head)
    _need(
        thr.get("value") is None or _is_num(thr["value"]),
        path,
        "'threshold.value' must be a number or null",
        thr.get("value"),
    )
    for key in ("center", "scale"):
        _need(key not in thr or _is_num(thr[key]), path, f"'threshold.{key}' must be a number", thr.get(key))
    score = thr.get("score", head)
    _need(isinstance(score, str) and score in names, path, f"'threshold.score' must be one of {names}", score)
    return names


def _validate_graph_io(files: dict, names: List[str], native: int, path: Path) -> None:
    """Scores named by the manifest exist as graph outputs; the image input has the native size."""
    outputs = {o.get("name") for f in files.values() for o in f.get("outputs", [])}
    if outputs:
        missing = [output_name(n) for n in names if output_name(n) not in outputs]
        _need(not missing, path, f"'scores.names' lists scores no graph outputs ({missing})", sorted(map(str, outputs)))
    for role, f in files.items():
        for spec in f.get("inputs", []):
            shape = spec.get("shape")
            if spec.get("name") == "images" and isinstance(shape, list) and len(shape) == 4:
                _need(
                    shape[1:3] == [native] * 2,
                    path,
                    f"'preprocessing.native_size' ({native}) must match the {role} graph's image input",
                    shape,
                )


def verify_files(m: Manifest) -> Dict[str, str]:
    """{file name: 'ok'}; raises BundleError naming every missing or tampered file."""
    problems, ok = [], {}
    for info in list(m.files.values()) + ([m.golden] if m.golden else []):
        p = safe_join(m.path, info["name"])
        if not p.exists():
            problems.append(f"{info['name']} is missing")
            continue
        if p.stat().st_size != info.get("bytes", p.stat().st_size):
            problems.append(
                f"{info['name']} has {p.stat().st_size} bytes, the manifest says {info['bytes']} (truncated or "
                "replaced)"
            )
            continue
        digest = sha256_file(p)
        if digest != info["sha256"]:
            problems.append(
                f"{info['name']} sha256 {digest[:12]}... does not match the manifest's {info['sha256'][:12]}... "
                "(modified)"
            )
            continue
        ok[info["name"]] = "ok"
    if problems:
        raise BundleError(f"{m.path}: " + "; ".join(problems))
    return ok


def describe(m: Manifest) -> str:
    """Readable summary for dlsr-inspect."""
    d = m.data
    lines = [
        f"bundle   {d['name']}  ({m.path})",
        f"created  {d.get('created', '?')} by dlsr-deploy {d.get('producer', {}).get('dlsr_deploy', '?')}",
    ]
    prod = d.get("producer", {})
    lines.append("producer " + ", ".join(f"{k} {v}" for k, v in prod.items()))
    pre = d["preprocessing"]
    lines.append(
        f"input    images uint8 [batch, {pre['native_size']}, {pre['native_size']}, 3] RGB -> resized to "
        f"{pre['input_size']} inside the graph ({pre['backbone']})"
    )
    prec = d["precision"]
    lines.append(
        f"precision {prec['mode']}"
        + (
            f" ({prec.get('how', '')}; FP16 share of compute nodes: "
            + ", ".join(f"{k} {v:.0%}" for k, v in prec.get("fp16_share", {}).items())
            + ")"
            if prec["mode"] == "fp16"
            else ""
        )
    )
    sc = d["scores"]
    lines.append(f"scores   {', '.join(sc['names'])} (headline {sc['headline']}); {sc['direction']}")
    s = d.get("schedule", {})
    if s:
        lines.append(
            f"denoise  t_start {s.get('t_start')}, steps {s.get('steps')}, eta {s.get('eta')}, stored noise seed "
            f"{s.get('noise_seed')} x {s.get('n_noise')}, mode {s.get('mode')}"
        )
    thr = d["threshold"]
    if thr.get("value") is not None:
        lines.append(
            f"threshold {thr['score']} > {thr['value']:.6g} means OOD (TPR {thr['target_tpr']:.0%} on "
            f"{thr['n_images']} ID images; {thr['method']}; backend {thr['backend']})"
        )
    lines.append("files")
    for role, f in m.files.items():
        lines.append(
            f"  {role:<9} {f['name']:<16} {f['bytes'] / 1e6:8.2f} MB  sha256 {f['sha256'][:16]}...  nodes "
            f"{f.get('nodes', '?')}"
        )
        for io in f.get("inputs", []) + f.get("outputs", []):
            lines.append(f"      {io['name']:<12} {io['dtype']:<8} {io['shape']}")
    par = d.get("parity")
    if par:
        lines.append(f"parity   {par.get('summary', '')}")
        if m.relaxed_parity_note:
            lines.append(f"         {m.relaxed_parity_note}")
    return "\n".join(lines)
