"""dlsr-export --slim (issue 28, item 7): only the graphs the headline needs, verified first."""

import json

import numpy as np
import pytest

from dlsr_deploy.errors import ConfigError, InputError
from dlsr_deploy.runtime import Detector


@pytest.fixture(scope="module")
def slim(tiny_run, tmp_path_factory):
    from bundles import export_tiny

    return export_tiny(tiny_run, tmp_path_factory.mktemp("slim") / "slim", slim=True)


def test_a_slim_bundle_has_no_denoiser_and_says_so(slim, bundles):
    m = json.loads((slim / "manifest.json").read_text())
    assert sorted(m["files"]) == ["backbone", "decision", "heads"] and not (slim / "denoiser.onnx").exists()
    assert m["slim"]["dropped"] == ["denoiser.onnx"] and m["slim"]["dropped_bytes"] > 0
    assert m["parity"]["passed"] and "z0_hat" in m["parity"]["tensors"]  # the denoiser was verified first
    full = sum(p.stat().st_size for p in bundles["fp32"].iterdir() if p.name != "pipeline.onnx")
    assert sum(p.stat().st_size for p in slim.iterdir()) < full


def test_a_slim_bundle_decides_like_the_full_one(slim, bundles, tiny_run):
    x = np.load(tiny_run[2])["images"][:8]
    with Detector.load(slim, backend="ort-cpu", self_check="always") as det:
        got = det.predict(x)
        every = det.score(x, "all")
        assert set(every) == set(det.manifest.score_names) and "mse" not in every
        with pytest.raises(InputError, match="slim bundle"):
            det.score(x, "mse")
    with Detector.load(bundles["fp32"], backend="ort-cpu", self_check="never") as full:
        want = full.predict(x)
    assert det.score_name == full.score_name
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-5)
    assert np.array_equal(got["is_ood"], want["is_ood"])


def test_slim_refuses_a_headline_that_needs_the_denoiser_before_any_work(tiny_run, tmp_path):
    from dlsr_deploy.export.exporter import export_bundle

    with pytest.raises(ConfigError, match="needs the denoiser"):
        export_bundle(tiny_run[0], tmp_path / "x", slim=True, headline="mfsim")
    assert not (tmp_path / "x").exists()
