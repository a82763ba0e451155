"""A training run's folder: what it holds, when it may be replaced, and resume that proves itself.

- `dlsr-train --out DIR` into a folder that already holds a trained (or interrupted) run is
  refused unless the caller asks to resume it or to replace it (force). force removes only the
  files a run consists of (RUN_FILES, checkpoints/); anything else in the folder stays.
- The run's identity (data content hashes, sources, configuration, hold-out, flip, limit, native
  size, feature engine) is written to run.json when training *starts*, with status "training";
  a resume compares every field with today's request and refuses any difference, naming it, so
  an interrupted run cannot be continued on other data or settings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional

from dlsr_deploy.errors import ConfigError

RUN_FILES = (
    "config.json",
    "model.safetensors",
    "model_first_epoch.safetensors",
    "density.npz",
    "run.json",
    "train_z0.npy",
    "holdout_z0.npy",
    "train_log.csv",
)
RUN_DIRS = ("checkpoints",)
# what a resume must find unchanged (the keys of run.json's identity block)
IDENTITY_FIELDS = ("data", "data_sha256", "flip", "limit", "holdout", "native_size", "feature_engine", "config")


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
    path = Path(folder) / "run.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ConfigError(
            f"resume: {path} is missing or unreadable, so the run's data and settings cannot be checked; start a new "
            "run (force)",
            param="resume",
        ) from None
    if "identity" not in old:
        raise ConfigError(
            f"resume: {path} was written by an earlier dlsr-deploy that did not record the run's data and settings, "
            "so a resume cannot be checked; start a new run (force)",
            param="resume",
        )
    before = old["identity"]
    now = json.loads(json.dumps(now))  # as run.json holds it: tuples are lists there (mean, std, ...)
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
    from dlsr_deploy.io import atomic_write_text

    body = {"status": "training", "identity": ident, **(extra or {})}
    atomic_write_text(Path(folder) / "run.json", json.dumps(body, indent=2) + "\n")
