"""Contract suites per registry (issue 30): every registered backend, reconstruction score and density
head goes through the same checks, so a new one is held to what the built-ins promise.

Backends (skipped with the availability probe's reason where this machine cannot run one): the
self-check passes on the golden set; a headline-only call on a density headline never opens the
denoiser; close() releases every session and refuses further calls; a Detector pickles by re-opening
its bundle and scores the same. Reconstruction scores: numpy and torch implementations agree, one
value per row, finite, and a perfect reconstruction scores no higher than a noisy one (higher = more
OOD). Density heads: finite, non-negative, higher far from the training data, the same after a
save / load round trip."""

import pickle

import numpy as np
import pytest

from dlsr_deploy.registry import (
    HEADS,
    SCORES,
    backend_names,
    backend_spec,
    density_heads,
    reconstruction_scores,
    resolve,
)

SIZES = (16, 24, 40)


def _probe(name: str):
    try:
        return resolve(backend_spec(name).probe)()
    except Exception as exc:  # noqa: BLE001 - a probe that raises is a reason too
        return f"probe failed ({exc.__class__.__name__}: {exc})"


def _bundle_for(name: str, bundles):
    spec = backend_spec(name)
    prec = next((p for p in ("fp32", "fp16") if p in spec.precisions), None)
    if prec is None:
        pytest.skip(f"{name} runs {spec.precisions} bundles; the test bundles are fp32 / fp16")
    return bundles[prec]


@pytest.mark.parametrize("name", backend_names())
def test_backend_contract(name, bundles, tiny_run):
    from dlsr_deploy.errors import InputError
    from dlsr_deploy.runtime import Detector

    reason = _probe(name)
    if reason:
        pytest.skip(f"{name}: {reason}")
    bundle = _bundle_for(name, bundles)
    images = np.load(tiny_run[2])["images"][:6]
    with Detector.load(bundle, backend=name, self_check="always") as det:
        assert det.self_check_report["passed"], det.self_check_report
    det = Detector.load(bundle, backend=name, self_check="never")
    assert det.score_name in HEADS  # the tiny run's headline is a density head (small-data default)
    out = det.predict(images)
    opened = set(det.backend._sessions)
    assert "denoiser" not in opened and "pipeline" not in opened, f"a headline-only call opened {sorted(opened)}"
    again = pickle.loads(pickle.dumps(det))
    try:
        np.testing.assert_allclose(again.predict(images)["score"], out["score"], rtol=1e-5)
    finally:
        again.close()
    backend = det.backend
    det.close()
    assert backend._sessions == {} and det.backend is None
    with pytest.raises(InputError, match="closed"):
        det.predict(images)


@pytest.mark.parametrize("name", reconstruction_scores())
def test_reconstruction_score_contract(name):
    import torch

    spec = SCORES[name]
    rng = np.random.default_rng(0)
    z0 = rng.normal(size=(32, sum(SIZES))).astype(np.float32)
    noisy = z0 + rng.normal(scale=0.5, size=z0.shape).astype(np.float32)
    a = np.asarray(resolve(spec.numpy)(z0, noisy, SIZES, spec.options), np.float64)
    b = resolve(spec.torch)(torch.from_numpy(z0), torch.from_numpy(noisy), SIZES, spec.options).numpy()
    assert a.shape == (32,) and np.all(np.isfinite(a)), f"{name}: expected 32 finite values, got {a.shape}"
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    perfect = np.asarray(resolve(spec.numpy)(z0, z0.copy(), SIZES, spec.options), np.float64)
    assert np.all(perfect <= a + 1e-9), f"{name}: a perfect reconstruction must not score higher (more OOD)"
    assert spec.definition


@pytest.mark.parametrize("name", density_heads())
def test_density_head_contract(name, tmp_path):
    from dlsr_deploy.scoring import DensityHead, load_density_heads, save_density_heads

    rng = np.random.default_rng(0)
    scale = np.linspace(0.3, 2.0, sum(SIZES))  # anisotropic: a unit-sphere head (maha_l2) sees directions too
    z = 2.0 + rng.normal(size=(400, sum(SIZES))) * scale
    head = DensityHead.fit(name, z, SIZES)
    near = head.score(2.0 + rng.normal(size=(50, sum(SIZES))) * scale)
    far = head.score(2.0 + rng.normal(size=(50, sum(SIZES))) * scale[::-1])  # another shape of data
    assert near.shape == (50,) and np.all(np.isfinite(near)) and np.all(near >= 0)
    assert np.median(far) > np.median(near), f"{name}: points far from the training data must score higher"
    save_density_heads(tmp_path / "d.npz", {name: head})
    back = load_density_heads(tmp_path / "d.npz")[name]
    np.testing.assert_array_equal(back.score(z[:5]), head.score(z[:5]))
    assert HEADS[name].definition


def test_the_contract_suites_see_every_registered_extension():
    """A plug-in registered at import time is in the parametrisation: the suites read the registries."""
    assert {"ort-cpu", "openvino"} <= set(backend_names()) and {"mfsim", "mse"} <= set(reconstruction_scores())
    assert {"maha_ridge", "gauss_layer"} <= set(density_heads())
