"""FP16 graphs computed in FP32 on CPUs with native half-precision kernels (runtime/fp16_upcast.py)."""

import numpy as np
import onnx
import pytest
from conftest import tiny_images
from onnx import TensorProto, helper, numpy_helper

from dlsr_deploy.runtime.fp16_upcast import Fp16UpcastError, parse, serialize, upcast_model


def _tiny_fp16_model(raw_weights: bool = True) -> onnx.ModelProto:
    """x fp32 -> Cast fp16 -> MatMul W (fp16) -> Add c (fp16 Constant, int32_data) -> Cast fp32 -> y."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3)).astype(np.float16)
    init = numpy_helper.from_array(w, "W")
    if not raw_weights:  # the other storage ONNX allows for FP16: bit patterns in int32_data
        init = helper.make_tensor("W", TensorProto.FLOAT16, w.shape, w.astype(np.float32).ravel().tolist())
        assert init.int32_data and not init.raw_data
    c = helper.make_tensor("c", TensorProto.FLOAT16, [3], [0.5, -1.0, 2.0])  # stored as int32_data
    nodes = [
        helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["xh", "W"], ["m"]),
        helper.make_node("Constant", [], ["cst"], value=c),
        helper.make_node("Add", ["m", "cst"], ["a"]),
        helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])],
        [init],
        value_info=[helper.make_tensor_value_info("m", TensorProto.FLOAT16, ["b", 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _fp16_left(model: onnx.ModelProto) -> list:
    g = model.graph
    values = list(g.value_info) + list(g.input) + list(g.output)
    tensors = list(g.initializer) + [a.t for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    return (
        [t.name or "constant" for t in tensors if t.data_type == TensorProto.FLOAT16]
        + [v.name for v in values if v.type.tensor_type.elem_type == TensorProto.FLOAT16]
        + [n.name or n.op_type for n in g.node for a in n.attribute if a.name == "to" and a.i == TensorProto.FLOAT16]
    )


@pytest.mark.parametrize("raw", [True, False])
def test_upcast_leaves_no_fp16_and_computes_the_same_function_in_fp32(raw):
    ort = pytest.importorskip("onnxruntime")
    model = _tiny_fp16_model(raw)
    data = model.SerializeToString()
    assert serialize(parse(data)) == data  # the wire-format walk is lossless
    out, counts = upcast_model(data)
    up = onnx.load_from_string(out)
    onnx.checker.check_model(up, full_check=True)
    assert _fp16_left(model) and not _fp16_left(up)
    assert counts == {"tensors": 2, "casts": 1, "values": 1}
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    w = numpy_helper.to_array(model.graph.initializer[0]).astype(np.float32)  # the FP16 weights, exactly
    expected = x @ w + np.array([0.5, -1, 2], np.float32)
    got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == np.float32 and np.allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_upcast_refuses_what_it_cannot_rewrite():
    model = _tiny_fp16_model()
    ext = model.graph.initializer[0]
    ext.data_location = TensorProto.EXTERNAL
    with pytest.raises(Fp16UpcastError, match="external tensor data"):
        upcast_model(model.SerializeToString())
    with pytest.raises(Fp16UpcastError):
        upcast_model(b"\x0a\xff")  # truncated
    bad = _tiny_fp16_model()
    bad.graph.initializer[0].raw_data = b"\x00\x3c\x00"  # an odd number of bytes for FP16 values
    with pytest.raises(Fp16UpcastError):
        upcast_model(bad.SerializeToString())
    rng = np.random.default_rng(0)
    for _ in range(200):  # random bytes: a clean refusal or a rewrite, never another exception
        try:
            upcast_model(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes())
        except Fp16UpcastError:
            pass


def test_ort_cpu_sessions_open_fp16_bundles_in_fp32_with_the_same_outputs(bundles):
    """CPU sessions of an FP16 bundle run the rewritten graphs (what ONNX Runtime's x86-64 fallback
    computes, without its casts; on ARM64 instead of half-precision kernels) and pass the self-check;
    FP32 bundles are never touched."""
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.runtime.detector import Detector
    from dlsr_deploy.runtime.ort import OrtSession

    x = tiny_images(8)
    with Detector.load(bundles["fp16"], backend="ort-cpu", self_check="always") as det:
        session = det.backend.session("backbone")
        assert session.upcast and session.upcast["tensors"] > 0
        z0 = session.run({"images": x})["z0"]
        both = det.score(x, scores="all")
    path = bundles["fp16"] / read_manifest(bundles["fp16"]).files["backbone"]["name"]
    as_is = OrtSession(path, "cpu", upcast_fp16=False)
    assert as_is.upcast is None
    ref = as_is.run({"images": x})["z0"]
    assert np.max(np.linalg.norm(z0 - ref, axis=1) / np.linalg.norm(ref, axis=1)) < 1e-5
    assert all(np.isfinite(v).all() for v in both.values())
    with Detector.load(bundles["fp32"], backend="ort-cpu", self_check="never") as det:
        assert det.backend.session("backbone").upcast is None
