"""Property-based tests (hypothesis): any image array and any manifest edit gives either a
correct result or the package's own one-line error, never another exception."""

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dlsr_deploy.errors import BundleError, InputError
from dlsr_deploy.manifest import validate
from dlsr_deploy.preprocess import as_batch, as_images
from dlsr_deploy.scoring import threshold_at_tpr

shapes = hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=6)
dtypes = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(dtypes, shapes))
def test_as_images_returns_rgb_uint8_or_raises_input_error(arr):
    try:
        out = as_images(arr)
    except InputError as exc:
        assert str(exc).startswith("images:")
        return
    assert out.dtype == np.uint8 and out.ndim == 4 and out.shape[-1] == 3 and len(out) >= 1
    src = arr[None] if arr.ndim == 3 else arr
    assert out.shape[:3] == src.shape[:3]
    if src.dtype == np.uint8 and src.shape[-1] in (3, 4):
        np.testing.assert_array_equal(out, src[..., :3])


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3, 4]))
    ),
    st.sampled_from([4, 8]),
)
def test_as_batch_always_reaches_the_native_size(arr, size):
    out = as_batch(arr, size)
    assert out.shape == (len(arr), size, size, 3) and out.dtype == np.uint8


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-1e6, 1e6)), st.floats(0.01, 0.99))
def test_threshold_keeps_the_target_share_of_id_scores(scores, tpr):
    t = threshold_at_tpr(scores, tpr)
    assert np.mean(scores <= t) >= tpr - 1.0 / len(scores) - 1e-9


def _manifest():
    return {
        "schema_version": 1,
        "name": "b",
        "files": {
            "backbone": {
                "name": "backbone.onnx",
                "sha256": "0" * 64,
                "bytes": 10,
                "inputs": [{"name": "images", "dtype": "uint8", "shape": ["batch", 32, 32, 3]}],
                "outputs": [],
            },
            "denoiser": {
                "name": "denoiser.onnx",
                "sha256": "1" * 64,
                "bytes": 10,
                "inputs": [],
                "outputs": [{"name": "score_mfsim"}, {"name": "score_mse"}],
            },
        },
        "preprocessing": {"native_size": 32},
        "precision": {"mode": "fp32"},
        "scores": {"names": ["mfsim", "mse"], "headline": "mfsim"},
        "threshold": {"score": "mfsim", "value": 0.5, "center": 0.1, "scale": 0.4},
        "config": {},
        "batch_profile": {"min": 1, "opt": 32, "max": 256},
    }


PATHS = [
    ("name",),
    ("files",),
    ("files", "denoiser"),
    ("files", "denoiser", "sha256"),
    ("files", "backbone", "bytes"),
    ("preprocessing", "native_size"),
    ("precision", "mode"),
    ("scores", "names"),
    ("scores", "headline"),
    ("threshold", "value"),
    ("threshold", "scale"),
    ("threshold", "score"),
    ("batch_profile",),
    ("batch_profile", "max"),
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=6,
)


def test_the_valid_manifest_validates(tmp_path):
    validate(_manifest(), tmp_path / "manifest.json")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(PATHS), json_values)
def test_any_manifest_edit_is_valid_or_a_bundle_error(tmp_path, path, value):
    data = copy.deepcopy(_manifest())
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    try:
        validate(data, tmp_path / "manifest.json")
    except BundleError as exc:
        assert "manifest.json" in str(exc)


@pytest.mark.parametrize(
    "path,value,msg",
    [
        (("threshold", "value"), "1e9", "threshold.value"),
        (("files", "denoiser", "sha256"), None, "sha256"),
        (("scores", "names"), ["mfsim", "mse", "ghost"], "no graph outputs"),
        (("preprocessing", "native_size"), 64, "must match"),
    ],
)
def test_manifest_errors_name_the_field(tmp_path, path, value, msg):
    data = _manifest()
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(BundleError, match=msg):
        validate(data, tmp_path / "manifest.json")
