"""Signed bundles: Ed25519 over the manifest digest (issue 10)."""

import json
import os
import shutil

import pytest

from dlsr_deploy.errors import BundleError, ConfigError

pytest.importorskip("cryptography")


@pytest.fixture(scope="module")
def signed(tiny_run, tmp_path_factory):
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.signing import generate_keypair

    run, _, _ = tiny_run
    d = tmp_path_factory.mktemp("signed")
    key, pub = generate_keypair(d / "fleet")
    other_key, other_pub = generate_keypair(d / "other")
    export_bundle(run, d / "bundle", sign=str(key), verify=False)
    export_bundle(run, d / "unsigned", verify=False)
    return d, key, pub, other_pub


def test_keys_are_private_and_never_overwritten(signed):
    from dlsr_deploy.signing import generate_keypair

    d, key, pub, _ = signed
    assert oct(os.stat(key).st_mode & 0o777) == "0o600" and b"PUBLIC KEY" in pub.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        generate_keypair(d / "fleet")


def test_trusted_keys_accept_own_and_refuse_unsigned_foreign_or_edited(signed, tmp_path):
    from dlsr_deploy.runtime import Detector

    d, _, pub, other_pub = signed
    with Detector.load(d / "bundle", backend="ort-cpu", trusted_keys=[pub]) as det:
        assert det.manifest.data["signature"]["algorithm"] == "ed25519"
    with Detector.load(d / "unsigned", backend="ort-cpu"):  # no keys given: signatures not required
        pass
    with pytest.raises(BundleError, match="not signed"):
        Detector.load(d / "unsigned", backend="ort-cpu", trusted_keys=[pub])
    with pytest.raises(BundleError, match="not among the trusted keys"):
        Detector.load(d / "bundle", backend="ort-cpu", trusted_keys=[other_pub])
    # an attacker who edits the threshold and recomputes the digest still cannot sign
    from dlsr_deploy.manifest import content_digest

    b = tmp_path / "forged"
    shutil.copytree(d / "bundle", b)
    data = json.loads((b / "manifest.json").read_text())
    data["threshold"]["value"] = 1e9
    data["digest"] = content_digest(data)
    (b / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="signature does not match"):
        Detector.load(b, backend="ort-cpu", trusted_keys=[pub])


def test_cli_sign_and_trusted_key(signed, tiny_run, tmp_path):
    from click.testing import CliRunner

    from dlsr_deploy.cli import keygen, score

    d, _, pub, other_pub = signed
    _, _, ood = tiny_run
    r = CliRunner().invoke(keygen, [str(tmp_path / "k")])
    assert r.exit_code == 0 and "key id" in r.output
    r = CliRunner().invoke(
        score, [str(d / "bundle"), str(ood), "--backend", "ort-cpu", "--trusted-key", str(pub), "--quiet"]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        score, [str(d / "bundle"), str(ood), "--backend", "ort-cpu", "--trusted-key", str(other_pub), "--quiet"]
    )
    assert r.exit_code == 1 and "not among the trusted keys" in r.output
