"""bf16 bundles (dlsr-export --precision bf16): heads fitted on the bf16 backbone's features, the
accuracy guard, OpenVINO's bf16 on the backbone only, and refusals on CPUs without bf16 units.

The export and load tests need a CPU whose OpenVINO plugin computes bf16 (AMX or avx512_bf16)
and skip elsewhere; the refusals and the guard's wiring run on every CPU."""

import json

import numpy as np
import pytest

from dlsr_deploy.errors import BackendUnavailable, BundleError, ConfigError, ParityError


def _has_bf16():
    try:
        from dlsr_deploy.runtime.openvino import cpu_runs_bf16

        return cpu_runs_bf16()
    except Exception:
        return False


needs_bf16 = pytest.mark.skipif(
    not _has_bf16(), reason="needs a CPU whose OpenVINO plugin computes bf16 (AMX or avx512_bf16)"
)


@pytest.fixture(scope="module")
def bf16_bundle(tiny_run, tmp_path_factory):
    from bundles import export_tiny

    return export_tiny(tiny_run, tmp_path_factory.mktemp("bf16") / "b", bf16=True)


@needs_bf16
def test_a_bf16_bundle_records_its_guard_and_runs_bf16_on_openvino_only(bf16_bundle, tiny_run):
    from dlsr_deploy.runtime import Detector

    m = json.loads((bf16_bundle / "manifest.json").read_text())
    rec = m["precision"]["bf16"]
    assert m["precision"]["mode"] == "bf16" and m["backends"] == ["openvino"]
    assert "decision" not in m["files"]  # it would run the heads in bf16 too
    assert rec["kept"] in rec["candidates"] and rec["candidates"][rec["kept"]]["passed"]
    assert rec["heads_graph_max_rel"] < 1e-3 and rec["n_train"] > 0
    with Detector.load(bf16_bundle) as det:
        assert det.backend_name == "openvino" and det.backend.precision_hint == "bf16"
        assert det.self_check_report["passed"]
        heads = det.backend.session("heads").precision
        assert heads == "f32"
        out = det.predict(np.load(tiny_run[2])["images"][:4])
        assert np.all(np.isfinite(out["score"]))
    with pytest.raises((BackendUnavailable, BundleError), match="openvino"):
        Detector.load(bf16_bundle, backend="ort-cpu")


@needs_bf16
def test_a_bf16_bundle_is_refused_on_a_cpu_without_bf16(bf16_bundle, monkeypatch):
    import dlsr_deploy.runtime.openvino as ov
    from dlsr_deploy.runtime import Detector

    monkeypatch.setattr(ov, "cpu_runs_bf16", lambda core=None: False)
    with pytest.raises(BackendUnavailable, match="no bf16 units"):
        Detector.load(bf16_bundle, backend="openvino", self_check="never")


def test_bf16_export_is_refused_before_any_work_where_the_cpu_has_none(tiny_run, tmp_path, monkeypatch):
    import dlsr_deploy.runtime.openvino as ov
    from dlsr_deploy.export.exporter import export_bundle

    monkeypatch.setattr(ov, "cpu_runs_bf16", lambda core=None: False)
    with pytest.raises(ConfigError, match="no bf16 units"):
        export_bundle(tiny_run[0], tmp_path / "b", bf16=True)
    assert not (tmp_path / "b").exists()


def test_a_candidate_the_guard_refuses_is_a_parity_error_and_nothing_is_published(tiny_run, tmp_path, monkeypatch):
    """The wiring, on any CPU: 'bf16' features replaced by FP32 features plus heavy noise."""
    import dlsr_deploy.runtime.openvino as ov
    from dlsr_deploy.export import lowprec
    from dlsr_deploy.export.exporter import export_bundle

    real = lowprec._z0

    def noisy(path, images, engine):
        z = real(path, images, "ort")
        if engine == lowprec.BF16_ENGINE:
            z = z + np.random.default_rng(len(images)).normal(0, 3 * z.std(), z.shape)
        return z

    monkeypatch.setattr(ov, "cpu_runs_bf16", lambda core=None: True)
    monkeypatch.setattr(lowprec, "_z0", noisy)
    run, _, ood = tiny_run
    with pytest.raises(ParityError, match=r"bf16 refused by the accuracy guard.*fp32_heads:.*bf16_heads:.*AUROC"):
        export_bundle(run, tmp_path / "b", bf16=True, verify_ood=[str(ood)], n_verify=64)
    assert not (tmp_path / "b").exists()


def test_precision_flags_that_contradict_are_usage_errors(tiny_run, tmp_path):
    from click.testing import CliRunner

    from dlsr_deploy.cli import export

    args = ["--model", str(tiny_run[0]), "--out", str(tmp_path / "b"), "--precision", "bf16", "--fp16"]
    r = CliRunner().invoke(export, args)
    assert r.exit_code == 2 and "contradicts --fp16" in r.output
    r = CliRunner().invoke(export, ["--model", str(tiny_run[0]), "--precision", "fp32,fp64"])
    assert r.exit_code == 2 and "expected fp32, fp16, bf16 or int8" in r.output


def test_a_family_export_keeps_what_passed_and_says_what_was_refused(tiny_run, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import dlsr_deploy.runtime.openvino as ov
    from dlsr_deploy.cli import export
    from dlsr_deploy.runtime import Detector

    monkeypatch.setattr(ov, "cpu_runs_bf16", lambda core=None: False)
    out = tmp_path / "fam"
    r = CliRunner().invoke(
        export,
        ["--model", str(tiny_run[0]), "--out", str(out), "--precision", "fp32,bf16", "--verify-ood", str(tiny_run[2]),
         "--n-verify", "64", "--quiet"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "bf16: refused" in r.output and "no bf16 units" in r.output
    assert json.loads((out / "family.json").read_text())["members"] == {"fp32": "fp32"}
    with Detector.load(out, backend="ort-cpu") as det:
        assert det.manifest.precision == "fp32" and det.family_choice["chosen"] == "fp32"


def test_a_guarded_int8_backbone_refits_its_heads_and_keeps_one_graph_per_decision(tiny_run, tmp_path):
    """--precision int8: NNCF static INT8 backbone on OpenVINO, heads refitted on its features; the
    accuracy guard is the gate, the eager comparison is kept for reference (any CPU with OpenVINO)."""
    from bundles import export_tiny

    from dlsr_deploy.runtime import Detector

    out = export_tiny(tiny_run, tmp_path / "i8", int8=True, guarded=True, int8_scheme="openvino", int8_backbone_from=1)
    m = json.loads((out / "manifest.json").read_text())
    rec = m["precision"]["int8"]
    assert m["precision"]["mode"] == "int8" and m["backends"] == ["openvino"]
    assert rec["candidates"][rec["kept"]]["passed"] and rec["z0_rel_vs_fp32_max"] > 1e-3  # really 8-bit
    assert m["parity"]["passed"] and "accuracy guard" in m["parity"]["gate"] and "eager_failures" in m["parity"]
    assert "decision" in m["files"]  # the quantized graph keeps the heads in f32: one call per decision
    from dlsr_deploy.manifest import describe, read_manifest

    text = describe(read_manifest(out, verify=False))
    assert "guard    static INT8" in text and "fp32_heads" in text and "int8_heads" in text
    with Detector.load(out) as det:
        assert det.backend_name == "openvino" and det.self_check_report["passed"]
        assert det.manifest.graphs_for([det.score_name]) == ["decision"]
    with pytest.raises(BundleError, match="accuracy guard"):
        from dlsr_deploy.export.check import check_bundle

        check_bundle(out, None, None, (), 16, lambda p: None)


def test_guarded_needs_int8_and_the_openvino_scheme(tiny_run, tmp_path):
    from dlsr_deploy.export.exporter import export_bundle

    with pytest.raises(ConfigError, match="guarded"):
        export_bundle(tiny_run[0], tmp_path / "x", guarded=True)
    with pytest.raises(ConfigError, match="int8_scheme 'openvino'"):
        export_bundle(tiny_run[0], tmp_path / "x", int8=True, guarded=True)
