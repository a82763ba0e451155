"""Authenticated verdict caches: what the runtime measured once per machine, kept so later loads
cost nothing, and never trusted merely because a file says so.

The self-check ("this bundle reproduces its golden outputs on this machine + backend +
libraries") and `auto`'s backend choice are cached under `cache_root()`. A cached entry is
used only when

- it is bound to what the verdict depends on (the bundle digest, the platform, the library
  versions: the `binding` dict) and that binding equals today's, field by field; and
- it carries an HMAC-SHA256 over its binding and value, made with a per-user key kept in the
  cache folder (`.verdict-key`, 32 random bytes, mode 0600, created once); a key file that
  others can write, or that belongs to another user, is not used.

Anything else (an edited verdict, `"passed": "false"`, a truncated file, another machine's
entry, a missing or foreign key) is a cache miss: the check runs again. A miss costs time,
never correctness, so the cache fails closed by construction.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

KEY_FILE = ".verdict-key"


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=float).encode()


class VerdictCache:
    """One kind of verdict ('selfcheck', 'backend-choice') under cache_root()/<kind>/."""

    def __init__(self, kind: str, root: Optional[Path] = None):
        from dlsr_deploy.runtime.backend import cache_root

        self.kind = kind
        self.root = Path(root) if root is not None else cache_root()
        self.folder = self.root / kind

    def path(self, binding: Dict[str, Any]) -> Path:
        """The file of the entry for `binding` (a hash of it: one entry per binding)."""
        return self.folder / f"{hashlib.sha256(_canonical(binding)).hexdigest()[:24]}.json"

    def _key(self, create: bool) -> Optional[bytes]:
        path = self.root / KEY_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            if not create:
                return None
            return self._new_key(path)
        except OSError:
            return None
        if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
            return None  # writable by others or not ours: its MACs prove nothing
        try:
            key = path.read_bytes()
        except OSError:
            return None
        if len(key) == 32:
            return key
        if create:  # a damaged key (a 0-byte file an older version left on a full disk): start again
            try:
                path.unlink()
            except OSError:
                return None
            return self._new_key(path)
        return None

    def _new_key(self, path: Path) -> Optional[bytes]:
        """A new key, published whole (written to a temporary file, then hard-linked into place):
        a full disk leaves no 0-byte key behind that would disable the cache for good."""
        import tempfile

        key = os.urandom(32)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".verdict-key.", dir=path.parent)  # mode 0600
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:  # another process made it first: use theirs
            return self._key(create=False)
        except OSError:
            return None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        return key

    def _mac(self, key: bytes, binding: Dict[str, Any], value: Any) -> str:
        return hmac.new(key, _canonical({"kind": self.kind, "binding": binding, "value": value}), "sha256").hexdigest()

    def get(self, binding: Dict[str, Any]) -> Optional[Any]:
        """The cached value for `binding`, or None when there is none that can be trusted."""
        key = self._key(create=False)
        if key is None:
            return None
        try:
            entry = json.loads(self.path(binding).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or set(entry) != {"binding", "value", "mac"}:
            return None
        if entry["binding"] != json.loads(_canonical(binding)):
            return None
        mac = entry["mac"]
        if not isinstance(mac, str) or not hmac.compare_digest(mac, self._mac(key, entry["binding"], entry["value"])):
            return None
        return entry["value"]

    def put(self, binding: Dict[str, Any], value: Any) -> bool:
        """Store a verdict (atomically); False when the cache folder is not writable (the
        check then simply runs again next time)."""
        from dlsr_deploy.io import atomic_write_text
        from dlsr_deploy.runtime.backend import usable_cache_dir

        if usable_cache_dir(self.root) is None:  # read-only or full: no cache, one warning, never a failure
            return False
        key = self._key(create=True)
        if key is None:
            return False
        value = json.loads(_canonical(value))  # what will be read back: JSON types only
        binding = json.loads(_canonical(binding))
        entry = {"binding": binding, "value": value, "mac": self._mac(key, binding, value)}
        try:
            atomic_write_text(self.path(binding), json.dumps(entry, indent=1) + "\n")
        except OSError:
            return False
        return True
