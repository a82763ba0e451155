"""dlsr-export --slim: a bundle with only the graphs the headline needs (issue 28, item 7).

An edge box that runs the decision never runs the denoiser when the headline is a density head:
for the package default that graph is 89 MB of the bundle's 129 MB. A slim bundle is made from
the complete, verified one before it is published: the same backbone and heads graphs byte for
byte (their parity was checked on both scoring paths of the full bundle; the manifest keeps that
report), the denoiser and fused pipeline graphs left out, and the manifest's scores, thresholds and
golden set narrowed to what the heads graph outputs. The manifest's `slim` entry says what was
left out, so `Detector` can say why another score is not there.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import List

import numpy as np

from dlsr_deploy.errors import ConfigError
from dlsr_deploy.names import SCORE_PREFIX, output_name, score_of

KEEP = ("backbone", "heads", "decision", "head")


def heads_scores(manifest: dict) -> List[str]:
    """The scores the heads graph outputs (the density heads and their combinations)."""
    outs = manifest["files"].get("heads", {}).get("outputs", [])
    return [score_of(o["name"]) for o in outs if str(o.get("name", "")).startswith(SCORE_PREFIX)]


def combo_name(c: dict) -> str:
    """A combination's score name: how + its components (`sum_maha_ridge_gauss_layer_dn`)."""
    return "_".join([c["how"], *c["components"]])


def _narrow_golden(folder: Path, manifest: dict, keep: List[str]) -> dict:
    """golden.npz without the dropped scores' arrays -> its new manifest entry."""
    import hashlib

    from dlsr_deploy.io import atomic_write_bytes

    entry = dict(manifest["golden"])
    path = folder / entry["name"]
    wanted = {output_name(s) for s in keep}
    with np.load(path, allow_pickle=False) as g:
        arrays = {
            k: g[k] for k in g.files if not k.split("/")[-1].startswith(SCORE_PREFIX) or k.split("/")[-1] in wanted
        }
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    return entry


def slim_bundle(folder: Path, manifest: dict) -> dict:
    """Narrow the complete bundle in `folder` to the backbone and heads graphs -> the new manifest
    content (without digest: write_manifest adds it). ConfigError when the headline needs the denoiser."""
    folder = Path(folder)
    files = manifest["files"]
    keep = heads_scores(manifest)
    head = manifest["scores"]["headline"]
    if "heads" not in files or head not in keep:
        raise ConfigError(
            f"slim: the headline {head!r} needs the denoiser graph; a slim bundle ships the backbone and the density "
            f"heads only (choose a headline among {keep or 'the density heads'}, or export without --slim)",
            param="slim",
        )
    dropped = [r for r in files if r not in KEEP]
    m = copy.deepcopy(manifest)
    m["files"] = {r: files[r] for r in KEEP if r in files}
    sc = m["scores"]
    sc["names"] = [n for n in sc["names"] if n in keep]
    sc["combinations"] = [c for c in sc.get("combinations", []) if combo_name(c) in keep]
    if isinstance(sc.get("definitions"), dict):
        sc["definitions"] = {k: v for k, v in sc["definitions"].items() if k in keep}
    m["threshold"]["all"] = {k: v for k, v in m["threshold"].get("all", {}).items() if k in keep}
    if m.get("golden"):
        m["golden"] = _narrow_golden(folder, m, sc["names"])
    m["slim"] = {
        "dropped": [files[r]["name"] for r in dropped],
        "dropped_bytes": int(sum(files[r]["bytes"] for r in dropped)),
        "scores": list(sc["names"]),
        "why": "dlsr-export --slim: only the graphs the headline needs; the dropped graphs were verified with the "
        "others before they were left out (see parity)",
    }
    for r in dropped:
        (folder / files[r]["name"]).unlink()
    return m
