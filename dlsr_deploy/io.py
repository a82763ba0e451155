"""Small file helpers: atomic writes and hashing (stdlib only)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Call writer(tmp_path) and rename tmp_path onto path; nothing half-written remains."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp_path, 0o666 & ~mask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def cache_root() -> Path:
    """Where dlsr-deploy keeps its caches: $DLSR_CACHE when set, else ~/.cache/dlsr-deploy. Under
    it: features/ (training), selfcheck/ and backend-choice/ (verdicts), openvino/ (compiled models)."""
    env = os.environ.get("DLSR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dlsr-deploy"
