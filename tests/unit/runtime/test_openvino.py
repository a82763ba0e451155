"""OpenVINO backend behind the same interface as ONNX Runtime (issue 13)."""

import numpy as np
import pytest

pytest.importorskip("openvino")

from dlsr_deploy.runtime import Detector  # noqa: E402


def test_openvino_matches_ort_and_runs_fp32(bundles, tiny_run):
    _, id_path, ood_path = tiny_run
    images = np.concatenate([np.load(id_path)["images"][:12], np.load(ood_path)["images"][:12]])
    with (
        Detector.load(bundles["fp32"], backend="ort-cpu") as ort,
        Detector.load(bundles["fp32"], backend="openvino") as ov,
    ):
        assert ov.backend_name == "openvino" and "f32" in ov.backend.provider  # never a silent bf16
        assert ov.self_check_report["passed"]  # the golden set replayed on OpenVINO
        a, b = ort.score(images, "all"), ov.score(images, "all")
    for k in a:
        if k.startswith(("sum_", "max_")):
            np.testing.assert_allclose(b[k], a[k], atol=1e-3)
        else:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-4 * np.abs(a[k]).mean())


def test_openvino_throughput_mode_splits_over_streams(bundles, tiny_run):
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.runtime.openvino import OpenVinoBackend

    _, id_path, _ = tiny_run
    images = np.load(id_path)["images"][:40]
    m = read_manifest(bundles["fp32"])
    with OpenVinoBackend(m, mode="latency") as lat, OpenVinoBackend(m, mode="throughput") as thr:
        a, b = lat.run(images), thr.run(images)
    np.testing.assert_allclose(b["score_mfsim"], a["score_mfsim"], rtol=1e-5, atol=1e-6)
    assert len(b["z0"]) == 40
