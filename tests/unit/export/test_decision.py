"""One graph per decision (issue 28, item 4): decision.onnx takes images to the headline in one
call, equals the two-graph path, and is verified at export and by the self-check."""

import json

import numpy as np
import onnx

from dlsr_deploy.manifest import read_manifest
from dlsr_deploy.runtime import Detector


def test_the_bundle_has_a_decision_graph_for_its_density_headline(bundles):
    for p in bundles.values():
        m = read_manifest(p)
        assert m.decision_score == m.headline and m.graphs_for([m.headline]) == ["decision"]
        assert m.graphs_for(["mse"]) == ["denoiser"]  # other scores keep their graphs
        g = onnx.load(str(p / "decision.onnx")).graph
        assert [i.name for i in g.input] == ["images"] and [o.name for o in g.output] == [f"score_{m.headline}"]
        check = json.loads((p / "manifest.json").read_text())["parity"]["decision"]
        assert check["passed"] and check["max_rel"] <= check["tolerance"]


def test_one_call_per_batch_gives_the_two_graph_scores(bundles, tiny_run):
    x = np.load(tiny_run[2])["images"][:12]
    with Detector.load(bundles["fp32"], backend="ort-cpu", self_check="always") as det:
        assert "decision" in det.self_check_report["paths"] and det.self_check_report["passed"]
        calls = []
        run = det.backend.run_graph
        det.backend.run_graph = lambda g, feeds: calls.append(g) or run(g, feeds)
        one = det.predict(x)["score"]
        assert calls == ["decision"]  # one graph, one call
        two = det.score(x, [det.score_name, "maha_lw"])[det.score_name]  # backbone + heads
    np.testing.assert_allclose(one, two, rtol=1e-4)


def test_the_decision_graph_is_pruned_to_the_headline(bundles):
    m = read_manifest(bundles["fp32"])
    heads = onnx.load(str(bundles["fp32"] / "heads.onnx")).graph
    dec = onnx.load(str(bundles["fp32"] / "decision.onnx")).graph
    bb = onnx.load(str(bundles["fp32"] / "backbone.onnx")).graph
    assert len(dec.node) < len(bb.node) + len(heads.node)  # the other heads' nodes are gone
    assert m.files["decision"]["bytes"] < m.files["backbone"]["bytes"] + m.files["heads"]["bytes"]
