"""The confusing-but-safe findings of issue 29's tour: keys (several per file, generators, the
environment, permissions, encryption, pipes, pickling) and inputs (empty --scores, null Parquet
ids, float / 16-bit packs, images without a known suffix)."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlsr_deploy.errors import BundleError, ConfigError

pytest.importorskip("cryptography")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def signed(tiny_run, tmp_path_factory):
    """(bundle signed by key b, folder with keys a and b)."""
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.signing import generate_keypair

    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "a")
    generate_keypair(d / "b")
    export_bundle(tiny_run[0], d / "bundle", verify=False, sign=str(d / "b.key"))
    return d / "bundle", d


def test_a_pub_file_with_two_keys_trusts_both(signed, tmp_path):
    from dlsr_deploy.runtime import Detector

    bundle, d = signed
    both = tmp_path / "both.pub"
    both.write_bytes((d / "a.pub").read_bytes() + (d / "b.pub").read_bytes())  # b, the signer, second
    Detector.load(bundle, backend="ort-cpu", trusted_keys=[both]).close()
    Detector.load(bundle, backend="ort-cpu", trusted_keys=(k for k in [d / "b.pub"])).close()  # a generator
    with pytest.raises(BundleError, match="not among"):
        Detector.load(bundle, backend="ort-cpu", trusted_keys=[d / "a.pub"])


def test_the_environment_makes_signatures_mandatory(signed, bundles, monkeypatch):
    from dlsr_deploy.runtime import Detector

    bundle, d = signed
    monkeypatch.setenv("DLSR_TRUSTED_KEYS", str(d / "b.pub"))
    Detector.load(bundle, backend="ort-cpu").close()
    with pytest.raises(BundleError, match="not signed"):
        Detector.load(bundles["fp32"], backend="ort-cpu")
    monkeypatch.setenv("DLSR_TRUSTED_KEYS", "")
    with pytest.raises(ConfigError, match="names no key"):
        Detector.load(bundle, backend="ort-cpu")


def test_key_paths_are_read_before_pickling(signed, tmp_path, monkeypatch):
    from dlsr_deploy.runtime import Detector

    bundle, d = signed
    monkeypatch.chdir(d)
    det = Detector.load(bundle, backend="ort-cpu", trusted_keys=["b.pub"])  # relative
    blob = pickle.dumps(det)
    det.close()
    monkeypatch.chdir(tmp_path)  # a worker elsewhere
    pickle.loads(blob).close()


def test_signing_keys_warn_when_readable_decrypt_with_a_password_and_pipe_once(signed, tiny_run, tmp_path):
    from cryptography.hazmat.primitives import serialization

    from dlsr_deploy.signing import load_signing_key, sign_manifest

    bundle, d = signed
    loose = tmp_path / "loose.key"
    loose.write_bytes((d / "a.key").read_bytes())
    os.chmod(loose, 0o644)
    with pytest.warns(RuntimeWarning, match="other users"):
        load_signing_key(loose)
    key = serialization.load_pem_private_key((d / "a.key").read_bytes(), None)
    enc = tmp_path / "enc.key"
    enc.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    os.chmod(enc, 0o600)
    with pytest.raises(ConfigError, match="DLSR_SIGN_PASSWORD"):
        load_signing_key(enc)
    os.environ["DLSR_SIGN_PASSWORD"] = "s3cret"
    try:
        assert "signature" in sign_manifest({"digest": "sha256:x"}, str(enc))
    finally:
        del os.environ["DLSR_SIGN_PASSWORD"]
    r = subprocess.run(
        [str(BIN / "dlsr-export"), "--model", str(tiny_run[0]), "--out", str(tmp_path / "piped"), "--no-verify",
         "--quiet", "--sign", "/dev/stdin"],
        input=(d / "a.key").read_bytes(), capture_output=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()[-300:]


def test_empty_scores_is_an_error(bundles, tiny_run):
    from dlsr_deploy.cli import score

    r = CliRunner().invoke(score, [str(bundles["fp32"]), str(tiny_run[2]), "--scores", "", "--quiet"])
    assert r.exit_code != 0 and "--scores" in r.output


def test_parquet_null_ids_are_named_by_position(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    from dlsr_deploy.packs import parquet_ids

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    t = pa.table({"id": ["a", None], "image": [buf.getvalue()] * 2})
    pq.write_table(t, tmp_path / "t.parquet")
    assert parquet_ids(str(tmp_path / "t.parquet")) == ["a", f"{tmp_path / 't.parquet'}#1"]


def test_npz_packs_take_float_and_16_bit_images(tmp_path):
    from dlsr_deploy.inputs import list_inputs, read_listing

    np.savez(tmp_path / "f.npz", images=np.full((2, 8, 8, 3), 0.5, np.float32))
    np.savez(tmp_path / "u.npz", images=np.full((2, 8, 8, 3), 65535, np.uint16))
    images, kept, skipped = read_listing(list_inputs([str(tmp_path / "f.npz"), str(tmp_path / "u.npz")]), 8)
    assert not skipped and images[0, 0, 0, 0] == 128 and images[-1, 0, 0, 0] == 255


def test_images_without_a_known_suffix_get_rows_and_others_are_counted(tmp_path):
    from PIL import Image

    from dlsr_deploy.inputs import list_inputs

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "noext", format="PNG")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.warns(RuntimeWarning, match=r"1 file\(s\) skipped.*\.txt"):
        listing = list_inputs([str(tmp_path)])
    assert sorted(Path(p).name for p in listing.paths) == ["a.png", "noext"]
