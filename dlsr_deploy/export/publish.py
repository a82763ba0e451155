"""Putting a finished bundle in place without destroying anything that is not ours.

A bundle is built in a hidden `.NAME.partial` folder beside `out` and moved in when complete:

- `out` does not exist (or is empty): the folder is renamed onto it.
- `out` holds a bundle this toolkit wrote (`owned_bundle_files`: its manifest.json parses, its
  digest matches its content, and it lists its files): with force, only the files that bundle
  lists are removed (manifest.json first, so a crash never leaves an old manifest over new
  graphs), then the new files move in (manifest.json last). A user's own files kept in that
  folder stay where they are.
- anything else is refused before the export starts (`request._check_out`).

A bundle that failed its parity check is never left at `out`: it goes to `out.failed`
(`set_aside_failed`, same ownership rules) unless the caller asked to keep it (keep_failed).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import List, Optional


def owned_bundle_files(folder: Path) -> Optional[List[str]]:
    """Names of the files of a bundle this toolkit wrote in `folder` (manifest.json first), or None
    when `folder` holds no such bundle."""
    from dlsr_deploy.manifest import content_digest

    path = Path(folder) / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("digest") != content_digest(data):
        return None
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        return None
    entries = list(files.values()) + ([data["golden"]] if isinstance(data.get("golden"), dict) else [])
    names = []
    for e in entries:
        name = e.get("name") if isinstance(e, dict) else None
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
            return None  # a manifest naming files outside its folder is not one of ours
        names.append(name)
    return ["manifest.json", *names]


def _remove_owned(folder: Path) -> None:
    for name in owned_bundle_files(folder) or []:
        p = folder / name
        if p.is_file() or p.is_symlink():
            p.unlink()


def publish(tmp: Path, out: Path) -> None:
    """Move the finished bundle in `tmp` to `out` (see the module docstring); `tmp` is removed."""
    tmp, out = Path(tmp), Path(out)
    if not out.exists():
        tmp.rename(out)
        return
    if any(out.iterdir()) and owned_bundle_files(out) is None:
        raise FileExistsError(f"{out} changed during the export and is no longer a bundle of ours")
    _remove_owned(out)
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != "manifest.json"] + ["manifest.json"]:
        os.replace(tmp / name, out / name)
    shutil.rmtree(tmp, ignore_errors=True)


def failed_path(out: Path) -> Path:
    """Where a bundle that failed parity is kept: `out.failed` beside `out`."""
    return Path(out).with_name(Path(out).name + ".failed")


def set_aside_failed(tmp: Path, out: Path) -> Path:
    """Move a failed bundle to out.failed (replacing an earlier failed bundle of ours only) -> its path."""
    dest = failed_path(out)
    if dest.exists() and any(dest.iterdir()) and owned_bundle_files(dest) is None:
        dest = dest.with_name(dest.name + f"-{os.getpid()}")
    publish(tmp, dest)
    return dest
