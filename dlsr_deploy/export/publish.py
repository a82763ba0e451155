"""Putting a finished bundle in place without destroying anything that is not ours.

A bundle is built in a hidden `.NAME.partial` folder beside `out` and moved in when complete:

- `out` does not exist (or is empty): the folder is renamed onto it.
- `out` holds a bundle this toolkit wrote (`owned_bundle_files`: its manifest.json parses, its
  digest matches its content, and it lists its files): with force, a user's own files kept in
  that folder move into the new one first, then the two folders are swapped in one atomic
  `renameat2(RENAME_EXCHANGE)` (Linux), and the old bundle's files are removed. At every instant
  `out` is the complete old bundle or the complete new one, so a concurrent `Detector.load`
  (which reads through one handle on the folder) never mixes them. Where the exchange is not
  supported, the old folder is renamed aside and the new one renamed in (a load in between
  finds no bundle and says so; it never sees a mix).
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


RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # glibc < 2.28
        return False
    at_fdcwd = -100
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def _move_foreign(old: Path, new: Path) -> None:
    """A user's own files in the old bundle folder move into the new one (they stay at `out`)."""
    owned = set(owned_bundle_files(old) or [])
    for p in sorted(old.iterdir()):
        if p.name not in owned and not (new / p.name).exists():
            os.replace(p, new / p.name)


def publish(tmp: Path, out: Path) -> None:
    """Move the finished bundle in `tmp` to `out` (see the module docstring); `tmp` is removed."""
    tmp, out = Path(tmp), Path(out)
    if out.is_symlink():  # a `current -> v1` link: the bundle goes where it points, the link stays
        out = out.resolve()
    if not out.exists():
        tmp.rename(out)
        return
    if any(out.iterdir()) and owned_bundle_files(out) is None:
        raise FileExistsError(f"{out} changed during the export and is no longer a bundle of ours")
    _move_foreign(out, tmp)
    if exchange(tmp, out):  # out is the new bundle, tmp the old one, in one step
        shutil.rmtree(tmp, ignore_errors=True)
        return
    aside = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(aside)
    tmp.rename(out)
    shutil.rmtree(aside, ignore_errors=True)


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
