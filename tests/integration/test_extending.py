"""Adding a backend, a score, a density head or an input kind is one new module + one registry line
(issues 20 and 30, README "Extending").

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
    export_bundle(run, out, verify_ood=[str(ood)], n_verify=16)
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


# --- a new density head: one fit function + one registry line ----------------------------------
def fit_maha_diag(z, sizes):
    """Diagonal Mahalanobis: each dimension's z-score, squared and summed."""
    return {"mean": z.mean(axis=0), "proj": np.diag(1.0 / (z.std(axis=0) + 1e-6))}


def test_a_new_density_head_is_one_function_and_one_registry_line(tiny_run, tmp_path):
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.model.reference import EagerReference
    from dlsr_deploy.registry import HeadSpec, register_head, unregister_head
    from dlsr_deploy.runtime import Detector

    register_head(HeadSpec("maha_diag", fit_maha_diag, "diagonal Mahalanobis"))  # the one registry line
    try:
        run, _, ood = tiny_run  # trained before the head existed: fitted from its training z0 at export
        out = tmp_path / "b"
        export_bundle(run, out, density=("maha_ridge", "maha_diag"), verify_ood=[str(ood)], n_verify=16)
        m = read_manifest(out)
        assert "maha_diag" in m.score_names and m.parity_passed
        assert m.data["scores"]["definitions"]["maha_diag"] == "diagonal Mahalanobis"
        images = np.load(ood)["images"][:6]
        with Detector.load(out, backend="ort-cpu") as det:
            got = det.score(images, ["maha_diag"])["maha_diag"]
        ref = EagerReference.from_run(run, ScoreConfig(), density=("maha_diag",), combos=[])
        np.testing.assert_allclose(got, ref.heads["maha_diag"].score(ref.z0(images)), rtol=1e-3)
    finally:
        unregister_head("maha_diag")


# --- a new input kind: one module's functions + one registry line --------------------------------
def npy_ids(path):
    return [f"{path}#{j}" for j in range(np.load(path, mmap_mode="r").shape[0])]


def npy_images(path):
    from dlsr_deploy.preprocess import as_images

    return as_images(np.load(path), path, pack=True)


def test_a_new_input_kind_is_its_functions_and_one_registry_line(toy_bundle, tiny_run, tmp_path):
    from click.testing import CliRunner

    from dlsr_deploy.cli import score
    from dlsr_deploy.errors import DataError
    from dlsr_deploy.input_kinds import InputKind, register_input_kind, unregister_input_kind
    from dlsr_deploy.inputs import list_inputs, read_listing

    images = np.load(tiny_run[2])["images"][:5]
    np.save(tmp_path / "x.npy", images)
    with pytest.raises(DataError, match="unsupported input"):
        list_inputs([tmp_path / "x.npy"])  # not a kind yet
    register_input_kind(InputKind("npy", (".npy",), npy_ids, npy_images, shape=lambda p: (32, 32)))  # the line
    try:
        listing = list_inputs([tmp_path / "x.npy"])
        assert listing.ids == [f"{tmp_path / 'x.npy'}#{j}" for j in range(5)] and set(listing.kinds) == {"npy"}
        got, kept, skipped = read_listing(listing, images.shape[1])
        assert np.array_equal(got, images) and kept == list(range(5)) and not skipped
        out = tmp_path / "rows.json"
        args = [str(toy_bundle), str(tmp_path / "x.npy"), "--backend", "ort-cpu", "--out", str(out), "--quiet"]
        r = CliRunner().invoke(score, args)
        assert r.exit_code == 0, r.output
        rows = json.loads(out.read_text())["results"]
        assert len(rows) == 5 and all(row["error"] == "" for row in rows)
    finally:
        unregister_input_kind("npy")
