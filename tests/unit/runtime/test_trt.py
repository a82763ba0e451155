"""TensorRT paths. The engine-cache rules run everywhere; building and running engines
needs TensorRT and an NVIDIA GPU and is skipped (with the reason) when they are absent."""

import numpy as np
import pytest

from dlsr_deploy.runtime.engine_cache import BuildKey, EngineCache


def _key(**kw):
    base = dict(
        tensorrt="10.16.1",
        gpu="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
        profile=(1, 32, 256),
        onnx_sha256="ab" * 32,
        precision="fp16",
    )
    base.update(kw)
    return BuildKey(**base)


def test_engine_cache_reuses_only_matching_plans(tmp_path):
    cache = EngineCache(tmp_path, "bundle")
    key = _key()
    assert cache.lookup(key, "backbone")[0] is None
    plan = cache.store(key, "backbone", b"PLANBYTES")
    assert plan.read_bytes() == b"PLANBYTES"  # plan bytes are never modified
    assert "sm90-trt10.16.1" in str(plan.parent)
    assert cache.lookup(key, "backbone")[0] == plan
    for change in (dict(onnx_sha256="cd" * 32), dict(profile=(1, 8, 64)), dict(precision="fp32")):
        path, reason = cache.lookup(_key(**change), "backbone")
        assert path is None and "differs" in reason
    other = _key(tensorrt="11.4.0")
    path, reason = cache.lookup(other, "backbone")
    assert path is None and "trt10.16.1" in reason  # names the version the existing plan was built with


def test_engine_cache_detects_corrupt_plan_and_metadata(tmp_path):
    cache = EngineCache(tmp_path, "bundle")
    key = _key()
    plan = cache.store(key, "denoiser", b"PLAN")
    plan.write_bytes(b"PLAN-corrupted")
    path, reason = cache.lookup(key, "denoiser")
    assert path is None and "sha256" in reason
    cache.store(key, "denoiser", b"PLAN")
    cache.paths(key, "denoiser")[1].write_text("{broken")
    assert cache.lookup(key, "denoiser") == (None, "denoiser.build.json is corrupt")


def test_trt_backend_without_tensorrt_says_which_extra(bundles):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    from dlsr_deploy.errors import BackendUnavailable
    from dlsr_deploy.runtime import Detector

    with pytest.raises(BackendUnavailable, match=r"dlsr-deploy\[trt\]"):
        Detector.load(bundles["fp16"], backend="trt")


def _gpu_ready():
    try:
        import tensorrt  # noqa: F401

        from dlsr_deploy.runtime.cuda_mem import device_info

        device_info()
        return True
    except Exception:
        return False


trt_required = pytest.mark.skipif(
    not _gpu_ready(),
    reason="needs TensorRT (pip install 'dlsr-deploy[trt]') and an NVIDIA GPU; "
    "run tests/platform/gpu/gpu_check.sh on a GPU machine",
)


@pytest.mark.trt
@trt_required
def test_trt_engine_matches_ort_and_caches(bundles, tiny_run, tmp_path):
    from dlsr_deploy.runtime import Detector

    _, id_path, ood_path = tiny_run
    images = np.concatenate([np.load(id_path)["images"][:16], np.load(ood_path)["images"][:16]])
    for prec in ("fp32", "fp16"):
        with Detector.load(bundles[prec], backend="ort-cpu") as ref:
            r = ref.score(images, "all")
        with Detector.load(bundles[prec], backend="trt", engines_dir=tmp_path) as det:
            assert det.backend.build_info["backbone"]["reason"].startswith("no plan")
            g = det.score(images, "all")
            if prec == "fp16":
                assert det.backend.build_info["denoiser"]["layer_precisions"].get("fp16", 0) > 0
        from dlsr_deploy.parity import spearman

        assert spearman(r["mfsim"], g["mfsim"]) > (0.9999 if prec == "fp32" else 0.999)
        with Detector.load(bundles[prec], backend="trt", engines_dir=tmp_path, build=False) as det:
            assert det.backend.build_info["backbone"]["reason"].startswith("cached plan")


@pytest.mark.trt
@trt_required
def test_trt_cuda_graphs_give_the_same_scores(bundles, tiny_run, tmp_path):
    from dlsr_deploy.runtime import Detector

    _, id_path, _ = tiny_run
    images = np.load(id_path)["images"][:8]
    with Detector.load(bundles["fp16"], backend="trt", engines_dir=tmp_path) as plain:
        ref = plain.score(images, "all")
    with Detector.load(bundles["fp16"], backend="trt", engines_dir=tmp_path, cuda_graphs=True) as graphed:
        for _ in range(2):  # captured on the first call of a batch size, replayed after
            got = graphed.score(images, "all")
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
