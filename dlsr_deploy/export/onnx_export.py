"""The bundle's ONNX graphs: traced from the eager reference, quantized where asked, checked,
written atomically, and described for the manifest.

    backbone.onnx   images uint8 [batch, native, native, 3] -> z0
    heads.onnx      z0 -> density heads and their combinations (FP32 in every bundle)
    denoiser.onnx   z0 -> every score (DLSR, density heads, combinations) and z0_hat
    pipeline.onnx   optional (fused): images -> everything
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional, Tuple

from dlsr_deploy.errors import ConfigError
from dlsr_deploy.log import info

# held-out ID images the static INT8 backbone is calibrated on (taken from the end of the
# calibration set; parity uses its first n_verify images)
INT8_CALIBRATION_IMAGES = 256


def graph_modules(ref, precision: str, fused: bool, native: int) -> Dict[str, tuple]:
    """{role: (module, example inputs, input names, output names)} for every graph of the bundle."""
    import torch

    from dlsr_deploy.export.graphs import BackboneGraph, DenoiserGraph, HeadsGraph, PipelineGraph, ViewsBackboneGraph

    dtype = torch.float16 if precision == "fp16" else torch.float32
    first = ref.reconstructor("first") if ref.first is not None else None
    bb = BackboneGraph(ref.extractor, native, dtype).eval()
    if ref.cfg.views:  # several views: one graph, every view's z0 side by side
        views = [(BackboneGraph(e, native, dtype), v.flip) for v, e in zip(ref.cfg.views, ref.view_extractors)]
        bb = ViewsBackboneGraph(bb, views).eval()
    bounds = head_bounds(ref)
    heads = ref.all_heads
    dn = DenoiserGraph(ref.reconstructor(), first, dtype, heads=heads, combos=ref.combos, bounds=bounds).eval()
    images = (torch.zeros(2, native, native, 3, dtype=torch.uint8),)
    z0 = (torch.zeros(2, ref.cfg.z0_dim),)
    graphs = {"backbone": (bb, images, ["images"], ["z0"])}
    if heads:
        hd = HeadsGraph(heads, ref.combos, bounds).eval()
        graphs["heads"] = (hd, z0, ["z0"], hd.output_names)
    graphs["denoiser"] = (dn, z0, ["z0"], dn.output_names)
    if fused:
        pl = PipelineGraph(bb, dn).eval()
        graphs["pipeline"] = (pl, images, ["images"], pl.output_names)
    return graphs


def head_bounds(ref) -> Dict[str, Tuple[int, int]]:
    """{head: (start, end)} of the z0 slice each density head reads: the primary view's for its heads,
    each extra view's for its own."""
    from dlsr_deploy.views import view_scores

    cfg = ref.cfg
    out = {n: (0, cfg.denoiser.dim) for n in ref.heads}
    out.update(dict(zip(view_scores(cfg), cfg.view_bounds())))
    return out


def _quantize(model, role: str, req, int8_images):
    from dlsr_deploy.export import onnx_utils as ou

    if req.precision != "int8":
        return model
    if req.int8_backbone_from is not None and role in ("backbone", "pipeline"):
        quant = ou.quantize_backbone_openvino if req.int8_scheme == "openvino" else ou.quantize_backbone_int8
        model = quant(model, int8_images, from_block=req.int8_backbone_from)
    if role in ("denoiser", "pipeline"):
        quantize = {
            "weight-only": ou.quantize_matmuls_weight_only,
            "openvino": ou.quantize_matmul_weights_dq,
        }.get(req.int8_scheme, ou.quantize_matmuls_int8)
        model = quantize(model)
    return model  # heads.onnx stays FP32 in every bundle


def describe_graph(model, path: Path, req, role: str) -> dict:
    from dlsr_deploy.export import onnx_utils as ou
    from dlsr_deploy.io import sha256_file

    inputs, outputs = ou.io_spec(model)
    entry = {
        "name": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "inputs": inputs,
        "outputs": outputs,
        "opset": ou.OPSET,
        "nodes": len(model.graph.node),
        "ops": ou.op_counts(model),
        "fp16_share": ou.fp16_share(model),
        "fp16_share_conv_matmul": ou.fp16_share(model, ou.HEAVY_OPS),
        "trt_unsupported_ops": ou.unsupported_by_trt(model),
    }
    if req.precision == "int8" and req.int8_scheme == "openvino" and role == "backbone":
        entry["int8_fp32_taps"] = ou.backbone_tap_nodes(model)
    return entry


def write_graph(
    tmp: Path, role: str, spec: tuple, req, native: int, dims: Tuple[int, int], int8_images=None
) -> Tuple[dict, object]:
    """Trace, simplify, quantize, check and write one graph -> (manifest entry, model)."""
    import torch

    import dlsr_deploy
    from dlsr_deploy.export import onnx_utils as ou
    from dlsr_deploy.io import atomic_write_bytes

    mod, args, ins, outs = spec
    with torch.no_grad():
        model = ou.simplify(ou.torch_to_onnx(mod, args, ins, outs))
    model = _quantize(model, role, req, int8_images)
    model.producer_name, model.producer_version = "dlsr-deploy", dlsr_deploy.__version__
    z0_dim, hat_dim = dims  # the bundle's z0 (every view), the reconstruction's (the primary view)
    ou.fix_dims(model, {"images": [None, native, native, 3], "z0": [None, z0_dim], "z0_hat": [None, hat_dim]})
    ou.check(model)
    path = Path(tmp) / f"{role}.onnx"
    atomic_write_bytes(path, model.SerializeToString())
    return describe_graph(model, path, req, role), model


def export_graphs(tmp: Path, ref, req, native: int, int8_images=None, roles=None) -> Tuple[dict, dict]:
    """Every graph of the bundle (or those of `roles` it has) into tmp -> (files entries by role,
    FP16 share by role)."""
    files, shares = {}, {}
    for role, spec in graph_modules(ref, req.precision, req.fused, native).items():
        if roles is not None and role not in roles:
            continue
        t = time.time()
        dims = (ref.cfg.z0_dim, ref.cfg.denoiser.dim)
        entry, _ = write_graph(tmp, role, spec, req, native, dims, int8_images)
        files[role], shares[role] = entry, entry["fp16_share"]
        bad = entry["trt_unsupported_ops"]
        info(
            f"      {role}.onnx  {entry['bytes'] / 1e6:7.2f} MB  {entry['nodes']:5d} nodes  FP16 share "
            f"{entry['fp16_share']:.0%} of compute nodes, {entry['fp16_share_conv_matmul']:.0%} of Conv/MatMul/Gemm  "
            f"({time.time() - t:.1f} s)" + (f"  NOT in TensorRT's operator list: {bad}" if bad else "")
        )
    if req.precision == "fp16" and min((v for r, v in shares.items() if r != "heads"), default=1.0) <= 0.0:
        raise ConfigError(f"fp16 produced graphs with no FP16 compute (FP16 share per graph: {shares})", param="fp16")
    return files, shares


def int8_fp32_taps(files: dict) -> Optional[list]:
    """The backbone nodes an OpenVINO INT8 backbone keeps FP32 (for the manifest)."""
    return files.get("backbone", {}).get("int8_fp32_taps")
