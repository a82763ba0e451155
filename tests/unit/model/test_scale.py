"""Several training sources, flipped views and the ORT feature engine (issue 11)."""

import json

import numpy as np
import pytest

from dlsr_deploy.config import FeatureConfig, TrainConfig
from dlsr_deploy.data import expand_sources, load_sources
from dlsr_deploy.errors import DataError


def _pack(path, n, seed):
    np.savez(path, images=np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    return path


def test_expand_sources_and_load_sources(tmp_path):
    packs = tmp_path / "packs"
    packs.mkdir()
    b, a = _pack(packs / "b.npz", 3, 1), _pack(packs / "a.npz", 2, 0)
    assert expand_sources([str(packs)]) == [str(a), str(b)]  # sorted by name
    s = load_sources([str(packs)])
    assert s.images.shape == (5, 32, 32, 3) and s.name == "a+b"
    np.testing.assert_array_equal(s.images[:2], np.load(a)["images"])
    with pytest.raises(DataError, match="given twice"):
        expand_sources([str(a), str(packs)])
    with pytest.raises(DataError, match="no data source"):
        expand_sources([])


def test_ort_feature_engine_matches_eager_and_has_its_own_cache_key(tmp_path):
    from dlsr_deploy.model.features import extract_features
    from dlsr_deploy.pipeline import feature_engine_factory

    cfg = FeatureConfig(backbone="efficientnet-lite0", input_size=64)
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    reports = []
    eager = extract_features(images, cfg, cache_dir=tmp_path, progress=False)
    ort = extract_features(
        images,
        cfg,
        cache_dir=tmp_path,
        progress=False,
        engine="ort",
        engine_factory=feature_engine_factory(cfg, "ort", reports),
    )
    rel = np.linalg.norm(ort - eager, axis=1) / np.linalg.norm(eager, axis=1)
    assert rel.max() < 1e-4
    assert reports and reports[0]["passed"] and reports[0]["max_rel_l2"] < 1e-4
    names = sorted(p.name for p in tmp_path.glob("*.npy"))
    assert len(names) == 2 and sum(n.endswith("-ort.npy") for n in names) == 1


def test_failed_ort_parity_falls_back_to_eager(tmp_path):
    from dlsr_deploy.model.features import extract_features

    cfg = FeatureConfig(backbone="efficientnet-lite0", input_size=64)
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    z = extract_features(images, cfg, cache_dir=tmp_path, progress=False, engine="ort", engine_factory=lambda x: None)
    assert [p.name.endswith("-ort.npy") for p in tmp_path.glob("*.npy")] == [False]  # stored under the eager key
    np.testing.assert_array_equal(z, extract_features(images, cfg, cache_dir=tmp_path, progress=False))


def test_train_on_two_sources_with_flips(tmp_path):
    from dlsr_deploy.pipeline import run_train

    a, b = _pack(tmp_path / "a.npz", 24, 0), _pack(tmp_path / "b.npz", 16, 1)
    small = {"preset": "small", "tcfg": TrainConfig(epochs=1, batch_size=32), "holdout": 0.25}
    info = run_train(
        [str(a), str(b)],
        tmp_path / "run",
        FeatureConfig(backbone="efficientnet-lite0", input_size=64),
        cache_dir=tmp_path / "cache",
        flip=True,
        **small,
    )
    assert info["n_images"] == 40 and info["n_holdout"] == 10 and info["n_train_vectors"] == 60
    assert info["data"] == [str(a.resolve()), str(b.resolve())] and info["flip"] is True
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["n_train_vectors"] == 60
    assert np.load(tmp_path / "run" / "train_z0.npy").shape == (60, 512)
    assert (tmp_path / "run" / "density.npz").exists()
