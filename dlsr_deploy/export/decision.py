"""decision.onnx: one graph per decision (issue 28, item 4).

The headline path used to be two calls per batch: backbone.onnx (images -> z0), then heads.onnx
(z0 -> every density head). When the headline is a density head (or a combination of them), the
bundle also carries `decision.onnx`: the backbone graph as written (same weights, same precision,
same quantization) joined to the part of the heads graph the headline needs, pruned of the other
heads: uint8 images in, `score_<headline>` out, one call per batch. It is made from the written
graphs (no new trace), checked against the two-graph path on the verify images at export, and
replayed by the load-time self-check like every other path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Set

import numpy as np

PREFIX = "hd/"


def _needed(nodes, target: str) -> Set[int]:
    """Indices of the nodes `target` depends on."""
    producer: Dict[str, int] = {o: i for i, n in enumerate(nodes) for o in n.output}
    keep, stack = set(), [target]
    while stack:
        name = stack.pop()
        i = producer.get(name)
        if i is None or i in keep:
            continue
        keep.add(i)
        stack.extend(x for x in nodes[i].input if x)
    return keep


def merge_decision(backbone, heads, score_output: str):
    """backbone (images -> z0) + the heads graph's nodes that `score_output` needs -> one ModelProto
    images -> score_output. The heads' internal names get a prefix (no clash with the backbone's)."""
    import onnx
    from onnx import helper

    hg = heads.graph
    keep_names = {"z0", score_output}

    def rn(name: str) -> str:
        return name if (not name or name in keep_names) else PREFIX + name

    idx = sorted(_needed(list(hg.node), score_output))
    nodes = []
    for i in idx:
        n = onnx.NodeProto()
        n.CopyFrom(hg.node[i])
        n.name = rn(n.name) if n.name else n.name
        n.input[:] = [rn(x) for x in n.input]
        n.output[:] = [rn(x) for x in n.output]
        nodes.append(n)
    used = {x for n in nodes for x in n.input}
    inits = []
    for t in hg.initializer:
        if rn(t.name) in used:
            c = onnx.TensorProto()
            c.CopyFrom(t)
            c.name = rn(t.name)
            inits.append(c)
    bg = backbone.graph
    out = next(o for o in hg.output if o.name == score_output)
    graph = helper.make_graph(
        list(bg.node) + nodes,
        "decision",
        list(bg.input),
        [out],
        initializer=list(bg.initializer) + inits,
    )
    model = helper.make_model(graph, opset_imports=list(backbone.opset_import), ir_version=backbone.ir_version)
    model.producer_name, model.producer_version = backbone.producer_name, backbone.producer_version
    onnx.checker.check_model(model)
    return model


def write_decision(tmp: Path, head: str, req) -> Optional[dict]:
    """decision.onnx in tmp for the headline `head` when the heads graph outputs it -> its manifest
    entry (None when the headline needs the denoiser: the bundle keeps its two-graph path)."""
    import onnx

    from dlsr_deploy.export.onnx_export import describe_graph
    from dlsr_deploy.io import atomic_write_bytes
    from dlsr_deploy.names import output_name

    tmp = Path(tmp)
    if not (tmp / "heads.onnx").exists():
        return None
    heads = onnx.load(str(tmp / "heads.onnx"))
    if output_name(head) not in {o.name for o in heads.graph.output}:
        return None
    model = merge_decision(onnx.load(str(tmp / "backbone.onnx")), heads, output_name(head))
    path = tmp / "decision.onnx"
    atomic_write_bytes(path, model.SerializeToString())
    entry = describe_graph(model, path, req, "decision")
    entry["headline"] = head
    return entry


def prune_heads(heads, score_output: str):
    """The heads graph pruned to one output: z0 -> score_output (what a bf16 bundle's headline runs
    after its bf16 backbone, where a joined decision graph would run the heads in bf16 too)."""
    import onnx
    from onnx import helper

    hg = heads.graph
    nodes = [hg.node[i] for i in sorted(_needed(list(hg.node), score_output))]
    used = {x for n in nodes for x in n.input}
    graph = helper.make_graph(
        nodes,
        "head",
        list(hg.input),
        [o for o in hg.output if o.name == score_output],
        initializer=[t for t in hg.initializer if t.name in used],
    )
    model = helper.make_model(graph, opset_imports=list(heads.opset_import), ir_version=heads.ir_version)
    model.producer_name, model.producer_version = heads.producer_name, heads.producer_version
    onnx.checker.check_model(model)
    return model


def write_head(tmp: Path, head: str, req) -> Optional[dict]:
    """head.onnx in tmp (z0 -> the headline only) -> its manifest entry, None without it in heads.onnx."""
    import onnx

    from dlsr_deploy.export.onnx_export import describe_graph
    from dlsr_deploy.io import atomic_write_bytes
    from dlsr_deploy.names import output_name

    path = Path(tmp) / "heads.onnx"
    heads = onnx.load(str(path)) if path.exists() else None
    if heads is None or output_name(head) not in {o.name for o in heads.graph.output}:
        return None
    model = prune_heads(heads, output_name(head))
    out = Path(tmp) / "head.onnx"
    atomic_write_bytes(out, model.SerializeToString())
    entry = describe_graph(model, out, req, "head")
    entry["headline"] = head
    return entry


DECISION_TOL = 1e-4  # the largest relative difference from the two-graph path (the same operations)


def check_decision(tmp: Path, head: str, image_sets: Dict[str, np.ndarray], engine: str) -> dict:
    """The decision graph against the two-graph path (backbone, then heads) on every verify set,
    on the bundle's engine -> {max_rel, n_images, passed}."""
    from dlsr_deploy.export.verify import run_bundle_graphs, run_graph
    from dlsr_deploy.names import output_name

    name, worst, n = output_name(head), 0.0, 0
    for images in image_sets.values():
        one = run_graph(Path(tmp) / "decision.onnx", {"images": images}, batch=32, engine=engine)[name]
        two = run_bundle_graphs(tmp, images, batch=32, engine=engine, graphs=("heads",))[name]
        worst = max(worst, float(np.max(np.abs(one - two) / np.maximum(np.abs(two), 1e-6))))
        n += len(images)
    return {"max_rel": worst, "n_images": n, "tolerance": DECISION_TOL, "passed": worst <= DECISION_TOL}
