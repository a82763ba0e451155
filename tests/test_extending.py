"""Adding a backend or a score is one new module + one registry line (issue 20, README 'Extending').

The toy backend runs the bundle's ONNX graphs with onnx's pure-numpy reference evaluator; the toy
reconstruction score is the mean absolute error of the reconstruction. Both are registered here,
and nothing else changes: the exporter puts the score in the graphs, Detector / dlsr-bench /
dlsr-score run both, and the bench times the backend next to ONNX Runtime.
"""

import json

import numpy as np
import pytest

from dlsr_deploy.registry import (
    BackendSpec,
    ScoreSpec,
    register_backend,
    register_score,
    unregister_backend,
    unregister_score,
)
from dlsr_deploy.runtime.backend import BackendBase


# --- the toy score: one function pair -------------------------------------------------------
def mae_numpy(z0, zh, sizes, options):
    return np.abs(z0.astype(np.float64) - zh).mean(axis=1)


def mae_torch(z0, zh, sizes, options):
    return (z0 - zh).abs().mean(dim=1)


# --- the toy backend: one class ---------------------------------------------------------------
class NumpyReferenceBackend(BackendBase):
    """Every graph on onnx.reference.ReferenceEvaluator (numpy): slow, dependency-free, exact."""

    def __init__(self, manifest, options=None, spec=None):
        super().__init__(manifest, options)
        self.name, self.provider = "numpy-ref", "onnx.reference (numpy)"

    def open_graph(self, role):
        from onnx.reference import ReferenceEvaluator

        ev = ReferenceEvaluator(self.manifest.read_bytes(role))  # the bytes verified at load

        class Session:
            def run(self, feeds):
                return dict(zip(ev.output_names, ev.run(None, feeds)))

        return Session()


@pytest.fixture(scope="module")
def registered():
    register_score(ScoreSpec("mae", mae_numpy, mae_torch, "mean |z0 - z0_hat|"))  # the one registry line
    register_backend(BackendSpec("numpy-ref", NumpyReferenceBackend, lambda: None, ("fp32",), chunk=8))  # and this
    yield
    unregister_score("mae")
    unregister_backend("numpy-ref")


@pytest.fixture(scope="module")
def toy_bundle(registered, tiny_run, tmp_path_factory):
    from dlsr_deploy.export.exporter import export_bundle

    run, _, ood = tiny_run
    out = tmp_path_factory.mktemp("toy") / "b"
    export_bundle(run, out, verify_ood=[str(ood)], n_verify=16, quiet=True)
    return out


def test_the_toy_score_and_backend_run_through_detector(toy_bundle, tiny_run):
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.runtime import Detector

    m = read_manifest(toy_bundle)
    assert "mae" in m.score_names and "numpy-ref" in m.backends
    assert m.data["scores"]["definitions"]["mae"] == "mean |z0 - z0_hat|" and m.parity_passed
    images = np.load(tiny_run[2])["images"][:6]
    with Detector.load(toy_bundle, backend="ort-cpu") as ort, Detector.load(toy_bundle, backend="numpy-ref") as toy:
        a, b = ort.score(images, ["mae", "gauss_layer"]), toy.score(images, ["mae", "gauss_layer"])
        assert toy.self_check_report["passed"]  # the golden set replays on the new backend too
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-3)


def test_the_toy_backend_and_score_in_the_bench_and_dlsr_score(toy_bundle, tiny_run, tmp_path):
    from click.testing import CliRunner

    from dlsr_deploy.bench.harness import BenchRequest, run_bench
    from dlsr_deploy.bench.timing import TimingSettings
    from dlsr_deploy.cli import score

    _, id_path, ood = tiny_run
    req = BenchRequest(
        [toy_bundle],
        np.load(id_path)["images"][:8],
        [("ood", np.load(ood)["images"][:8])],
        batch_sizes=(2,),
        backends=["numpy-ref", "ort-cpu"],
        paths=("all",),
        eager=False,
        timing=TimingSettings(warmup_s=0.0, min_duration=0.01, min_iters=1, rounds=1),
        quiet=True,
    )
    rows = {r.backend: r for r in run_bench(req).rows}
    assert rows["numpy-ref"].status == "ok" and rows["numpy-ref"].p50_ms > 0 and "ort-cpu" in rows
    out = tmp_path / "s.json"
    r = CliRunner().invoke(
        score, [str(toy_bundle), str(ood), "--backend", "numpy-ref", "--scores", "mae", "--out", str(out), "--quiet"]
    )
    assert r.exit_code == 0, r.output
    row = json.loads(out.read_text())["results"][0]
    # the headline rides along: the row's normalized / is_ood are its, and the row says so
    head = json.loads((toy_bundle / "manifest.json").read_text())["scores"]["headline"]
    assert set(row) == {"image", "score_mae", f"score_{head}", "normalized", "is_ood", "error"} and row["score_mae"] > 0
