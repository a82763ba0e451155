"""What `dlsr-export` can be asked (`ExportRequest`), and the checks that run before any work.

Every option is validated here, before the first expensive step (loading the model, reading
images, tracing graphs): a bad headline, TPR, verify count, tolerance, key or output folder
is an error in well under a second, naming the parameter the caller passed (the CLI shows
the flag instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from dlsr_deploy.config import ScoreConfig
from dlsr_deploy.errors import BundleError, ConfigError
from dlsr_deploy.run_folder import CONFIG, DENSITY, TRAIN_Z0
from dlsr_deploy.scoring import BUNDLE_HEADS, bundle_score_names, combination_names, dlsr_score_names

INT8_SCHEMES = ("dynamic", "weight-only", "openvino")


@dataclass(frozen=True)
class ExportRequest:
    """Everything `dlsr-export` can be asked (keyword arguments of export_bundle)."""

    fp16: bool = False
    int8: bool = False
    score_cfg: ScoreConfig = ScoreConfig()
    fused: bool = False
    with_lr: bool = False
    calibrate_on: Optional[str] = None
    target_tpr: float = 0.95
    verify: bool = True
    verify_ood: Sequence[str] = ()
    n_verify: int = 256
    tolerances: Optional[object] = None
    batch_profile: Tuple[int, int, int] = (1, 32, 256)
    headline: Optional[str] = None
    density: Sequence[str] = BUNDLE_HEADS  # density heads in the bundle; () = DLSR scores only
    force: bool = False
    keep_failed: bool = False  # a bundle that fails parity stays at out (else it goes to out.failed)
    sign: Optional[object] = None  # Ed25519 private key (PEM path or bytes) that signs the manifest
    int8_backbone_from: Optional[int] = None  # int8: static INT8 backbone blocks >= this; None = FP32 backbone
    int8_scheme: str = "dynamic"  # int8 denoiser: "dynamic", "weight-only" or "openvino"
    probes: bool = True  # headline "auto": synthetic shift probes from the calibration images count too
    slim: bool = False  # ship only the backbone and heads graphs (export/slim.py)
    bf16: bool = False  # backbone bf16 on OpenVINO, heads fitted on its features (export/lowprec.py)
    guarded: bool = False  # int8: the backbone's heads refitted and the accuracy guard decides (export/lowprec.py)

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "int8" if self.int8 else "bf16" if self.bf16 else "fp32"


def planned_score_names(run_dir: Path, req: ExportRequest) -> List[str]:
    """The scores the bundle will have, from the run's files alone (no model is loaded)."""
    import numpy as np

    heads = list(req.density)
    if heads:
        dens = run_dir / DENSITY
        if dens.exists():
            with np.load(dens, allow_pickle=False) as d:
                have = sorted({k.rsplit(".", 1)[0] for k in d.files})
            missing = [h for h in heads if h not in have]
            if missing and (run_dir / TRAIN_Z0).exists():
                missing = []  # refitted from the training z0 on first use
            if missing:
                raise ConfigError(f"density: {run_dir} has no density head(s) {missing} (has {have})", param="density")
    dlsr = dlsr_score_names(req.with_lr)
    combos = combination_names(dlsr + heads) if heads else []
    cfg = _views_config(run_dir)
    if cfg is None or not cfg.views:
        return bundle_score_names(req.with_lr, heads, combos)
    from dlsr_deploy.views import ENSEMBLE, view_scores

    if heads and cfg.views[0].head not in heads:
        raise ConfigError(
            f"density: the views' ensemble combines {cfg.views[0].head!r} of every view; keep it among {heads}",
            param="density",
        )
    if not heads:
        raise ConfigError(
            "density: a run of several views scores them by their density heads; keep them", param="density"
        )
    return bundle_score_names(req.with_lr, heads + view_scores(cfg), combos + [ENSEMBLE])


def _views_config(run_dir: Path):
    from dlsr_deploy.config import ModelConfig

    try:
        return ModelConfig.load(run_dir / CONFIG)
    except ConfigError as exc:
        raise ConfigError(f"model_dir: {exc}", param="model_dir") from None


def check_views_precision(req: ExportRequest, run_dir: Path) -> None:
    """Low-precision backbones refit the heads on their own features, which runs of several views
    do not support yet: refused by name before any work."""
    cfg = _views_config(run_dir)
    if cfg.views and (req.bf16 or req.int8_backbone_from is not None):
        raise ConfigError(
            f"precision: {req.precision} with a low-precision backbone is not supported for a run of several views "
            "yet (its heads would need refitting per view); export fp32 or fp16, or int8 with an FP32 backbone",
            param="precision",
        )


def _check_out(out: Path, run_dir: Path, force: bool) -> None:
    from dlsr_deploy.export.publish import owned_bundle_files

    o, r = out.resolve(), run_dir.resolve()
    if o == r or o in r.parents:
        raise BundleError(
            f"out: {out} is the model folder {run_dir} or one of its parents; choose another bundle folder", param="out"
        )
    if r in o.parents:
        raise BundleError(f"out: {out} is inside the model folder {run_dir}; choose a folder outside it", param="out")
    if out.exists() and not out.is_dir():
        raise BundleError(f"out: {out} is a file; give a folder for the bundle", param="out")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise BundleError(f"out: {out} already exists; pass force=True to replace the bundle in it", param="out")
        if owned_bundle_files(out) is None:
            raise BundleError(
                f"out: {out} is not a bundle written by dlsr-export (no manifest.json whose digest and file list "
                "check out), so force will not touch it; choose another folder",
                param="out",
            )


def _check_slim(req: ExportRequest, names: List[str]) -> None:
    """--slim needs a headline the heads graph computes: density heads in the bundle, and no DLSR
    score (mfsim, mse, lr_*) in a headline named explicitly."""
    if not req.slim:
        return
    if not req.density:
        raise ConfigError("slim: a slim bundle keeps the density heads only; drop no_density", param="slim")
    head = req.headline
    if head not in (None, "auto") and any(t in ("mfsim", "mse", "lr") for t in head.split("_")):
        raise ConfigError(f"slim: the headline {head!r} needs the denoiser graph; choose a density head", param="slim")


def _check_space(out: Path, run_dir: Path) -> None:
    """Refuse before any work when out's disk cannot hold the bundle: about twice the run's weights
    (graphs with their weights inside, the golden set) plus the backbone, and room for the old bundle."""
    import shutil

    weights = sum(p.stat().st_size for p in Path(run_dir).glob("*.safetensors"))
    need = 3 * weights + (64 << 20)
    folder = next((p for p in [Path(out), *Path(out).resolve().parents] if p.exists()), Path("."))
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ConfigError(
            f"out: {folder} has {free >> 20} MB free; the bundle needs about {need >> 20} MB (run weights "
            f"{weights >> 20} MB); free some space or choose another --out",
            param="out",
        )


def _check_numbers(req: ExportRequest) -> None:
    if not 0.0 < float(req.target_tpr) < 1.0:
        raise ConfigError(f"target_tpr: expected a value in (0, 1), got {req.target_tpr}", param="target_tpr")
    if (req.verify or req.headline == "auto") and (isinstance(req.n_verify, bool) or int(req.n_verify) < 1):
        raise ConfigError(
            f"n_verify: expected a positive number of images per set, got {req.n_verify}", param="n_verify"
        )
    lo, opt, hi = req.batch_profile
    if not 1 <= lo <= opt <= hi:
        raise ConfigError(f"max_batch: expected 1 <= min <= opt <= max, got {req.batch_profile}", param="max_batch")
    tol = req.tolerances
    if tol is not None:
        for name in ("rank_corr", "flip_rate"):
            v = getattr(tol, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name}: expected a value in [0, 1], got {v}", param=name)
        for name in ("auroc_change", "z0_rel"):
            if getattr(tol, name) < 0:
                raise ConfigError(f"{name}: expected a value >= 0, got {getattr(tol, name)}", param=name)


def _check_precision(req: ExportRequest) -> None:
    if sum((bool(req.fp16), bool(req.int8), bool(req.bf16))) > 1:
        raise ConfigError("precision: choose one of fp32, fp16, bf16, int8", param="precision")
    if req.guarded and not req.int8:
        raise ConfigError(
            "guarded: the accuracy-guarded backbone is for int8 (bf16 is always guarded)", param="precision"
        )
    if req.bf16 or req.guarded:
        from dlsr_deploy.export.lowprec import check_lowp_request

        check_lowp_request(req)
    if req.fp16 and req.int8:
        raise ConfigError("fp16 and int8: choose one", param="int8")
    if req.int8_scheme not in INT8_SCHEMES:
        raise ConfigError(
            f"int8_scheme: expected one of {list(INT8_SCHEMES)}, got {req.int8_scheme!r}", param="int8_scheme"
        )
    if not req.int8 and (req.int8_backbone_from is not None or req.int8_scheme != "dynamic"):
        raise ConfigError("int8_backbone_from and int8_scheme need int8", param="int8_scheme")
    if req.int8 and req.int8_scheme == "openvino":
        if req.fused:
            raise ConfigError("int8_scheme 'openvino' makes separate graphs for OpenVINO; drop fused", param="fused")
        from dlsr_deploy.runtime.backend import import_optional

        import_optional("nncf", "int8")  # fail now, not after the graphs are exported
        import_optional("openvino", "int8")


def _check_sources(req: ExportRequest) -> None:
    from dlsr_deploy.inputs import check_source

    for src in req.verify_ood:
        check_source(src, "verify_ood")
    if req.calibrate_on:
        check_source(req.calibrate_on, "calibrate_on")


def check_request(req: ExportRequest, out: Path, run_dir: Path) -> List[str]:
    """Every check that needs no model: raises with the parameter's name, else the planned score names."""
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / CONFIG).is_file():
        raise ConfigError(
            f"model_dir: {run_dir} is not a run folder written by dlsr-train (no config.json)", param="model_dir"
        )
    _check_out(out, run_dir, req.force)
    _check_space(out, run_dir)
    _check_precision(req)
    _check_numbers(req)
    _check_sources(req)
    check_views_precision(req, run_dir)
    names = planned_score_names(run_dir, req)
    if req.headline == "auto" and not req.verify_ood:
        raise ConfigError("headline: 'auto' needs known-OOD images; give verify_ood", param="headline")
    if req.headline not in (None, "auto") and req.headline not in names:
        raise ConfigError(f"headline: expected one of {names} or 'auto', got {req.headline!r}", param="headline")
    _check_slim(req, names)
    if req.sign is not None:  # an unreadable or wrong key fails now, not after the export
        from dlsr_deploy.signing import sign_manifest

        sign_manifest({"digest": "sha256:check"}, req.sign)
    from dlsr_deploy.run_folder import RunRecord

    if RunRecord(run_dir).has_info():
        try:
            RunRecord(run_dir).read_info()
        except ConfigError as exc:
            raise ConfigError(f"model_dir: {exc}", param="model_dir") from None
    return names
