"""Bundle families: one run exported at several precisions, loaded as the fastest one this machine
was verified for (`dlsr-export --precision fp32,bf16 --out DIR` writes DIR/<precision>/ and
DIR/family.json; `Detector.load(DIR)` picks a member).

The pick, fastest first (CPU numbers on the package default, README): bf16 (OpenVINO, only where
the CPU plugin computes bf16: AMX or avx512_bf16), int8 (only on a CPU architecture its export
verified), fp32, fp16. A bf16 member is never loaded on a CPU without bf16 units: its heads were
fitted on bf16 features, and OpenVINO would otherwise run it in f32 without a word. Members
are plain sub-folders, each a complete bundle verified on its own at load (digest, signature).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Optional, Tuple

from dlsr_deploy.errors import BundleError

FAMILY_FILE = "family.json"
PREFERENCE = ("bf16", "int8", "fp32", "fp16")


def is_family(path) -> bool:
    """A folder holding family.json and no manifest.json of its own."""
    p = Path(path)
    return p.is_dir() and (p / FAMILY_FILE).is_file() and not (p / "manifest.json").exists()


def read_family(path) -> dict:
    """{precision: member folder} of a family, checked: known precisions, plain sub-folder names."""
    p = Path(path)
    try:
        data = json.loads((p / FAMILY_FILE).read_text())
        members = data["members"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{p / FAMILY_FILE}: not a bundle family file ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(members, dict) or not members:
        raise BundleError(f"{p / FAMILY_FILE}: 'members' must map precisions to sub-folders, got {members!r}")
    out = {}
    for prec, name in members.items():
        if prec not in PREFERENCE:
            raise BundleError(f"{p / FAMILY_FILE}: member precision {prec!r} is not one of {list(PREFERENCE)}")
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
            raise BundleError(f"{p / FAMILY_FILE}: member {prec!r} must be a sub-folder name, got {name!r}")
        out[prec] = p / name
    return out


def _why_not(prec: str, member: Path, backend: str) -> Optional[str]:
    """None when this machine and backend may load the member, else why not."""
    if not (member / "manifest.json").is_file():
        return f"{member} holds no manifest.json"
    if prec == "bf16":
        if backend not in ("auto", "openvino"):
            return f"bf16 runs on OpenVINO, not {backend}"
        try:
            from dlsr_deploy.runtime.openvino import cpu_runs_bf16

            if not cpu_runs_bf16():
                return "this CPU has no bf16 units (AMX / avx512_bf16)"
        except Exception as exc:  # openvino missing: the reason names the extra
            return f"OpenVINO is not usable ({exc})"
    if prec == "int8":
        try:
            targets = json.loads((member / "manifest.json").read_text())["precision"].get("verified_targets") or []
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return "its manifest cannot be read"
        arch = platform.machine().lower()
        if not targets:  # fail closed: an 8-bit member that records no verified target is not picked
            return "its manifest records no verified target architecture"
        if not any(arch in str(t) for t in targets):
            return f"verified on {targets}, not {arch}"
    return None


def pick_member(path, backend: str = "auto") -> Tuple[Path, dict]:
    """(the member folder to load, {'chosen', 'skipped': {precision: reason}}) for this machine."""
    members = read_family(path)
    skipped = {}
    for prec in PREFERENCE:
        if prec not in members:
            continue
        why = _why_not(prec, members[prec], backend)
        if why is None:
            return members[prec], {"family": str(path), "chosen": prec, "skipped": skipped}
        skipped[prec] = why
    raise BundleError(
        f"{path}: no member of this bundle family runs here ("
        + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        + ")"
    )


def write_family(folder, members: dict) -> Path:
    """family.json for the members {precision: sub-folder name} (written atomically)."""
    from dlsr_deploy.io import atomic_write_text

    path = Path(folder) / FAMILY_FILE
    body = {
        "family": 1,
        "members": members,
        "pick": "fastest first: " + ", ".join(PREFERENCE) + " (dlsr_deploy/runtime/family.py)",
    }
    atomic_write_text(path, json.dumps(body, indent=2) + "\n")
    read_family(folder)  # what was written reads back
    return path
