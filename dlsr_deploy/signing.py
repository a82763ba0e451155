"""Signed bundles for fleets (Ed25519, PyPI `cryptography`: `pip install 'dlsr-deploy[sign]'`).

The manifest's `digest` covers its whole content, and the manifest covers every graph file
by sha256, so signing the digest signs the bundle:

    dlsr-keygen keys/fleet                        # keys/fleet.key (private, 0600) + keys/fleet.pub
    dlsr-export --model runs/m --sign keys/fleet.key --out export/m
    Detector.load("export/m", trusted_keys=["keys/fleet.pub"])    # refuses unsigned / foreign bundles

Keys are PEM files (PKCS#8 private key, SubjectPublicKeyInfo public key).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

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
    if len(list(trusted_keys)) == 0:
        raise ConfigError(
            "trusted_keys: the list is empty, so no bundle could be trusted; give at least one public key, or "
            "trusted_keys=None to load without a signature check"
        )


def sign_manifest(data: Dict[str, Any], private_key: KeyLike) -> Dict[str, Any]:
    """The manifest with a `signature` over its digest (call after the digest is set)."""
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(_read(private_key, "signing key"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"signing key: not an unencrypted PEM private key ({exc})") from None
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
    check_trusted_keys(trusted_keys)
    _, ed25519 = _crypto()
    keys = {}
    for k in trusted_keys:
        pem = _read(k, "trusted key")
        shown = k if not isinstance(k, bytes) else "(bytes)"
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
