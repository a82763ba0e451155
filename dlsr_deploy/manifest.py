"""The bundle contract: read, validate and write manifest.json (stdlib + numpy only).

A bundle is a folder with manifest.json and the ONNX files it lists. Loading verifies
every file's sha256 and refuses file names that leave the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from dlsr_deploy.errors import BundleError
from dlsr_deploy.io import atomic_write_text, sha256_file

SCHEMA_VERSION = 1
REQUIRED = ("schema_version", "name", "files", "preprocessing", "precision", "scores", "threshold", "config")


@dataclass
class Manifest:
    path: Path  # the bundle folder
    data: Dict[str, Any]

    @property
    def files(self) -> Dict[str, dict]:
        return self.data["files"]

    def file(self, role: str) -> Path:
        if role not in self.files:
            raise BundleError(f"{self.path}: the bundle has no '{role}' graph (has {sorted(self.files)})")
        return safe_join(self.path, self.files[role]["name"])

    @property
    def input_size(self) -> int:
        return int(self.data["preprocessing"]["native_size"])

    @property
    def score_names(self) -> List[str]:
        return list(self.data["scores"]["names"])

    @property
    def headline(self) -> str:
        return self.data["scores"]["headline"]

    @property
    def precision(self) -> str:
        return self.data["precision"]["mode"]

    @property
    def threshold(self) -> dict:
        return self.data["threshold"]


def safe_join(folder: Path, name: str) -> Path:
    p = (Path(folder) / name).resolve()
    root = Path(folder).resolve()
    if root not in p.parents:
        raise BundleError(f"manifest names a file outside the bundle folder: {name!r}")
    return p


def write_manifest(folder: Path, data: Dict[str, Any]) -> Path:
    data = dict(data)
    data.setdefault("schema_version", SCHEMA_VERSION)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise BundleError(f"manifest is missing required key(s) {missing}")
    path = Path(folder) / "manifest.json"
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(folder: Path, verify: bool = True) -> Manifest:
    """Load and validate a bundle's manifest; with verify, check every file's sha256."""
    folder = Path(folder)
    if folder.is_file() and folder.name == "manifest.json":
        folder = folder.parent
    path = folder / "manifest.json"
    if not folder.exists():
        raise BundleError(f"bundle not found: {folder}")
    if not path.exists():
        raise BundleError(f"{folder}: no manifest.json (is this a bundle written by dlsr-export?)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: corrupt manifest ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise BundleError(f"{path}: missing key(s) {missing}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema version {data['schema_version']}, this dlsr-deploy reads version {SCHEMA_VERSION}; re-export the bundle or upgrade")
    m = Manifest(folder, data)
    if verify:
        verify_files(m)
    return m


def verify_files(m: Manifest) -> Dict[str, str]:
    """{file name: 'ok'}; raises BundleError naming every missing or tampered file."""
    problems, ok = [], {}
    for role, info in m.files.items():
        p = safe_join(m.path, info["name"])
        if not p.exists():
            problems.append(f"{info['name']} is missing")
            continue
        if p.stat().st_size != info.get("bytes", p.stat().st_size):
            problems.append(f"{info['name']} has {p.stat().st_size} bytes, the manifest says {info['bytes']} (truncated or replaced)")
            continue
        digest = sha256_file(p)
        if digest != info["sha256"]:
            problems.append(f"{info['name']} sha256 {digest[:12]}... does not match the manifest's {info['sha256'][:12]}... (modified)")
            continue
        ok[info["name"]] = "ok"
    if problems:
        raise BundleError(f"{m.path}: " + "; ".join(problems))
    return ok


def describe(m: Manifest) -> str:
    """Readable summary for dlsr-inspect."""
    d = m.data
    lines = [f"bundle   {d['name']}  ({m.path})", f"created  {d.get('created', '?')} by dlsr-deploy {d.get('producer', {}).get('dlsr_deploy', '?')}"]
    prod = d.get("producer", {})
    lines.append("producer " + ", ".join(f"{k} {v}" for k, v in prod.items()))
    pre = d["preprocessing"]
    lines.append(f"input    images uint8 [batch, {pre['native_size']}, {pre['native_size']}, 3] RGB -> resized to {pre['input_size']} inside the graph ({pre['backbone']})")
    prec = d["precision"]
    lines.append(f"precision {prec['mode']}" + (f" ({prec.get('how', '')}; FP16 share of compute nodes: " + ", ".join(f"{k} {v:.0%}" for k, v in prec.get("fp16_share", {}).items()) + ")" if prec["mode"] == "fp16" else ""))
    sc = d["scores"]
    lines.append(f"scores   {', '.join(sc['names'])} (headline {sc['headline']}); {sc['direction']}")
    s = d.get("schedule", {})
    if s:
        lines.append(f"denoise  t_start {s.get('t_start')}, steps {s.get('steps')}, eta {s.get('eta')}, stored noise seed {s.get('noise_seed')} x {s.get('n_noise')}, mode {s.get('mode')}")
    thr = d["threshold"]
    if thr.get("value") is not None:
        lines.append(f"threshold {thr['score']} > {thr['value']:.6g} means OOD (TPR {thr['target_tpr']:.0%} on {thr['n_images']} ID images; {thr['method']}; backend {thr['backend']})")
    lines.append("files")
    for role, f in m.files.items():
        lines.append(f"  {role:<9} {f['name']:<16} {f['bytes'] / 1e6:8.2f} MB  sha256 {f['sha256'][:16]}...  nodes {f.get('nodes', '?')}")
        for io in f.get("inputs", []) + f.get("outputs", []):
            lines.append(f"      {io['name']:<12} {io['dtype']:<8} {io['shape']}")
    par = d.get("parity")
    if par:
        lines.append(f"parity   {par.get('summary', '')}")
    return "\n".join(lines)
