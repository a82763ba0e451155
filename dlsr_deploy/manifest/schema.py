"""The manifest's fields beyond their presence: types, ranges, finiteness and cross-references
(stdlib only). A manifest that passes its digest can still be nonsense (a careless edit with the
digest recomputed, a bug in another tool): NaN or infinite thresholds, a threshold that belongs
to another score, `backends` as a string, self-check tolerances out of range, a name that
would climb out of the engine cache. Each failure is one BundleError naming the field.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List

from dlsr_deploy.errors import BundleError

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
TOLERANCE_RANGES = {"rank_corr": (-1.0, 1.0), "auroc_change": (0.0, 1.0), "flip_rate": (0.0, 1.0), "z0_rel": (0.0, 1e6)}


def fail(path: Path, what: str, got: Any) -> None:
    """Raise the one-line error: the file, the field and what it must be, what came."""
    try:
        shown = json.dumps(got, allow_nan=True)
    except (TypeError, ValueError):
        shown = repr(got)
    raise BundleError(f"{path}: {what}, got {shown[:120]}")


def finite(x: Any) -> bool:
    """A JSON number (not a bool) that is neither NaN nor infinite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_name(data: Dict[str, Any], path: Path) -> None:
    """A bundle name is one path component of letters, digits and . _ + - (engine caches use it)."""
    name = data["name"]
    if not (isinstance(name, str) and NAME.match(name) and name not in (".", "..")):
        fail(path, "'name' must be 1-128 letters, digits or . _ + - (no path separators, not starting with '.')", name)


def check_threshold(thr: dict, head: str, names: List[str], path: Path) -> None:
    """value finite or null; center finite; scale finite > 0; the score is the headline; `all`
    holds finite numbers for known scores and agrees with `value` on the threshold's score."""
    if thr.get("score", head) != head:
        fail(path, f"'threshold.score' must be the headline {head!r} (the decision and its threshold are one score)",
             thr.get("score"))  # fmt: skip
    value = thr.get("value")
    if value is not None and not finite(value):
        fail(path, "'threshold.value' must be a finite number or null", value)
    if "center" in thr and not finite(thr["center"]):
        fail(path, "'threshold.center' must be a finite number", thr["center"])
    if "scale" in thr and not (finite(thr["scale"]) and thr["scale"] > 0):
        fail(path, "'threshold.scale' must be a finite number > 0", thr["scale"])
    tpr = thr.get("target_tpr")
    if tpr is not None and not (finite(tpr) and 0 < tpr < 1):
        fail(path, "'threshold.target_tpr' must be a number in (0, 1) or null", tpr)
    all_ = thr.get("all", {})
    if not isinstance(all_, dict):
        fail(path, "'threshold.all' must be an object {score: threshold}", all_)
    for k, v in all_.items():
        if k not in names or not finite(v):
            fail(path, f"'threshold.all' must map scores among {names} to finite numbers", {k: v})
    if value is not None and head in all_ and all_[head] != value:
        fail(path, f"'threshold.value' must equal 'threshold.all.{head}' ({all_[head]})", value)
    q = thr.get("id_quantiles")
    if q is not None and not (
        isinstance(q, list) and len(q) == 101 and all(finite(x) for x in q) and all(a <= b for a, b in zip(q, q[1:]))
    ):
        fail(path, "'threshold.id_quantiles' must be 101 finite, non-decreasing numbers (0, 1, ..., 100 %)", q)


def check_backends(data: Dict[str, Any], path: Path) -> None:
    """`backends`, when present: a non-empty list of registered backend names."""
    if "backends" not in data:
        return
    from dlsr_deploy.registry import backend_names

    b, known = data["backends"], backend_names()
    if not (isinstance(b, list) and b and all(isinstance(x, str) and x in known for x in b)):
        fail(path, f"'backends' must be a non-empty list of names among {known}", b)


def check_self_check(data: Dict[str, Any], path: Path) -> None:
    """`self_check`, when present: tolerances with the four known keys in range, a positive chunk."""
    sc = data.get("self_check")
    if sc is None:
        return
    if not isinstance(sc, dict):
        fail(path, "'self_check' must be an object", sc)
    tol = sc.get("tolerances")
    if tol is not None:
        if not isinstance(tol, dict) or set(tol) != set(TOLERANCE_RANGES):
            fail(path, f"'self_check.tolerances' must name exactly {sorted(TOLERANCE_RANGES)}", tol)
        for k, (lo, hi) in TOLERANCE_RANGES.items():
            if not (finite(tol[k]) and lo <= tol[k] <= hi):
                fail(path, f"'self_check.tolerances.{k}' must be a number in [{lo:g}, {hi:g}]", tol[k])
    chunk = sc.get("chunk")
    if chunk is not None and not (isinstance(chunk, int) and not isinstance(chunk, bool) and 1 <= chunk <= 4096):
        fail(path, "'self_check.chunk' must be an integer in [1, 4096]", chunk)


def check_file_entry(where: str, f: Any, path: Path) -> None:
    """One file entry: a plain file name in the bundle folder, a sha256 of 64 hex digits, a size >= 0."""
    if not isinstance(f, dict):
        fail(path, f"'{where}' must be an object", f)
    name = f.get("name")
    if not (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name):
        fail(path, f"'{where}.name' must be a file name inside the bundle folder (nothing outside the bundle)", name)
    if not (isinstance(f.get("sha256"), str) and SHA256.match(f["sha256"])):
        fail(path, f"'{where}.sha256' must be 64 lowercase hex digits", f.get("sha256"))
    size = f.get("bytes")
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
        fail(path, f"'{where}.bytes' must be an integer >= 0", size)


def check_scores_more(sc: dict, names: List[str], path: Path) -> None:
    """density_heads among the names; combinations with finite centres and positive scales."""
    heads = sc.get("density_heads") or {}
    if not (isinstance(heads, (list, dict)) and all(isinstance(h, str) and h in names for h in heads)):
        fail(path, f"'scores.density_heads' must name scores among {names}", heads)
    combos = sc.get("combinations", [])
    if not isinstance(combos, list) or not all(isinstance(c, dict) for c in combos):
        fail(path, "'scores.combinations' must be a list of objects", combos)
    if len(set(names)) != len(names):
        fail(path, "'scores.names' must not repeat a name", names)


def check_more(data: Dict[str, Any], path: Path, names: List[str]) -> None:
    """Every check above, in the order a reader meets the fields."""
    check_name(data, path)
    check_threshold(data["threshold"], data["scores"]["headline"], names, path)
    check_scores_more(data["scores"], names, path)
    check_backends(data, path)
    check_self_check(data, path)
    if data.get("golden") is not None:
        check_file_entry("golden", data["golden"], path)
    targets = (data.get("precision") or {}).get("verified_targets", [])
    if not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        fail(path, "'precision.verified_targets' must be a list of strings", targets)
    parity = data.get("parity")
    if parity is not None and not (isinstance(parity, dict) and isinstance(parity.get("passed", True), bool)):
        fail(path, "'parity.passed' must be true or false", parity)
