"""Fail closed (issue 21): signing that signs, caches that cannot be forged, nothing destroyed by a flag."""

import json
import shutil
import time

import numpy as np
import pytest

from dlsr_deploy.errors import BundleError, ConfigError, DataError, DLSRError

pytest.importorskip("cryptography")


def test_cli_export_sign_then_score_trusted_key(tiny_run, tmp_path):
    """keygen -> dlsr-export --sign -> dlsr-score --trusted-key, all through the CLI: the bundle
    the CLI exports is signed (it was not: --sign was dropped on the way to the exporter)."""
    from click.testing import CliRunner

    from dlsr_deploy.cli import export, keygen, score

    run, _, ood = tiny_run
    assert CliRunner().invoke(keygen, [str(tmp_path / "fleet")]).exit_code == 0
    assert CliRunner().invoke(keygen, [str(tmp_path / "other")]).exit_code == 0
    out = tmp_path / "b"
    r = CliRunner().invoke(
        export,
        ["--model", str(run), "--out", str(out), "--no-verify", "--quiet", "--sign", str(tmp_path / "fleet.key")],
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / "manifest.json").read_text())["signature"]["algorithm"] == "ed25519"
    args = [str(out), str(ood), "--backend", "ort-cpu", "--quiet", "--trusted-key"]
    r = CliRunner().invoke(score, args + [str(tmp_path / "fleet.pub")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(score, args + [str(tmp_path / "other.pub")])
    assert r.exit_code == 1 and "not among the trusted keys" in r.output
    (tmp_path / "garbage.key").write_text("not a key")
    r = CliRunner().invoke(
        export,
        [
            "--model",
            str(run),
            "--out",
            str(tmp_path / "c"),
            "--no-verify",
            "--quiet",
            "--sign",
            str(tmp_path / "garbage.key"),
        ],
    )
    assert r.exit_code == 1 and "not a PEM private key" in r.output and not (tmp_path / "c").exists()


def test_empty_key_list_is_an_error_and_key_ids_follow_the_key(bundles, tmp_path):
    from dlsr_deploy.runtime import Detector
    from dlsr_deploy.signing import generate_keypair, public_key_id

    with pytest.raises(ConfigError, match="the list is empty"):
        Detector.load(bundles["fp32"], backend="ort-cpu", trusted_keys=[])
    with pytest.raises(ConfigError, match="a single"):
        Detector.load(bundles["fp32"], backend="ort-cpu", trusted_keys=str(tmp_path / "x.pub"))
    _, pub = generate_keypair(tmp_path / "k")
    crlf = pub.read_bytes().replace(b"\n", b"\r\n")
    assert public_key_id(crlf) == public_key_id(pub.read_bytes())


def test_signed_manifest_still_checks_files_with_verify_off(tiny_run, tmp_path):
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.runtime import Detector
    from dlsr_deploy.signing import generate_keypair

    run, _, _ = tiny_run
    key, pub = generate_keypair(tmp_path / "k")
    export_bundle(run, tmp_path / "b", sign=str(key), verify=False)
    blob = bytearray((tmp_path / "b" / "heads.onnx").read_bytes())
    blob[-10] ^= 0xFF
    (tmp_path / "b" / "heads.onnx").write_bytes(bytes(blob))
    with pytest.raises(BundleError, match="heads.onnx"):
        Detector.load(tmp_path / "b", backend="ort-cpu", verify=False, trusted_keys=[pub])


def _entries(root):
    return sorted((root / "selfcheck").glob("*.json"))


def test_forged_self_check_verdicts_mean_check_again(bundles, tmp_path, monkeypatch):
    from dlsr_deploy.runtime import Detector, selfcheck

    calls = []
    real = selfcheck.run_self_check
    monkeypatch.setattr(selfcheck, "run_self_check", lambda *a, **k: calls.append(1) or real(*a, **k))
    Detector.load(bundles["fp32"], backend="ort-cpu").close()
    Detector.load(bundles["fp32"], backend="ort-cpu").close()
    assert len(calls) == 1  # the second load trusted the authenticated verdict
    root = tmp_path / "dlsr-cache"
    (entry,) = _entries(root)
    for forge in ({"failures": ["edited"], "n_images": 999}, {"passed": "false"}):
        data = json.loads(entry.read_text())
        data["value"].update(forge)  # any edit of a verdict: its MAC no longer matches
        entry.write_text(json.dumps(data))
        Detector.load(bundles["fp32"], backend="ort-cpu").close()
    assert len(calls) == 3  # each forged entry was ignored: the check ran again
    entry.write_text("{truncated")
    Detector.load(bundles["fp32"], backend="ort-cpu").close()
    assert len(calls) == 4
    (root / ".verdict-key").chmod(0o666)  # a key others can write proves nothing
    Detector.load(bundles["fp32"], backend="ort-cpu").close()
    assert len(calls) == 5


def test_a_golden_set_that_compares_fewer_scores_fails(bundles, tmp_path):
    from dlsr_deploy.io import sha256_file
    from dlsr_deploy.manifest import content_digest
    from dlsr_deploy.runtime import Detector

    b = tmp_path / "b"
    shutil.copytree(bundles["fp32"], b)
    with np.load(b / "golden.npz") as g:
        kept = {k: g[k] for k in g.files if not k.startswith("bundle/score_")}
    np.savez(b / "golden.npz", **kept)
    data = json.loads((b / "manifest.json").read_text())
    data["golden"].update(sha256=sha256_file(b / "golden.npz"), bytes=(b / "golden.npz").stat().st_size)
    data["digest"] = content_digest(data)  # an attacker recomputes the hashes
    (b / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="the golden set lacks"):
        Detector.load(b, backend="ort-cpu", self_check="always")
    (b / "golden.npz").write_bytes(b"PK\x03\x04 garbage")
    data["golden"].update(sha256=sha256_file(b / "golden.npz"), bytes=(b / "golden.npz").stat().st_size)
    data["digest"] = content_digest(data)
    (b / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="not a readable golden set"):
        Detector.load(b, backend="ort-cpu", self_check="always")


def test_force_removes_only_what_the_bundle_lists(tiny_run, bundles, tmp_path):
    from dlsr_deploy.export.exporter import export_bundle

    run, _, _ = tiny_run
    b = tmp_path / "b"
    shutil.copytree(bundles["fp32"], b)
    (b / "NOTES.md").write_text("mine")
    export_bundle(run, b, force=True, verify=False)
    assert (b / "NOTES.md").read_text() == "mine" and (b / "heads.onnx").exists()
    assert not (b / "pipeline.onnx").exists()  # listed by the old bundle, not by the new one
    proj = tmp_path / "project"
    proj.mkdir()
    (proj / "manifest.json").write_text('{"name": "my project"}')  # any file called manifest.json
    (proj / "src.py").write_text("x")
    with pytest.raises(BundleError, match="not a bundle written by dlsr-export"):
        export_bundle(run, proj, force=True, verify=False)
    assert sorted(p.name for p in proj.iterdir()) == ["manifest.json", "src.py"]


def test_options_are_checked_before_any_work(tiny_run, tmp_path):
    from dlsr_deploy.export.exporter import export_bundle

    run, _, ood = tiny_run
    for kwargs, match in (
        ({"headline": "bogus"}, "headline: expected one of"),
        ({"target_tpr": 2.0}, "target_tpr"),
        ({"n_verify": 0}, "n_verify"),
        ({"verify_ood": [str(tmp_path / "nope.npz")]}, "verify_ood: not found"),
        ({"headline": "auto"}, "needs known-OOD images"),
    ):
        t = time.perf_counter()
        with pytest.raises(DLSRError, match=match):
            export_bundle(run, tmp_path / "x", **kwargs)
        assert time.perf_counter() - t < 2.0, kwargs  # before the model, the images or a graph
    assert not (tmp_path / "x").exists()


def test_cli_errors_name_flags_the_library_names_parameters(tiny_run, tmp_path):
    from click.testing import CliRunner

    from dlsr_deploy.cli import export

    run, _, _ = tiny_run
    r = CliRunner().invoke(export, ["--model", str(run), "--out", str(tmp_path / "x"), "--headline", "bogus"])
    assert r.exit_code == 1 and r.output.startswith("error: --headline: expected one of")
    r = CliRunner().invoke(export, ["--model", str(run), "--out", str(tmp_path / "x"), "--target-tpr", "2"])
    assert r.exit_code == 1 and "--target-tpr: expected a value in (0, 1)" in r.output


def test_headline_auto_warns_on_id_looking_ood(caplog):
    from dlsr_deploy.export.calibrate import choose_headline

    r = np.random.default_rng(0)
    names = ["mfsim", "gauss_layer", "maha_ridge"]
    id_s = {n: r.normal(size=300) for n in names}
    ood = {"looks-id": {n: r.normal(size=200) for n in names}}
    head, how = choose_headline("auto", names, id_s, ood)
    assert head == "maha_ridge" and how["near_chance"]
    assert "look like ID images" in caplog.text  # a warning on the dlsr_deploy logger


def test_training_never_overwrites_and_resume_proves_itself(tmp_path):
    from bundles import make_sets

    from dlsr_deploy.config import FeatureConfig, TrainConfig
    from dlsr_deploy.pipeline import run_train

    id_path, ood_path = make_sets(tmp_path)
    kw = dict(
        preset="small",
        tcfg=TrainConfig(epochs=1, batch_size=32),
        holdout=0.25,
        cache_dir=tmp_path / "cache",
    )
    fcfg = FeatureConfig(backbone="efficientnet-lite0", input_size=64)
    run_train(str(id_path), tmp_path / "r", fcfg, **kw)
    (tmp_path / "r" / "mine.txt").write_text("keep")
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a trained run"):
        run_train(str(id_path), tmp_path / "r", fcfg, **kw)
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before
    with pytest.raises(ConfigError, match=r"resume: .*other data, data_sha256"):
        run_train(str(ood_path), tmp_path / "r", fcfg, resume=True, **kw)
    with pytest.raises(ConfigError, match="config.feature.input_size"):
        other = FeatureConfig(backbone="efficientnet-lite0", input_size=96)
        run_train(str(id_path), tmp_path / "r", other, resume=True, **kw)
    run_train(str(id_path), tmp_path / "r", fcfg, force=True, **kw)
    assert (tmp_path / "r" / "mine.txt").read_text() == "keep"
    dup = tmp_path / "same.npz"
    shutil.copy(id_path, dup)
    with pytest.raises(DataError, match="hold the same images"):
        run_train([str(id_path), str(dup)], tmp_path / "r2", fcfg, **kw)
    with pytest.raises(DataError, match="given twice"):
        run_train([str(id_path), str(tmp_path / "." / "id.npz")], tmp_path / "r3", fcfg, **kw)


def test_resume_checks_each_shards_ids_not_its_row_count(tmp_path):
    pytest.importorskip("pyarrow")
    from dlsr_deploy.scale.batch import shard_is_whole, write_shard

    cols = ["image", "score_x", "is_ood", "error"]
    rows = lambda ids: [{"image": i, "score_x": 0.0, "is_ood": False, "error": ""} for i in ids]  # noqa: E731
    for fmt in ("parquet", "csv"):
        p = tmp_path / f"part-00000.{fmt}"
        write_shard(p, rows(["a", "b"]), cols, fmt)
        assert shard_is_whole(p, fmt, ["a", "b"])
        write_shard(p, rows(["c", "d"]), cols, fmt)  # another shard's ids, same row count
        assert not shard_is_whole(p, fmt, ["a", "b"])
        write_shard(p, rows(["a", "a"]), cols, fmt)  # a duplicate and a missing input
        assert not shard_is_whole(p, fmt, ["a", "b"])
