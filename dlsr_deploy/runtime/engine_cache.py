"""Where TensorRT plans live and when they may be reused (no TensorRT import here).

engines/<bundle>/<gpu>-sm<cc>-trt<version>/<graph>.plan + <graph>.build.json, and
engines/<bundle>/timing.cache. A plan is reused only when its build.json matches on
TensorRT version, GPU name, compute capability, optimisation profile, precision and the
sha256 of the source ONNX, and the plan's own sha256 is intact. Plan
bytes are never modified: metadata lives beside the plan, never inside it."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Tuple

from dlsr_deploy.io import atomic_write_bytes, atomic_write_text, sha256_file


@dataclass(frozen=True)
class BuildKey:
    """Everything a TensorRT plan depends on; a plan is reused only when all of it matches."""

    tensorrt: str
    gpu: str
    compute_capability: str
    profile: Tuple[int, int, int]
    onnx_sha256: str
    precision: str

    def folder_name(self) -> str:
        """The cache folder of this key: <gpu>-sm<cc>-trt<version>."""
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu).strip("-").lower()
        return f"{gpu}-sm{self.compute_capability.replace('.', '')}-trt{self.tensorrt}"


class EngineCache:
    """Plans and build.json per bundle, GPU and TensorRT version under an engines/ root."""

    def __init__(self, root: Path, bundle_name: str):
        self.root = Path(root) / bundle_name

    def folder(self, key: BuildKey) -> Path:
        """The folder that holds the plans for `key`."""
        return self.root / key.folder_name()

    def paths(self, key: BuildKey, graph: str) -> Tuple[Path, Path]:
        """(plan path, build.json path) of a graph."""
        f = self.folder(key)
        return f / f"{graph}.plan", f / f"{graph}.build.json"

    def lookup(self, key: BuildKey, graph: str) -> Tuple[Optional[Path], str]:
        """(plan path or None, reason). None means: build (again)."""
        plan, meta = self.paths(key, graph)
        if not plan.exists() or not meta.exists():
            # a plan for another TensorRT version / GPU may exist beside: say which
            others = sorted(p.parent.name for p in self.root.glob(f"*/{graph}.plan"))
            return None, "no plan for this TensorRT version and GPU" + (
                f" (found plans for: {', '.join(others)})" if others else ""
            )
        try:
            recorded = json.loads(meta.read_text())
        except json.JSONDecodeError:
            return None, f"{meta.name} is corrupt"
        want = asdict(key)
        want["profile"] = list(key.profile)
        for field, value in want.items():
            if recorded.get(field) != value:
                return None, f"{field} differs: plan built for {recorded.get(field)!r}, now {value!r}"
        if sha256_file(plan) != recorded.get("plan_sha256"):
            return None, f"{plan.name} does not match its recorded sha256 (corrupt or modified)"
        return plan, "cached plan matches (TensorRT version, GPU, profile, ONNX sha256)"

    def store(self, key: BuildKey, graph: str, plan_bytes: bytes, extra: Optional[dict] = None) -> Path:
        """Write a plan and its build.json atomically; returns the plan path."""
        plan, meta = self.paths(key, graph)
        atomic_write_bytes(plan, plan_bytes)
        info = asdict(key)
        info["profile"] = list(key.profile)
        info["plan_sha256"] = sha256_file(plan)
        info.update(extra or {})
        atomic_write_text(meta, json.dumps(info, indent=2) + "\n")
        return plan
