"""The load-time self-check replays the bundle's golden set on the target backend (issue 10)."""

import json
import shutil

import numpy as np
import onnx
import pytest

from dlsr_deploy.errors import ParityError
from dlsr_deploy.io import sha256_file
from dlsr_deploy.manifest import content_digest, read_manifest
from dlsr_deploy.runtime import Detector


def test_bundles_carry_a_golden_set_and_pass_it(bundles):
    for prec in ("fp32", "fp16"):
        m = read_manifest(bundles[prec])
        g = np.load(m.golden_path())
        assert m.golden["n_id"] > 0 and m.golden["n_ood"] > 0
        assert g["images"].dtype == np.uint8 and g["is_ood"].any() and (~g["is_ood"]).any()
        assert {f"bundle/{n}" for n in m.output_names} <= set(g.files) and {
            f"eager/{n}" for n in m.output_names
        } <= set(g.files)
        assert m.data["self_check"]["tolerances"]["rank_corr"] > 0
        with Detector.load(bundles[prec], backend="ort-cpu", self_check="always") as det:
            rep = det.self_check_report
        assert rep["passed"] and rep["platform"]["backend"] == "ort-cpu" and rep["n_images"] == len(g["images"])


def test_verdict_is_cached_per_platform(bundles, monkeypatch):
    from dlsr_deploy.runtime import selfcheck

    calls = []
    real = selfcheck.run_self_check
    monkeypatch.setattr(selfcheck, "run_self_check", lambda m, b, c: calls.append(1) or real(m, b, c))
    for _ in range(2):
        Detector.load(bundles["fp32"], backend="ort-cpu").close()
    assert len(calls) == 1  # the second load found the cached PASS for this digest + platform
    Detector.load(bundles["fp32"], backend="ort-cpu", self_check="always").close()
    Detector.load(bundles["fp32"], backend="ort-cpu", self_check="never").close()
    assert len(calls) == 2


def _drifted_copy(src, dst):
    """The bundle with one denoiser weight perturbed and every hash made consistent again:
    numerics that drift as on another platform, not a tampered file."""
    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "denoiser.onnx"))
    init = max(
        (i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and "density." not in i.name),
        key=lambda i: len(i.raw_data),
    )
    w = onnx.numpy_helper.to_array(init).copy()
    w += np.random.default_rng(0).normal(0, 0.5 * float(np.abs(w).mean()) + 1e-3, w.shape).astype(w.dtype)
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    onnx.save(model, str(dst / "denoiser.onnx"))
    data = json.loads((dst / "manifest.json").read_text())
    data["files"]["denoiser"]["sha256"] = sha256_file(dst / "denoiser.onnx")
    data["files"]["denoiser"]["bytes"] = (dst / "denoiser.onnx").stat().st_size
    data["digest"] = content_digest(data)
    (dst / "manifest.json").write_text(json.dumps(data))


def test_self_check_catches_numerics_that_drift(bundles, tmp_path):
    from click.testing import CliRunner

    from dlsr_deploy.cli import check

    _drifted_copy(bundles["fp32"], tmp_path / "drift")
    with pytest.raises(ParityError, match=r"fails its self-check on ort-cpu .*CPUExecutionProvider"):
        Detector.load(tmp_path / "drift", backend="ort-cpu")
    Detector.load(tmp_path / "drift", backend="ort-cpu", self_check="never").close()  # asked to skip: loads
    r = CliRunner().invoke(check, [str(tmp_path / "drift"), "--on-target", "--backend", "ort-cpu"])
    assert r.exit_code == 1 and "FAIL" in r.output
    r = CliRunner().invoke(check, [str(bundles["fp16"]), "--on-target", "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0 and "PASS" in r.output and json.loads((tmp_path / "r.json").read_text())["passed"]


def test_fp16_self_check_failure_on_a_cpu_says_what_to_ship():
    from types import SimpleNamespace

    from dlsr_deploy.runtime.selfcheck import _fp16_cpu_hint

    cpu, gpu = SimpleNamespace(provider="CPUExecutionProvider"), SimpleNamespace(provider="CUDAExecutionProvider")
    assert "ship the FP32 or the 8-bit weight-only bundle to CPUs" in _fp16_cpu_hint(
        SimpleNamespace(precision="fp16"), cpu
    )
    assert _fp16_cpu_hint(SimpleNamespace(precision="fp16"), gpu) == ""
    assert _fp16_cpu_hint(SimpleNamespace(precision="fp32"), cpu) == ""


def test_fused_self_check_runs_each_golden_image_once_and_passes(bundles):
    """A fused backend computes every score in one graph: the self-check replays each golden image
    through it once for both scoring paths, not once per path."""
    from dlsr_deploy.runtime.selfcheck import load_golden, run_self_check

    with Detector.load(bundles["fp32"], backend="ort-cpu", fused=True, self_check="never") as det:
        assert det.backend.fused and len(det.manifest.score_graphs) == 2
        calls, run = [], det.backend.run
        det.backend.run = lambda x, graphs=None: calls.append(len(x)) or run(x, graphs)
        rep = run_self_check(det.manifest, det.backend, chunk=24)
    n = len(load_golden(det.manifest)["images"])
    assert rep["passed"], rep["failures"]
    assert sum(calls) == n  # every golden image through the pipeline once (twice before: once per path)
