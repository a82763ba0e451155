"""A bundle opened once: its folder and every file it lists held open, bytes hashed as read (stdlib only).

Why: a `Detector` is verified at load, but its graphs may be compiled later (the denoiser on the
first call that needs it). Opening them again by path would run whatever sits at that path by
then: a file replaced after load, a re-export with `--force`, or the other colour of a blue/green
`current` symlink. So a bundle is read through one handle on its folder (`dir_fd`, taken once,
after any symlink was followed) and every file it lists is opened at load through that handle;
later reads use the open descriptors, which keep the inode they were opened on even when the
folder is swapped or the file renamed over. Every read for execution re-hashes the bytes it
returns against the manifest, so an in-place edit of a held file is refused, never run.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Dict, Optional

from dlsr_deploy.errors import BundleError

_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CHUNK = 1 << 20


def _errno_text(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


class BundleSnapshot:
    """One bundle folder, held open: `read_manifest()`, `hold(names)`, `read(name, sha256, nbytes)`,
    `sha256(name)`, `close()`. Thread-safe (reads use pread at explicit offsets)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fds: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._dir: Optional[int] = None
        if _DIR_FD:
            try:
                self._dir = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                raise BundleError(f"bundle not found: {self.folder}") from None
            except NotADirectoryError:
                raise BundleError(f"{self.folder}: not a bundle folder (expected what dlsr-export wrote)") from None
            except OSError as exc:
                raise BundleError(f"{self.folder}: cannot open the bundle folder ({_errno_text(exc)})") from None
        elif not self.folder.is_dir():
            raise BundleError(f"bundle not found: {self.folder}")

    def _open(self, name: str) -> int:
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise BundleError(f"{self.folder}: the manifest names a file outside the bundle folder: {name!r}")
        try:
            if self._dir is not None:
                return os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=self._dir)
            return os.open(self.folder / name, os.O_RDONLY | _NOFOLLOW)
        except FileNotFoundError:
            raise BundleError(f"{self.folder}: {name} is missing") from None
        except OSError as exc:  # ELOOP: a symlink where a bundle file should be
            raise BundleError(f"{self.folder}: cannot open {name} ({_errno_text(exc)})") from None

    def replaced(self) -> bool:
        """Whether the path now names another folder than the one held (a re-export or a switched
        link since this snapshot was taken): a read that found files missing then starts again."""
        if self._dir is None:
            return False
        try:
            now, held = os.stat(self.folder), os.fstat(self._dir)
        except OSError:
            return True
        return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino) or held.st_nlink == 0

    def read_manifest(self) -> bytes:
        """manifest.json's bytes, read through the folder handle."""
        try:
            fd = self._open("manifest.json")
        except BundleError:
            raise BundleError(f"{self.folder}: no manifest.json (is this a bundle written by dlsr-export?)") from None
        try:
            return _read_all(fd)
        finally:
            os.close(fd)

    def hold(self, name: str) -> None:
        """Open `name` now and keep it open (later reads see this file, whatever the folder becomes)."""
        with self._lock:
            if self._fds is None:
                raise BundleError(f"{self.folder}: the bundle was closed")
            if name not in self._fds:
                self._fds[name] = self._open(name)

    def _fd(self, name: str) -> int:
        if self._fds is None:
            raise BundleError(f"{self.folder}: the bundle was closed (Detector.close())")
        if name not in self._fds:
            self.hold(name)
        return self._fds[name]

    def sha256(self, name: str) -> tuple:
        """(hex sha256, size in bytes) of a held file, streamed (no copy in memory)."""
        fd, h, off = self._fd(name), hashlib.sha256(), 0
        while True:
            block = os.pread(fd, _CHUNK, off)
            if not block:
                return h.hexdigest(), off
            h.update(block)
            off += len(block)

    def read(self, name: str, sha256: str, nbytes: Optional[int] = None) -> bytes:
        """The whole held file, checked against the manifest's sha256 as read (BundleError otherwise)."""
        data = _read_all(self._fd(name))
        if nbytes is not None and len(data) != nbytes:
            raise BundleError(
                f"{self.folder}: {name} has {len(data)} bytes, the manifest says {nbytes} (changed after the bundle "
                "was loaded; load it again)"
            )
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BundleError(
                f"{self.folder}: {name} does not match the manifest's sha256 (changed after the bundle was loaded; "
                "load it again)"
            )
        return data

    def close(self) -> None:
        """Close every held descriptor (idempotent)."""
        with self._lock:
            fds, self._fds = self._fds, None
            for fd in (fds or {}).values():
                os.close(fd)
            if self._dir is not None:
                os.close(self._dir)
                self._dir = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release
            pass


def _read_all(fd: int) -> bytes:
    parts, off = [], 0
    while True:
        block = os.pread(fd, _CHUNK * 8, off)
        if not block:
            return b"".join(parts)
        parts.append(block)
        off += len(block)
