"""A training run's folder: what it holds, when it may be replaced, and resume that proves itself.

- `dlsr-train --out DIR` into a folder that already holds a trained (or interrupted) run is
  refused unless the caller asks to resume it or to replace it (force). force removes only the
  files a run consists of (RUN_FILES, checkpoints/); anything else in the folder stays.
- The run's identity (data content hashes, sources, configuration, hold-out, flip, limit, native
  size, feature engine) is written to run.json when training *starts*, with status "training";
  a resume compares every field with today's request and refuses any difference, naming it, so
  an interrupted run cannot be continued on other data or settings.

`RunRecord` owns the folder: every file name is a constant here, and `RunInfo` (run.json) has one
writer (`RunRecord.write_info`) and one reader (`RunRecord.read_info`), a strict round trip like
`ModelConfig`: an unknown field is refused, naming it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from dlsr_deploy.errors import ConfigError

CONFIG = "config.json"
MODEL = "model.safetensors"  # the EMA weights
FIRST_EPOCH = "model_first_epoch.safetensors"  # the EMA after epoch 1 (for LR)
DENSITY = "density.npz"
RUN_JSON = "run.json"
TRAIN_Z0 = "train_z0.npy"
HOLDOUT_Z0 = "holdout_z0.npy"
TRAIN_LOG = "train_log.csv"
CHECKPOINTS = "checkpoints"
# a run of several feature views (ModelConfig.views): the extra views' z0 side by side, and their heads
VIEWS_TRAIN_Z0 = "views_train_z0.npy"
VIEWS_HOLDOUT_Z0 = "views_holdout_z0.npy"
VIEWS_DENSITY = "views_density.npz"
RUN_FILES = (
    CONFIG, MODEL, FIRST_EPOCH, DENSITY, RUN_JSON, TRAIN_Z0, HOLDOUT_Z0, TRAIN_LOG, VIEWS_TRAIN_Z0,
    VIEWS_HOLDOUT_Z0, VIEWS_DENSITY,
)  # fmt: skip
RUN_DIRS = (CHECKPOINTS,)
# what a resume must find unchanged (the keys of run.json's identity block)
IDENTITY_FIELDS = ("data", "data_sha256", "flip", "limit", "holdout", "native_size", "feature_engine", "config")
# config keys derived from the settings, never part of a run's identity (a run.json written while one of
# them was still recorded resumes: they are dropped from both sides before comparing)
DERIVED_CONFIG_KEYS = ("profile",)


def holds_run(folder: Path) -> bool:
    """Whether the folder holds (part of) a training run."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / n).exists() for n in RUN_FILES + RUN_DIRS)


def prepare(folder: Path, resume: bool, force: bool) -> None:
    """Check (and with force, clear) the run folder before any work."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"out: {folder} is a file; give a folder for the run", param="out")
    if resume and force:
        raise ConfigError("resume and force: choose one (resume continues the run, force replaces it)", param="force")
    if resume:  # nothing there yet: the run starts (so a script can always pass resume)
        return
    if holds_run(folder):
        if not force:
            raise ConfigError(
                f"out: {folder} already holds a trained run; continue it with `resume`, replace it with `force`, or "
                "choose another folder",
                param="out",
            )
        for n in RUN_FILES:
            (folder / n).unlink(missing_ok=True)
        for d in RUN_DIRS:
            shutil.rmtree(folder / d, ignore_errors=True)


def identity(data: List[str], digests: List[str], cfg: dict, **fields) -> Dict:
    """The fields a resume must find unchanged."""
    return {"data": list(data), "data_sha256": list(digests), "config": cfg, **fields}


def check_resume(folder: Path, now: Dict) -> None:
    """Refuse a resume whose data (by content) or settings differ from the run's, naming the fields
    (a folder with no run yet: nothing to compare, the run starts)."""
    if not holds_run(folder):
        return
    path = RunRecord(folder).run_json
    try:
        old = RunRecord(folder).read_info().to_dict()
    except ConfigError:
        raise ConfigError(
            f"resume: {path} is missing or unreadable, so the run's data and settings cannot be checked; start a new "
            "run (force)",
            param="resume",
        ) from None
    if not old.get("identity"):
        raise ConfigError(
            f"resume: {path} was written by an earlier dlsr-deploy that did not record the run's data and settings, "
            "so a resume cannot be checked; start a new run (force)",
            param="resume",
        )
    before = _without_derived(old["identity"])
    now = _without_derived(json.loads(json.dumps(now)))  # as run.json holds it: tuples are lists (mean, ...)
    diff = [k for k in IDENTITY_FIELDS if k in now and before.get(k) != now[k]]
    if "config" in diff:
        changed = _config_diff(before.get("config") or {}, now["config"])
        diff = [d for d in diff if d != "config"] + [f"config.{c}" for c in changed]
    if diff:
        raise ConfigError(
            f"resume: the run in {folder} was started with other {', '.join(diff)} (data are compared by content); "
            "resume with the same data and settings, or start a new run",
            param="resume",
        )


def _without_derived(ident: Dict) -> Dict:
    cfg = {k: v for k, v in (ident.get("config") or {}).items() if k not in DERIVED_CONFIG_KEYS}
    return {**ident, "config": cfg} if "config" in ident else ident


def _config_diff(a: dict, b: dict, prefix: str = "") -> List[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _config_diff(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(prefix + k)
    return out


def write_started(folder: Path, ident: Dict, extra: Optional[Dict] = None) -> None:
    """run.json at the start of training: the identity and status 'training'."""
    RunRecord(folder).write_info(RunInfo(status="training", identity=ident, **(extra or {})))


@dataclass
class RunInfo:
    """run.json: the run's identity and what training did (None where a run has not got there)."""

    status: str
    identity: Optional[dict] = None
    data: Optional[list] = None
    data_sha256: Optional[list] = None
    flip: Optional[bool] = None
    feature_engine: Optional[str] = None
    feature_parity: Optional[list] = None
    feature_seconds: Optional[float] = None
    limit: Optional[int] = None
    skipped_files: Optional[int] = None
    native_size: Optional[int] = None
    native_size_source: Optional[str] = None
    n_images: Optional[int] = None
    n_train: Optional[int] = None
    n_train_vectors: Optional[int] = None
    n_holdout: Optional[int] = None
    holdout_indices: Optional[list] = None
    epochs: Optional[int] = None
    final_loss: Optional[float] = None
    epochs_run: Optional[int] = None
    best_epoch: Optional[int] = None
    heldout_losses: Optional[list] = None
    best_heldout_loss: Optional[float] = None
    model: Optional[str] = None
    train_seconds: Optional[float] = None
    density_heads: Optional[str] = None
    density_seconds: Optional[float] = None
    views: Optional[dict] = None  # a run of several feature views: names, files, seconds
    total_seconds: Optional[float] = None

    def to_dict(self) -> dict:
        """The JSON object run.json holds (every field, None included)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = RUN_JSON) -> "RunInfo":
        """Strict: a JSON object with a status and no field this version does not know."""
        if not isinstance(d, dict) or "status" not in d:
            raise ConfigError(f"{where}: expected a JSON object with a 'status', got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown fields {unknown} (written by another dlsr-deploy version?)")
        return cls(**d)


@dataclass(frozen=True)
class RunRecord:
    """A training run's folder: its files by name, and the one writer and reader of run.json."""

    folder: Path

    def __post_init__(self):
        object.__setattr__(self, "folder", Path(self.folder))

    def __truediv__(self, name: str) -> Path:
        return self.folder / name

    @property
    def run_json(self) -> Path:
        """run.json's path."""
        return self.folder / RUN_JSON

    def has_info(self) -> bool:
        """Whether run.json exists."""
        return self.run_json.exists()

    def read_info(self) -> RunInfo:
        """run.json, strictly (ConfigError naming the file when missing, not JSON or not a run record)."""
        try:
            d = json.loads(self.run_json.read_text())
        except OSError as exc:
            raise ConfigError(f"{self.run_json}: cannot read ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise ConfigError(f"{self.run_json}: not valid JSON ({exc})") from None
        return RunInfo.from_dict(d, str(self.run_json))

    def write_info(self, info: RunInfo) -> None:
        """run.json, written whole (temporary file + rename)."""
        from dlsr_deploy.io import atomic_write_text

        atomic_write_text(self.run_json, json.dumps(info.to_dict(), indent=2) + "\n")
