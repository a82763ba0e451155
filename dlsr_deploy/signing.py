"""Signed bundles for fleets (Ed25519, PyPI `cryptography`: `pip install 'dlsr-deploy[sign]'`).

The manifest's `digest` covers its whole content, and the manifest covers every graph file
by sha256, so signing the digest signs the bundle:

    dlsr-keygen keys/fleet                        # keys/fleet.key (private, 0600) + keys/fleet.pub
    dlsr-export --model runs/m --sign keys/fleet.key --out export/m
    Detector.load("export/m", trusted_keys=["keys/fleet.pub"])    # refuses unsigned / foreign bundles

Keys are PEM files (PKCS#8 private key, SubjectPublicKeyInfo public key). A public key file may
hold several PEM blocks: each is trusted. An encrypted private key is decrypted with the password
in $DLSR_SIGN_PASSWORD. $DLSR_TRUSTED_KEYS (key paths, os.pathsep-separated) makes a signature
mandatory for every load in that environment.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from dlsr_deploy.errors import BundleError, ConfigError, missing_extra

KeyLike = Union[str, Path, bytes]


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise missing_extra("cryptography", "sign") from None
    return serialization, ed25519


def generate_keypair(stem: Union[str, Path]) -> Tuple[Path, Path]:
    """Write STEM.key (private, mode 0600) and STEM.pub; refuses to overwrite either."""
    serialization, ed25519 = _crypto()
    key_path, pub_path = Path(f"{stem}.key"), Path(f"{stem}.pub")
    for p in (key_path, pub_path):
        if p.exists():
            raise ConfigError(f"{p} already exists; choose another name (keys are never overwritten)")
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(priv)
    pub_path.write_bytes(pub)
    return key_path, pub_path


def _read(key: KeyLike, what: str) -> bytes:
    if isinstance(key, bytes):
        return key
    try:
        return Path(key).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {key}: cannot read it ({exc.strerror})") from None


PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.S)
TRUSTED_KEYS_ENV = "DLSR_TRUSTED_KEYS"
PASSWORD_ENV = "DLSR_SIGN_PASSWORD"


def _pem_blocks(pem: bytes, shown: str) -> List[bytes]:
    """Every PEM block of a key file (a .pub may hold several trusted keys: each is trusted)."""
    blocks = [m.group(0) for m in PEM_BLOCK.finditer(pem)]
    if not blocks:
        raise ConfigError(f"trusted key {shown}: no PEM block (expected '-----BEGIN PUBLIC KEY-----')")
    return blocks


def trusted_keys_from_env() -> Optional[List[bytes]]:
    """The keys named by $DLSR_TRUSTED_KEYS (PEM paths separated by os.pathsep), or None when it is
    unset. An edge image sets it once and every load in that environment (Detector, dlsr-score,
    dlsr-serve, dlsr-check, dlsr-inspect, dlsr-build, Ray workers) requires a signature by one of
    them. Set but naming no key fails closed (ConfigError), never "no check"."""
    value = os.environ.get(TRUSTED_KEYS_ENV)
    if value is None:
        return None
    paths = [p for p in value.split(os.pathsep) if p.strip()]
    if not paths:
        raise ConfigError(f"${TRUSTED_KEYS_ENV} is set but names no key file; give PEM public key paths")
    return resolve_trusted_keys(paths, env=False)


def resolve_trusted_keys(trusted_keys, env: bool = True) -> Optional[List[bytes]]:
    """trusted_keys as a list of single-key PEM bytes (paths read now, so a pickled Detector
    re-opens in any working directory; every block of a multi-key file kept; a generator taken
    whole). None -> $DLSR_TRUSTED_KEYS when env and it is set, else None (no signature required)."""
    if trusted_keys is None:
        return trusted_keys_from_env() if env else None
    if isinstance(trusted_keys, (str, bytes, Path)):
        check_trusted_keys(trusted_keys)  # the single-key error
    keys = list(trusted_keys)
    check_trusted_keys(keys)
    out: List[bytes] = []
    for k in keys:
        if not isinstance(k, (str, bytes, Path)):
            raise ConfigError(f"trusted_keys: expected PEM paths or bytes, got a {type(k).__name__}")
        out += _pem_blocks(_read(k, "trusted key"), "(bytes)" if isinstance(k, bytes) else str(k))
    return out


def load_signing_key(key: KeyLike) -> bytes:
    """A private key's PEM bytes, read once (so `--sign /dev/stdin` works) and decrypted when it is
    encrypted (password from $DLSR_SIGN_PASSWORD); a key file that other users can read is used
    with a warning."""
    if not isinstance(key, bytes):
        try:
            mode = os.stat(key).st_mode
        except OSError:
            mode = 0
        if stat.S_ISREG(mode) and mode & 0o077:
            warnings.warn(
                f"signing key {key} can be read by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it",
                RuntimeWarning,
                stacklevel=2,
            )
    pem = _read(key, "signing key")
    if b"ENCRYPTED" not in pem:
        return pem
    serialization, _ = _crypto()
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise ConfigError(f"signing key: it is encrypted; put its password in ${PASSWORD_ENV}")
    try:
        k = serialization.load_pem_private_key(pem, password=password.encode())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"signing key: cannot decrypt it with ${PASSWORD_ENV} ({exc})") from None
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_key_id(pub_pem: bytes) -> str:
    """A short fingerprint of a public key: sha256 of its raw 32 key bytes, 16 hex digits. The
    key, not its file: the same key saved with CRLF line endings or other PEM wrapping has the
    same id."""
    import hashlib

    serialization, _ = _crypto()
    try:
        key = serialization.load_pem_public_key(pub_pem)
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not an Ed25519 PEM public key ({exc})") from None
    return hashlib.sha256(raw).hexdigest()[:16]


def check_trusted_keys(trusted_keys) -> None:
    """None means "no signature required"; anything else must name at least one key. An empty
    list is refused: an app whose key list came back empty must not silently stop checking."""
    if trusted_keys is None:
        return
    if isinstance(trusted_keys, (str, bytes, Path)):
        raise ConfigError(
            "trusted_keys: expected a list of public keys (PEM paths or bytes), got a single "
            f"{type(trusted_keys).__name__}; wrap it in a list"
        )
    if isinstance(trusted_keys, (list, tuple)) and len(trusted_keys) == 0:
        raise ConfigError(
            "trusted_keys: the list is empty, so no bundle could be trusted; give at least one public key, or "
            "trusted_keys=None to load without a signature check"
        )


def sign_manifest(data: Dict[str, Any], private_key: KeyLike) -> Dict[str, Any]:
    """The manifest with a `signature` over its digest (call after the digest is set)."""
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(load_signing_key(private_key), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"signing key: not a PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"signing key: expected an Ed25519 key, got {type(key).__name__}")
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    sig = key.sign(data["digest"].encode())
    return {**data, "signature": {"algorithm": "ed25519", "key_id": public_key_id(pub), "value": sig.hex()}}


def verify_signature(data: Dict[str, Any], trusted_keys: Sequence[KeyLike], path: Path) -> str:
    """The key id that signed the manifest's digest; BundleError when unsigned or not by a trusted key."""
    serialization, _ = _crypto()
    sig = data.get("signature")
    if not isinstance(sig, dict) or sig.get("algorithm") != "ed25519" or not isinstance(sig.get("value"), str):
        raise BundleError(
            f"{path}: the bundle is not signed, and trusted keys were given (sign it at export with a private key)"
        )
    _, ed25519 = _crypto()
    keys = {}
    for i, pem in enumerate(resolve_trusted_keys(list(trusted_keys), env=False)):
        shown = f"#{i + 1}"
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"trusted key {shown}: not a PEM public key ({exc})") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ConfigError(f"trusted key {shown}: expected an Ed25519 key, got {type(key).__name__}")
        keys[public_key_id(pem)] = key
    try:
        value = bytes.fromhex(sig["value"])
    except ValueError:
        raise BundleError(f"{path}: the signature is not hex-encoded (corrupt manifest)") from None
    # every trusted key is tried: the recorded key id is informational (bundles signed before key
    # ids were computed from the raw key carry the old id); the signature itself decides
    for key_id, key in keys.items():
        try:
            key.verify(value, str(data.get("digest")).encode())
            return key_id
        except Exception:
            continue
    if sig.get("key_id") in keys:
        raise BundleError(f"{path}: the signature does not match the manifest (modified after signing)")
    raise BundleError(
        f"{path}: signed by key {sig.get('key_id')}, which is not among the trusted keys {sorted(keys)} (or the "
        "manifest was modified after signing)"
    )
