"""Signed bundles, keys and the self-check."""

import json
import shutil
import time

import numpy as np
from tour import _edit, api, clean_error, cli


def _rehash_golden(bundle):
    from dlsr_deploy.io import sha256_file

    g = bundle / "golden.npz"
    _edit(bundle, lambda d: d["golden"].update(sha256=sha256_file(g), bytes=g.stat().st_size))


def _rewrite_golden(bundle, change) -> None:
    """golden.npz's arrays through change(dict) -> dict, written back with the manifest's hash
    recomputed (what an attacker who can edit files does)."""
    with np.load(bundle / "golden.npz") as g:
        arrays = change({k: g[k] for k in g.files})
    np.savez(bundle / "golden.npz", **arrays)
    _rehash_golden(bundle)


def signing(env):
    d = env.d
    cli("dlsr-keygen", d / "fleet")
    cli("dlsr-keygen", d / "other")
    out = d / "signed"
    code, msg, tb = cli(
        "dlsr-export", "--model", env.run, "--out", out, "--no-verify", "--quiet", "--sign", d / "fleet.key"
    )
    signed = code == 0 and "signature" in json.loads((out / "manifest.json").read_text())
    yield "security", "dlsr-export --sign KEY (CLI)", "the manifest is signed", signed, f"exit {code}"
    (d / "garbage.key").write_text("not a key")
    t = time.perf_counter()
    code, msg, tb = cli("dlsr-export", "--model", env.run, "--out", d / "g", "--quiet", "--sign", d / "garbage.key")
    ok, got = clean_error(code, msg, tb, "not a PEM private key")
    yield "security", "dlsr-export --sign GARBAGE", "refused before any work", ok and time.perf_counter() - t < 20, got
    args = ["dlsr-score", out, env.imgs, "--backend", "ort-cpu", "--quiet", "--out", d / "s.csv", "--trusted-key"]
    code, msg, tb = cli(*args, d / "fleet.pub")
    yield "security", "dlsr-score --trusted-key OWN", "scored", code == 0, f"exit {code}: {msg[:100]}"
    yield (
        "security",
        "dlsr-score --trusted-key FOREIGN",
        "refused",
        *clean_error(*cli(*args, d / "other.pub"), "not among"),
    )
    yield (
        "security",
        "unsigned bundle, trusted key given",
        "refused",
        *clean_error(
            *cli("dlsr-score", env.bundle, env.imgs, "--quiet", "--trusted-key", d / "fleet.pub"), "not signed"
        ),
    )


def signing_more(env):
    d, out = env.d, env.d / "signed"
    args = ["dlsr-score", out, env.imgs, "--backend", "ort-cpu", "--quiet", "--out", d / "s.csv", "--trusted-key"]
    crlf = d / "crlf.pub"
    crlf.write_bytes((d / "fleet.pub").read_bytes().replace(b"\n", b"\r\n"))
    code, msg, tb = cli(*args, crlf)
    yield (
        "security",
        "the trusted key saved with CRLF line endings",
        "the same key: accepted",
        code == 0,
        f"exit {code}",
    )
    from dlsr_deploy.errors import ConfigError
    from dlsr_deploy.runtime import Detector

    yield (
        "security",
        "Detector.load(trusted_keys=[])",
        "ConfigError, not 'no check'",
        *api(lambda: Detector.load(env.bundle, trusted_keys=[]), ConfigError, "the list is empty"),
    )
    forged = d / "forged"
    shutil.copytree(out, forged)
    _edit(forged, lambda m: m["threshold"].update(value=1e9))
    yield (
        "security",
        "signed bundle, threshold edited, digest recomputed",
        "refused (signature)",
        *clean_error(
            *cli("dlsr-score", forged, env.imgs, "--quiet", "--trusted-key", d / "fleet.pub"),
            "signature does not match",
        ),
    )


def signing_graph(env):
    from dlsr_deploy.runtime import Detector

    d, out = env.d, env.d / "signed"
    tampered = d / "tampered"
    shutil.copytree(out, tampered)
    blob = bytearray((tampered / "heads.onnx").read_bytes())
    blob[-5] ^= 0xFF
    (tampered / "heads.onnx").write_bytes(bytes(blob))
    from dlsr_deploy.errors import BundleError

    yield (
        "security",
        "signed bundle, a graph changed, loaded with verify=False",
        "refused",
        *api(lambda: Detector.load(tampered, verify=False, trusted_keys=[d / "fleet.pub"]), BundleError, "heads.onnx"),
    )


def self_check(env):
    from dlsr_deploy.errors import BundleError, ParityError
    from dlsr_deploy.runtime import Detector

    b = env.copy_bundle("drift")
    key = "bundle/score_gauss_layer"
    _rewrite_golden(b, lambda a: {**a, key: a[key][::-1].copy()})  # outputs that drifted
    yield (
        "security",
        "a bundle that fails its self-check",
        "ParityError",
        *api(lambda: Detector.load(b, backend="ort-cpu"), ParityError, "fails its self-check"),
    )
    from dlsr_deploy.runtime.verdicts import VerdictCache

    entries = sorted(VerdictCache("selfcheck").folder.glob("*.json"))
    for forged in (True, "false"):
        for e in entries:
            data = json.loads(e.read_text())
            data["value"].update(passed=forged, failures=[])
            e.write_text(json.dumps(data))
        yield (
            "security",
            f"cached verdict edited to passed = {forged!r}",
            "checked again: still refused",
            *api(lambda: Detector.load(b, backend="ort-cpu"), ParityError, "fails its self-check"),
        )
    g2 = env.copy_bundle("nogolden")
    _rewrite_golden(g2, lambda a: {k: v for k, v in a.items() if not k.startswith("bundle/")})
    yield (
        "security",
        "golden.npz without its bundle/* arrays, hashes recomputed",
        "BundleError, not a pass",
        *api(lambda: Detector.load(g2, backend="ort-cpu"), BundleError, "the golden set lacks"),
    )
    g3 = env.copy_bundle("badgolden")
    (g3 / "golden.npz").write_bytes(b"PK\x03\x04 not a zip")
    _rehash_golden(g3)
    yield (
        "traceback",
        "malformed golden.npz whose hashes match",
        "BundleError",
        *api(lambda: Detector.load(g3, backend="ort-cpu"), BundleError, "not a readable golden set"),
    )


GROUPS = [signing, signing_more, signing_graph, self_check]
