"""No command writes over anything it reads (stdlib only).

An output path is compared, after resolving symlinks and `..`, with every file the command reads:
each input (globs expanded, folders by containment), every file of every bundle it loads (the
whole bundle folder is off limits) and every key it was given. A match is refused before any work
with one line naming the flag, so `--out vic/id5.png` on a glob that lists it, `--out
BUNDLE/manifest.json` or `--out keys/fleet.pub` never destroy what the command was given.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterable, Optional

from dlsr_deploy.errors import DataError

GLOB_CHARS = set("*?[")


def _expand(src: str) -> Iterable[Path]:
    """The paths an input names: a glob's matches, a pack's file (`pack.npz#3` -> pack.npz), else itself."""
    s = str(src)
    if "#" in s and not Path(s).exists():
        s = s.split("#", 1)[0]
    if GLOB_CHARS & set(s) and not Path(s).exists():
        return [Path(p) for p in glob.glob(s, recursive=True)]
    return [Path(s)]


def refuse_overwrite(
    out, param: str, inputs: Iterable = (), bundles: Iterable = (), keys: Iterable = (), suffixes=None
) -> Optional[Path]:
    """Raise DataError (naming `param`) when `out` resolves to something the command reads; else
    the resolved output path. suffixes: inside an input folder, outputs with these suffixes are
    refused too (they would be read as inputs next time, or are inputs now)."""
    if out is None or str(out) == "-":
        return None
    target = Path(out).resolve()
    for b in bundles:
        root = Path(b).resolve()
        if root.is_file():  # a manifest.json given as the bundle
            root = root.parent
        if target == root or root in target.parents:
            raise DataError(f"{param}: {out} is inside the bundle {b} this command reads; choose a path outside it",
                            param=param)  # fmt: skip
    for k in keys:
        if not isinstance(k, bytes) and Path(k).resolve() == target:
            raise DataError(f"{param}: {out} is the key {k} this command was given; choose another file", param=param)
    for src in inputs:
        for p in _expand(src):
            p = p.resolve()
            inside = p.is_dir() and p in target.parents and (suffixes is None or target.suffix.lower() in suffixes)
            if target == p or inside:
                raise DataError(f"{param}: {out} is one of the inputs ({src}); choose another file", param=param)
    return target
