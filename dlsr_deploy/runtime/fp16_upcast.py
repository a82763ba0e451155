"""FP16 bundles computed in FP32 on CPUs: their graphs rewritten to FP32 when a CPU session opens.

On x86-64, ONNX Runtime's CPU provider has no FP16 kernels for the ops a bundle uses: it inserts
Cast nodes and computes in FP32 anyway, but the casts and the fusions it then misses cost time
(the default FP16 backbone: 7.2 ms at batch 1 and 230 ms at batch 32 against 5.7 and 132 ms
rewritten, FP32 5.3 and 146 ms; outputs equal to 6.4e-7). On ARM64 the same provider registers
native FP16 Conv / FusedConv / NhwcFusedConv / Add kernels (profiled under an emulated
Cortex-A76, ONNX Runtime 1.32.0) which compute in half precision: the default bundle's z0
drifted 2.9e-2 there against its 2e-2 tolerance, and no session option avoids those kernels
(ORT_ENABLE_EXTENDED and disabling the NHWC transformer leave them in place). Rewritten, it
passes its self-check there at 1.5e-6 (tests/platform/arm64/results/arm64.md). So an FP16 bundle on a CPU
is "FP16 weights, FP32 arithmetic" everywhere; half-precision arithmetic is for GPUs.

The rewrite works on the protobuf wire format, without the `onnx` package (the runtime stays
numpy + ONNX Runtime): FP16 initializers and Constant tensors become FP32, Cast / dtype
attributes that name FP16 name FP32, and every FP16 value type (inputs, outputs, value_info)
becomes FP32. Anything it cannot rewrite safely (external data, sparse initializers, functions)
raises Fp16UpcastError, and the caller keeps the graph as it is.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

FLOAT, FLOAT16 = 1, 10

# ONNX message fields that hold messages this rewrite walks into: {message: {field: message}}
_CHILDREN: Dict[str, Dict[int, str]] = {
    "model": {7: "graph"},
    "graph": {1: "node", 5: "tensor", 11: "value", 12: "value", 13: "value"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph"},
    "value": {2: "type"},
    "type": {1: "tensor_type", 4: "elem_holder", 5: "map_type", 8: "tensor_type", 9: "elem_holder"},
    "elem_holder": {1: "type"},
    "map_type": {2: "type"},
    "tensor_type": {},
    "tensor": {},
}
# fields that cannot be rewritten here: {message: {field: what}}
_REFUSED = {
    "model": {25: "model-local functions"},
    "graph": {15: "sparse initializers"},
    "tensor": {13: "external tensor data", 14: "external tensor data"},  # external_data, data_location
}
# attributes whose integer value is a data type
_DTYPE_ATTRIBUTES = ("to", "dtype", "output_dtype")


class Fp16UpcastError(ValueError):
    """The graph holds something this rewrite does not handle; it is left as it is."""


Field = Tuple[int, int, object]  # (field number, wire type, int value or bytes)


def _varint(buf: bytes, i: int) -> Tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7


def _put_varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1  # negative int64 values are ten-byte varints
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def parse(buf: bytes) -> List[Field]:
    """A message's fields in order, values undecoded (varints as int, the rest as bytes)."""
    fields, i, n = [], 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _varint(buf, i)
        elif wire == 1:
            val, i = buf[i : i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            val, i = buf[i : i + size], i + size
        elif wire == 5:
            val, i = buf[i : i + 4], i + 4
        else:
            raise Fp16UpcastError(f"unsupported protobuf wire type {wire} in field {num}")
        fields.append((num, wire, val))
    if i != n:
        raise Fp16UpcastError("truncated protobuf message")
    return fields


def serialize(fields: List[Field]) -> bytes:
    """The inverse of parse."""
    out = bytearray()
    for num, wire, val in fields:
        out += _put_varint((num << 3) | wire)
        if wire == 0:
            out += _put_varint(val)
        elif wire == 2:
            out += _put_varint(len(val)) + val
        else:
            out += val
    return bytes(out)


def _tensor(fields: List[Field], counts: Dict[str, int]) -> List[Field]:
    dtype = next((v for n, w, v in fields if n == 2 and w == 0), None)
    if dtype != FLOAT16:
        return fields
    halves = b"".join(v for n, w, v in fields if n == 9)
    bits = []
    for n, w, v in fields:  # int32_data: FP16 bit patterns, packed (wire 2) or not (wire 0)
        if n == 5:
            if w == 0:
                bits.append(v)
            else:
                j = 0
                while j < len(v):
                    x, j = _varint(v, j)
                    bits.append(x)
    values = np.frombuffer(halves, "<f2") if halves else np.array(bits, "<u2").view("<f2")
    kept = [(n, w, v) for n, w, v in fields if n not in (2, 5, 9)]
    counts["tensors"] += 1
    return kept + [(2, 0, FLOAT), (9, 2, values.astype("<f4").tobytes())]


def _retype(fields: List[Field], num: int, counts: Dict[str, int], what: str) -> List[Field]:
    """Fields with the varint field `num` (a data type) turned from FP16 into FP32, counted as `what`."""
    if not any(n == num and w == 0 and v == FLOAT16 for n, w, v in fields):
        return fields
    counts[what] += 1
    return [(n, w, FLOAT if n == num and w == 0 else v) for n, w, v in fields]


def _walk(kind: str, buf: bytes, counts: Dict[str, int]) -> bytes:
    fields = parse(buf)
    for num, what in _REFUSED.get(kind, {}).items():
        if any(n == num and v != 0 for n, _, v in fields):  # data_location 0 is DEFAULT (in the file)
            raise Fp16UpcastError(f"the graph uses {what}")
    children = _CHILDREN[kind]
    fields = [(n, w, _walk(children[n], v, counts)) if w == 2 and n in children else (n, w, v) for n, w, v in fields]
    if kind == "tensor":
        fields = _tensor(fields, counts)
    elif kind == "tensor_type":  # TypeProto.Tensor / SparseTensor: elem_type
        fields = _retype(fields, 1, counts, "values")
    elif kind == "attribute":  # a Cast `to` (or `dtype`) naming FP16; field 3 is the attribute's int
        name = next((bytes(v).decode() for n, w, v in fields if n == 1 and w == 2), "")
        if name in _DTYPE_ATTRIBUTES:
            fields = _retype(fields, 3, counts, "casts")
    return serialize(fields)


def upcast_model(data: bytes) -> Tuple[bytes, Dict[str, int]]:
    """A serialized ONNX model with every FP16 tensor, type and cast made FP32 -> (bytes, counts)."""
    counts = {"tensors": 0, "casts": 0, "values": 0}
    try:
        out = _walk("model", bytes(data), counts)
    except Fp16UpcastError:
        raise
    except (IndexError, KeyError, UnicodeDecodeError, ValueError) as e:  # malformed: the engine reports it on open
        raise Fp16UpcastError(f"not a readable ONNX model ({type(e).__name__})") from e
    return out, counts
