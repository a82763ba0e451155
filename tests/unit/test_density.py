"""Density heads, combined scores and the headline choice (issue 11)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from dlsr_deploy.errors import ConfigError, InputError
from dlsr_deploy.manifest import read_manifest
from dlsr_deploy.scoring import (
    Combination,
    DensityHead,
    fit_density_heads,
    ledoit_wolf,
    load_density_heads,
    save_density_heads,
)

SIZES = (3, 5, 4)


def _z(n=400, seed=0):
    r = np.random.default_rng(seed)
    return r.normal(size=(n, sum(SIZES))) @ r.normal(size=(sum(SIZES), sum(SIZES)))


def test_ledoit_wolf_matches_scikit_learn():
    from sklearn.covariance import ledoit_wolf as sk_lw

    for n in (8, 50, 500):
        x = _z(n)
        x = x - x.mean(0)
        cov, s = ledoit_wolf(x)
        cov_ref, s_ref = sk_lw(x, assume_centered=True)
        assert s == pytest.approx(s_ref, rel=1e-10)
        np.testing.assert_allclose(cov, cov_ref, rtol=1e-10, atol=1e-12)


def test_density_heads_are_the_gaussians_they_claim():
    z = _z()
    heads = fit_density_heads(z, SIZES)
    x = _z(20, seed=1)
    # maha_ridge: plain Mahalanobis with the documented ridge
    mu = z.mean(0)
    cov = np.cov(z, rowvar=False)
    cov += 1e-6 * np.trace(cov) / len(cov) * np.eye(len(cov))
    d = x - mu
    np.testing.assert_allclose(
        heads["maha_ridge"].score(x), np.einsum("nd,de,ne->n", d, np.linalg.inv(cov), d), rtol=1e-8
    )
    # gauss_layer: the sum of one Ledoit-Wolf Gaussian per layer
    total, start = np.zeros(len(x)), 0
    for s in SIZES:
        zc = z[:, start : start + s] - z[:, start : start + s].mean(0)
        c, _ = ledoit_wolf(zc)
        dd = x[:, start : start + s] - z[:, start : start + s].mean(0)
        total += np.einsum("nd,de,ne->n", dd, np.linalg.inv(c), dd)
        start += s
    np.testing.assert_allclose(heads["gauss_layer"].score(x), total, rtol=1e-8)
    # l2 head scores l2-normalised inputs: scaling an input does not change it
    np.testing.assert_allclose(heads["maha_l2"].score(3.0 * x), heads["maha_l2"].score(x), rtol=1e-9)
    # the training mean scores lowest
    assert heads["maha_lw"].score(mu[None])[0] < heads["maha_lw"].score(x).min()


def test_density_heads_survive_singular_covariances_and_bad_input():
    z = _z(5)  # fewer samples than dimensions
    for h in fit_density_heads(z, SIZES).values():
        assert np.all(np.isfinite(h.score(_z(3, seed=2))))
    with pytest.raises(InputError, match="finite training features"):
        DensityHead.fit("maha_lw", np.full((4, 12), np.nan), SIZES)
    with pytest.raises(InputError, match="do not add up"):
        DensityHead.fit("gauss_layer", _z(), (3, 3))
    with pytest.raises(InputError, match="expected one of"):
        DensityHead.fit("knn", _z(), SIZES)


def test_density_heads_roundtrip(tmp_path):
    heads = fit_density_heads(_z(), SIZES)
    save_density_heads(tmp_path / "d.npz", heads)
    back = load_density_heads(tmp_path / "d.npz")
    assert sorted(back) == sorted(heads)
    x = _z(7, seed=3)
    for n, h in heads.items():
        np.testing.assert_array_equal(back[n].score(x), h.score(x))
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a readable density-head file"):
        load_density_heads(tmp_path / "bad.npz")


def test_combination_standardises_on_held_out_id():
    r = np.random.default_rng(0)
    hold = {"a": r.normal(10, 2, 1000), "b": r.normal(-3, 50, 1000)}
    for how in ("sum", "max"):
        c = Combination.fit(("a", "b"), how, hold)
        assert c.name == f"{how}_a_b"
        med = np.median(c.combine(hold))  # ID scores land near 0 (the max of two, a little above)
        assert (abs(med) < 0.1) if how == "sum" else (0 < med < 1)
        assert Combination.from_dict(c.to_dict()) == c
    c = Combination.fit(("a", "b"), "sum", hold)
    shifted = c.combine({"a": hold["a"] + 4, "b": hold["b"]})  # +4 = about 1.5 IQR on a
    assert np.median(shifted) > 0.5
    with pytest.raises(InputError, match="no held-out ID scores"):
        Combination.fit(("a", "c"), "sum", hold)
    with pytest.raises(InputError, match="'sum' or 'max'"):
        Combination.fit(("a", "b"), "mean", hold)


def test_bundle_density_outputs_are_fp32_and_match_eager(bundles, tiny_run):
    """Density heads and combinations are graph outputs computed in FP32 in the FP16 bundle,
    and equal the numpy heads of the run."""
    from dlsr_deploy.runtime import Detector

    run, id_path, ood_path = tiny_run
    m = read_manifest(bundles["fp16"])
    model = onnx.load(str(bundles["fp16"] / "denoiser.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    dens = [i for n, i in inits.items() if "density." in n]
    assert dens and all(i.data_type == onnx.TensorProto.FLOAT for i in dens)
    images = np.concatenate([np.load(id_path)["images"][:8], np.load(ood_path)["images"][:8]])
    heads = load_density_heads(run / "density.npz")
    with Detector.load(bundles["fp32"], backend="ort-cpu") as det:
        z0 = det.backend.run_graph("backbone", {"images": images})["z0"]
        got = det.score(images, "all")
    from dlsr_deploy.scoring import BUNDLE_HEADS

    assert m.density_heads == list(BUNDLE_HEADS)
    for n in m.density_heads:
        np.testing.assert_allclose(got[n], heads[n].score(z0), rtol=2e-4)
    for c in m.combinations:
        comb = Combination.from_dict(c)
        np.testing.assert_allclose(
            got[comb.name], comb.combine({k: got[k].astype(np.float64) for k in comb.components}), rtol=1e-4, atol=1e-4
        )


def test_int8_keeps_density_heads_fp32(tiny_run, tmp_path):
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.export.onnx_utils import fp32_matmuls

    run, _, ood = tiny_run
    export_bundle(run, tmp_path / "int8", int8=True, verify_ood=[str(ood)], n_verify=32, verify=False)
    model = onnx.load(str(tmp_path / "int8" / "denoiser.onnx"))
    # maha_ridge, maha_lw: one MatMul each; gauss_layer, gauss_layer_dn: one per tap layer (5); none quantized
    assert len(fp32_matmuls(model)) == 1 + 1 + 5 + 5
    assert not [n for n in onnx.load(str(tmp_path / "int8" / "heads.onnx")).graph.node if "Integer" in n.op_type]


def test_headline_auto_user_and_errors(tiny_run, tmp_path):
    from dlsr_deploy.export.exporter import choose_headline, export_bundle

    run, _, ood = tiny_run
    m = export_bundle(run, tmp_path / "auto", headline="auto", verify_ood=[str(ood)], n_verify=32)
    choice = m["scores"]["headline_choice"]
    # the selection rule's record: where it started, every step, every candidate's intervals
    from dlsr_deploy.scoring import SMALL_N_HEADLINE

    # the incumbent is the package default for the heads' training size (72 vectors, 512 dims)
    assert choice["how"].startswith("auto") and choice["incumbent"] == SMALL_N_HEADLINE and "rule" in choice
    replaced = [s["candidate"] for s in choice["steps"] if s["replaces"]]
    assert m["scores"]["headline"] == (replaced[-1] if replaced else SMALL_N_HEADLINE)
    row = choice["table"][m["scores"]["headline"]][Path(ood).stem]
    assert row["lo"] <= row["auroc"] <= row["hi"]
    assert m["threshold"]["score"] == m["scores"]["headline"]
    with pytest.raises(ConfigError, match="needs known-OOD images"):
        export_bundle(run, tmp_path / "x", headline="auto")
    with pytest.raises(ConfigError, match="headline: expected one of"):
        choose_headline("nope", ["mfsim", "mse"], {}, {})
    assert choose_headline("mse", ["mfsim", "mse"], {}, {})[0] == "mse"
    assert choose_headline(None, ["mfsim", "mse"], {}, {})[0] == "mfsim"  # no density heads: fallback


def test_default_headline_follows_the_training_size():
    """maha_ridge from SMALL_N_RATIO training vectors per dimension, gauss_layer below
    (research/headline/results/heads_small_n.md); an unknown size keeps the large-data default."""
    from dlsr_deploy.export.calibrate import default_headline
    from dlsr_deploy.scoring import DEFAULT_HEADLINE, SMALL_N_HEADLINE, SMALL_N_RATIO, default_headline_for

    assert default_headline_for(45000, 560) == DEFAULT_HEADLINE == default_headline_for(None, None)
    assert default_headline_for(SMALL_N_RATIO * 560, 560) == DEFAULT_HEADLINE
    assert default_headline_for(SMALL_N_RATIO * 560 - 1, 560) == SMALL_N_HEADLINE
    names = ["mfsim", "maha_ridge", "gauss_layer"]
    head, how = default_headline(names, (500, 560))
    assert head == SMALL_N_HEADLINE and "500 vectors of 560 dims" in how["how"]
    assert default_headline(["mfsim", "maha_ridge"], (500, 560))[0] == "maha_ridge"  # not in the bundle: fallback


def test_density_heads_keep_their_training_size(tmp_path):
    from dlsr_deploy.scoring import fit_density_heads, load_density_heads, save_density_heads

    z = np.random.default_rng(0).standard_normal((40, 6))
    save_density_heads(tmp_path / "d.npz", fit_density_heads(z, [2, 4], ["maha_ridge", "gauss_layer"]))
    assert {h.info["n_fit"] for h in load_density_heads(tmp_path / "d.npz").values()} == {40}


def test_an_older_density_file_takes_its_training_size_from_train_z0(tmp_path):
    """density.npz written before it recorded n_fit: the count comes from train_z0.npy, so an old
    small run still gets the small-data default headline rather than the large-data one."""
    from dlsr_deploy.model.reference import run_density_heads
    from dlsr_deploy.scoring import fit_density_heads, save_density_heads

    z = np.random.default_rng(0).standard_normal((40, 6))
    heads = fit_density_heads(z, [2, 4], ["maha_ridge"])
    save_density_heads(tmp_path / "density.npz", {k: replace(h, info={}) for k, h in heads.items()})
    np.save(tmp_path / "train_z0.npy", z)
    assert run_density_heads(tmp_path, [2, 4])["maha_ridge"].info["n_fit"] == 40
