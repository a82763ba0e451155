"""ONNX hygiene: export, simplify, check, count, FP16 share, TensorRT operator support."""

from __future__ import annotations

import io
import logging
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

OPSET = 18

# Operators TensorRT's ONNX parser supports (onnx-tensorrt docs/operators.md, TensorRT
# 10.x; 11.x keeps them). Only the ones a DLSR graph can contain need to be exact here;
# anything outside the list is reported so a GPU owner knows before building.
TRT_SUPPORTED_OPS = frozenset(
    """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
    Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GroupNormalization GRU HardSigmoid HardSwish Identity If
    InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
    LogSoftmax Loop LpNormalization LpPool LRN LSTM MatMul Max MaxPool Mean Min Mish Mod Mul Neg
    NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
    RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1
    ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter
    ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
    Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
    Transpose Trilu Unsqueeze Upsample Where Xor""".split()
)

COMPUTE_OPS = frozenset(
    {
        "Conv",
        "MatMul",
        "Gemm",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Clip",
        "Relu",
        "Sigmoid",
        "Sqrt",
        "Pow",
        "ReduceMean",
        "ReduceSum",
        "Neg",
        "Exp",
        "Tanh",
        "Max",
        "Min",
        "Reciprocal",
        "Resize",
    }
)


def torch_to_onnx(
    module, args: Tuple, input_names: Sequence[str], output_names: Sequence[str], dynamic_batch: bool = True
) -> bytes:
    import torch

    buf = io.BytesIO()
    axes = {n: {0: "batch"} for n in list(input_names) + list(output_names)} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return buf.getvalue()


def simplify(model_bytes: bytes):
    """onnxslim (constant folding, dead-code and shape simplification) -> onnx.ModelProto."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    try:
        import onnxslim

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = onnxslim.slim(model)
    except ImportError:  # pragma: no cover - onnxslim is in the [train] extra
        warnings.warn("onnxslim not installed; the graph is exported unsimplified", stacklevel=2)
    return model


def check(model) -> None:
    """Full onnx.checker pass including strict shape inference."""
    import onnx

    onnx.checker.check_model(model, full_check=True)


def op_counts(model) -> Dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items(), key=lambda kv: -kv[1]))


def unsupported_by_trt(model) -> List[str]:
    return sorted(
        {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx") and n.op_type not in TRT_SUPPORTED_OPS}
    )


HEAVY_OPS = frozenset({"Conv", "MatMul", "Gemm"})


def fp16_share(model, ops=COMPUTE_OPS) -> float:
    """Share of compute nodes (Conv, MatMul, elementwise, ...) whose first output is FP16;
    with ops=HEAVY_OPS, the share among Conv / MatMul / Gemm (where the FLOPs are). The
    density heads' MatMuls are FP32 by design and not counted."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        types[vi.name] = vi.type.tensor_type.elem_type
    fp32_by_design = set(fp32_matmuls(model))
    compute = [n for n in inferred.graph.node if n.op_type in ops and n.name not in fp32_by_design]
    if not compute:
        return 0.0
    half = sum(1 for n in compute if types.get(n.output[0]) == TensorProto.FLOAT16)
    return half / len(compute)


def io_spec(model) -> Tuple[List[dict], List[dict]]:
    from onnx import helper

    def spec(v):
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        return {"name": v.name, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": shape}

    return [spec(v) for v in model.graph.input], [spec(v) for v in model.graph.output]


def fix_dims(model, known: Dict[str, List]) -> None:
    """Replace exporter-generated symbolic dims by the known static sizes (None keeps 'batch')."""
    for v in list(model.graph.input) + list(model.graph.output):
        if v.name not in known:
            continue
        for d, size in zip(v.type.tensor_type.shape.dim, known[v.name]):
            if size is not None:
                d.ClearField("dim_param")
                d.dim_value = int(size)


def fp32_matmuls(model, weight_marker: str = "density.") -> List[str]:
    """Names of the MatMul nodes whose weight initializer name contains `weight_marker` (the
    density heads: they stay FP32 in every bundle)."""
    inits = {i.name for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and any(x in inits and weight_marker in x for x in n.input)
    ]


@contextmanager
def _silenced_logger(name: Optional[str] = None):
    """Errors only from one logger (the root logger by default) while the block runs: the
    quantizers log a generic "consider pre-processing" warning (ONNX Runtime) or one INFO line
    per node they leave alone (NNCF)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _quantized(model, quantize):
    """Run one of ONNX Runtime's file-based quantizers on an in-memory model: quantize(src, dst)."""
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.onnx", Path(d) / "out.onnx"
        onnx.save(model, str(src))
        with _silenced_logger():
            quantize(str(src), str(dst))
        return onnx.load(str(dst))


def quantize_matmuls_int8(model):
    """Dynamic 8-bit quantisation of the MatMul weights (ONNX Runtime's quantizer): weights
    stored uint8 per output channel, activations quantized on the fly. Only MatMul nodes with a
    constant weight are touched; norms, DDIM arithmetic, density heads and score reductions
    stay FP32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # uint8 weights (asymmetric, per output channel) with uint8 activations: ONNX Runtime's
    # U8U8 kernels multiply in 16 bits on every x86 CPU, so no product can saturate. The
    # U8S8 default uses vpmaddubsw on CPUs without VNNI, whose saturating 16-bit pair sums
    # made the same bundle pass parity on AVX-512-VNNI and fail it on AVX2 (4 of 64 flips).
    # Measured on the test model: U8S8 0 flips, U8S8 reduce_range 2, U8U8 1 (rank 1.000000).
    return _quantized(
        model,
        lambda src, dst: quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QUInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=fp32_matmuls(model),
        ),
    )


def quantize_matmuls_weight_only(model, bits: int = 8, block: int = 32):
    """Weight-only 8-bit denoiser MatMuls (ONNX Runtime's MatMulNBits, com.microsoft): weights
    int8, symmetric, one scale per 32 inputs of each output column; activations quantized per
    block to int8 inside the kernel (accuracy_level 4). Built for batch 1, where the FP32
    denoiser only streams its 278 MB of weights per call (benchmarks/README.md, suite roofline): a
    quarter of the bytes, and no separate dynamic-quantization pass. Density heads stay FP32.
    ONNX Runtime only (OpenVINO and TensorRT do not run the contrib op)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(
        model, bits=bits, block_size=block, is_symmetric=True, accuracy_level=4, nodes_to_exclude=fp32_matmuls(model)
    )
    with _silenced_logger():
        q.process()
    return q.model.model


# what the static INT8 backbone quantizes: Clip (ReLU6) with its Conv, so the conv's output
# range is the activation's [0, 6], not the raw conv's (-90..90 at the stem: 1.26 per step, which
# made z0 67 % wrong), and the residual Adds, so blocks stay in 8 bits between convs
INT8_BACKBONE_OPS = ("Conv", "Clip", "Add")


def _block_of(name: str) -> Optional[int]:
    import re

    m = re.search(r"_blocks\.(\d+)/", name) or re.search(r"/layer(\d+)", name)
    return int(m.group(1)) if m else None


def backbone_fp32_nodes(model, from_block: int) -> List[str]:
    """Quantizable nodes that stay FP32 when blocks >= from_block are quantized: the stem and
    every block before from_block (by the exported module path `_blocks.N` / `layerN`)."""
    out = []
    for n in model.graph.node:
        b = _block_of(n.name)
        if n.op_type in INT8_BACKBONE_OPS and (b is None or b < from_block):
            out.append(n.name)
    return out


def quantize_backbone_int8(model, calib_images: np.ndarray, from_block: int = 1, batch: int = 16):
    """Static INT8 (QDQ) of the backbone blocks >= from_block, calibrated on held-out ID images.

    Activations uint8 per tensor (min/max of the calibration run), weights int8 per output
    channel with reduce_range (7 bits): on CPUs without VNNI, ONNX Runtime's u8 x s8 kernels
    (vpmaddubsw) add two products in 16 bits, and 255 x 64 x 2 = 32,640 cannot saturate, so the
    numbers do not depend on the instruction set. Only Conv / Clip / Add of those blocks are
    quantized: the stem (its input is the resized image, where 8-bit steps add texture the
    features react to), earlier blocks, the in-graph preprocessing, the pooling, the per-layer
    z-score and everything after stay FP32. research/precision/results/int8_backbone.md measures what
    each choice costs in accuracy and gains in time."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(range(0, len(calib_images), batch))

        def get_next(self):
            i = next(self.batches, None)
            return None if i is None else {"images": calib_images[i : i + batch]}

    return _quantized(
        model,
        lambda src, dst: quantize_static(
            src,
            dst,
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=list(INT8_BACKBONE_OPS),
            nodes_to_exclude=backbone_fp32_nodes(model, from_block),
            calibrate_method=CalibrationMethod.MinMax,
        ),
    )


def quantize_matmul_weights_dq(model):
    """Weight-only 8-bit denoiser for OpenVINO: every MatMul weight (density heads excepted)
    stored int8, symmetric, one scale per output column, behind a standard DequantizeLinear.
    OpenVINO's CPU plugin keeps such weights compressed and decompresses them inside its
    FullyConnected kernel (a quarter of the bytes the bandwidth-bound batch-1 denoiser streams);
    activations stay FP32. ONNX Runtime folds the DequantizeLinear into FP32 weights, so it runs
    the same numbers at FP32 speed. A weight shared by the K denoising steps is stored once."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    skip = set(fp32_matmuls(model))
    done, nodes = set(), []
    for n in model.graph.node:
        w_name = n.input[1] if n.op_type == "MatMul" and len(n.input) == 2 else None
        if w_name in inits and n.name not in skip and w_name not in done:
            w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
            if w.ndim == 2:
                scale = np.abs(w).max(axis=0) / 127.0
                scale[scale == 0] = 1.0
                q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
                model.graph.initializer.remove(inits[w_name])
                model.graph.initializer.extend(
                    [numpy_helper.from_array(q, w_name + "_i8"), numpy_helper.from_array(scale, w_name + "_scale")]
                )
                dq = helper.make_node(
                    "DequantizeLinear", [w_name + "_i8", w_name + "_scale"], [w_name + "_dq"], w_name + "_dq", axis=1
                )
                nodes.append(dq)
                done.add(w_name)
        if w_name in done:
            n.input[1] = w_name + "_dq"
        nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def backbone_tap_nodes(model) -> List[str]:
    """The block nodes whose outputs the pooling reads (the multi-layer taps), and every node of
    the last block (its output is the widest tap: 320 of z0's 512 values on EfficientNet-Lite0)."""
    prod = {o: n for n in model.graph.node for o in n.output}
    taps = set()
    for n in model.graph.node:
        if _block_of(n.name) is None:
            for i in n.input:
                p = prod.get(i)
                if p is not None and _block_of(p.name) is not None:
                    taps.add(p.name)
    last = max((b for b in map(_block_of, (n.name for n in model.graph.node)) if b is not None), default=None)
    return sorted(taps | {n.name for n in model.graph.node if last is not None and _block_of(n.name) == last})


def quantize_backbone_openvino(
    model, calib_images: np.ndarray, from_block: int = 4, fast_bias_correction: bool = False, fp32_taps: bool = True
):
    """Static INT8 (QDQ) of the backbone for OpenVINO's INT8 kernels, with NNCF (`pip install
    'dlsr-deploy[int8]'`).

    Weights int8 per output channel, activations per tensor, min/max calibration on the given
    held-out ID images, then NNCF's full bias correction (on the default model it halved the
    decisions flipped compared with the fast one). FP32 stays: the in-graph preprocessing, the
    stem and blocks before from_block, the nodes the multi-layer pooling reads and the whole last
    block (`backbone_tap_nodes`), the pooling and the per-layer z-score. The choice is measured in
    research/precision/results/int8_openvino.md: quantizing blocks 1-3 or the taps flipped 0.8-0.9 % of
    the decisions, over the 0.5 % tolerance."""
    keep = [n.name for n in model.graph.node if (_block_of(n.name) is None or _block_of(n.name) < from_block)]
    keep += backbone_tap_nodes(model) if fp32_taps else []
    return nncf_quantize(model, calib_images, keep, fast_bias_correction=fast_bias_correction)


def nncf_quantize(model, calib_images: np.ndarray, keep_fp32, fast_bias_correction: bool = False):
    """NNCF static INT8 of an image graph (input `images`, one calibration image per sample) with
    the nodes named in keep_fp32 left FP32."""
    from dlsr_deploy.runtime.backend import import_optional

    nncf = import_optional("nncf", "int8")

    with _silenced_logger("nncf"):
        return nncf.quantize(
            model,
            nncf.Dataset([calib_images[i : i + 1] for i in range(len(calib_images))], lambda x: {"images": x}),
            subset_size=len(calib_images),
            fast_bias_correction=fast_bias_correction,
            ignored_scope=nncf.IgnoredScope(names=sorted(set(keep_fp32)), validate=False),
        )
