import json

import numpy as np

from dlsr_deploy.bench.harness import BenchRequest, run_bench
from dlsr_deploy.bench.timing import TimingSettings


def test_harness_result_fields(bundles, tiny_run, tmp_path):
    _, id_path, ood_path = tiny_run
    ids = np.load(id_path)["images"][:12]
    ood = {"noise": np.load(ood_path)["images"][:12]}
    req = BenchRequest(
        [bundles["fp32"], bundles["fp16"]],
        ids,
        list(ood.items()),
        batch_sizes=(1, 4),
        backends=["ort-cpu"],
        timing=TimingSettings(warmup_s=0.01, min_duration=0.05, min_iters=2, rounds=2),
    )
    res = run_bench(req)
    backends = {(r.backend, r.precision, r.path) for r in res.rows}
    for path in ("headline", "all"):
        assert {("torch-eager", "fp32", path), ("ort-cpu", "fp32", path), ("ort-cpu", "fp16", path)} <= backends
    for r in res.rows:
        assert r.status == "ok" and r.reason == "", r  # exported at the default tolerances: no note
        assert r.iters >= 2 and len(r.raw_ms) == r.iters
        assert r.p50_ms > 0 and r.p99_ms >= r.p50_ms and r.images_per_s > 0
        # pay for what you read: the headline (gauss_layer) path runs no denoiser; a bundle runs it
        # as one graph (decision.onnx), eager as the backbone and the heads
        if r.path == "all":
            assert set(r.stages_ms) == {"input", "backbone", "denoiser"}
        else:
            one = r.backend != "torch-eager"
            assert set(r.stages_ms) == ({"input", "decision"} if one else {"input", "backbone", "heads"})
        assert 0 <= r.auroc["noise"] <= 1
        assert np.isfinite(r.speedup_vs_eager)
        assert 0 < r.bound_share < 50  # images/s over this bundle's compute bound
        assert len(r.round_p50_ms) == 2 and len(r.speedup_rounds) == 2  # interleaved rounds
    e = res.row("torch-eager", 4, path="all")
    assert e.speedup_vs_eager == 1.0 and e.max_score_err == 0.0
    assert res.row("ort-cpu", 4, "fp32", "all").max_score_err < 1e-4
    assert res.row("ort-cpu", 4, "fp32", "headline").max_score_err < 1e-4
    assert {u["backend"] for u in res.unavailable} >= {"trt", "ort-cuda"}  # listed with a reason, not dropped
    assert res.compute_bound["gemm"]["gflops"] > 0 and res.compute_bound["flops_per_image"] > 0
    assert set(res.compute_bound["per_bundle"]) == {r.bundle for r in res.rows}
    for k in ("cpu_count", "torch", "onnxruntime", "torch_threads", "simd"):
        assert k in res.header
    from dlsr_deploy.bench import report

    paths = report.write(res, tmp_path, "b", "dlsr-bench test")
    d = json.loads(paths[0].read_text())
    assert d["rows"][0]["raw_ms"] and "| backend |" in paths[1].read_text() and paths[2].stat().st_size > 1000
    back = report.load(paths[0])  # what `python -m dlsr_deploy.bench.report` re-renders from
    assert [(r.bundle, r.backend, r.path, r.batch, r.p50_ms) for r in back.rows] == [
        (r.bundle, r.backend, r.path, r.batch, r.p50_ms) for r in res.rows
    ]
    assert report.table(back) == report.table(res)


def test_peer_rows_exist_and_compile_really_compiles(bundles, tiny_run):
    """The torch.compile peer compiles the functions that run (backbone pooling, preprocessing,
    reconstructor), not a module whose forward is bypassed; the plain-export peers exist and give
    the same outputs on both paths (the headline path: one plain graph, images -> headline)."""
    from dlsr_deploy.bench.harness import CPU_PEERS, BenchRequest, plan_jobs
    from dlsr_deploy.bench.peers import PlainExportRunner
    from dlsr_deploy.bench.runners import EagerRunner
    from dlsr_deploy.manifest import read_manifest

    _, id_path, _ = tiny_run
    m = read_manifest(bundles["fp32"])
    images = np.load(id_path)["images"][:4]
    eager = EagerRunner(m)
    compiled = EagerRunner(m, compile=True, compile_backend="eager")  # dynamo graphs without inductor's minutes
    assert compiled.compiled_graphs >= 3 and compiled.compile_seconds > 0  # preprocess, pooled, reconstructor
    a, b = eager.run(images)[0], compiled.run(images)[0]
    np.testing.assert_allclose(b["mfsim"], a["mfsim"], rtol=1e-5)
    plain = PlainExportRunner(m, engine="ort")
    p = plain.run(images)[0]
    np.testing.assert_allclose(p["mfsim"], a["mfsim"], rtol=1e-4, atol=1e-6)
    assert set(p) == {k for k in a if not k.startswith("lr_")}
    head = PlainExportRunner(m, engine="ort", path="headline")
    h, stages = head.run(images)
    assert list(h) == [m.headline] and "denoiser" not in stages
    np.testing.assert_allclose(h[m.headline], a[m.headline], rtol=1e-3)
    req = BenchRequest([bundles["fp32"]], peers=True, paths=("headline",))
    jobs = plan_jobs([m], [bundles["fp32"]], ["ort-cpu"], ["ort-cpu", "openvino"], req, [])
    assert [j[0] for j in jobs if j[0] in CPU_PEERS] == list(CPU_PEERS)
