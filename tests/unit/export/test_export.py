import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from dlsr_deploy.errors import BundleError, ConfigError, ParityError
from dlsr_deploy.export.graphs import bilinear_mean_weights
from dlsr_deploy.export.onnx_utils import OPSET, fp16_share, unsupported_by_trt
from dlsr_deploy.manifest import content_digest, read_manifest


def test_bilinear_mean_weights_equal_resize_then_mean():
    import torch
    import torch.nn.functional as F

    for n, m in [(112, 14), (56, 14), (7, 14), (14, 14), (5, 3), (4, 1)]:
        x = torch.randn(1, 1, n, n, dtype=torch.float64)
        ref = F.interpolate(x, size=(m, m), mode="bilinear", align_corners=True).mean()
        w = torch.from_numpy(np.outer(bilinear_mean_weights(n, m), bilinear_mean_weights(n, m)))
        assert float((x[0, 0] * w).sum()) == pytest.approx(float(ref), abs=1e-12)


def test_bundle_files_and_manifest(bundles):
    for prec, path in bundles.items():
        m = read_manifest(path)
        assert m.precision == prec
        assert set(m.files) >= {"backbone", "denoiser"}
        from dlsr_deploy.scoring import BUNDLE_HEADS, SMALL_N_HEADLINE, combination_names

        heads = list(BUNDLE_HEADS)
        combos = combination_names(["mfsim", "mse", "lr_mfsim", "lr_mse"] + heads)
        assert m.score_names == ["mfsim", "mse", "lr_mfsim", "lr_mse"] + heads + combos
        # the tiny run fits its heads on 72 vectors of 512 dims: the small-data default
        assert m.headline == SMALL_N_HEADLINE == m.threshold.score
        assert m.graphs_for([m.headline]) == ["decision"]  # one graph from images; never the denoiser
        assert "fitted on 72 vectors of 512 dims" in m.data["scores"]["headline_choice"]["how"]
        assert m.data["scores"]["direction"] == "higher score = more OOD"
        assert m.data["parity"]["passed"]
        thr = m.data["threshold"]
        assert thr["target_tpr"] == 0.95 and thr["n_images"] == 24 and "ID only" in thr["method"]
        assert set(thr["all"]) == set(m.score_names)
        for f in m.files.values():
            model = onnx.load(str(path / f["name"]))
            assert model.opset_import[0].version >= OPSET >= 18
            onnx.checker.check_model(model, full_check=True)
            assert unsupported_by_trt(model) == []
            ops = {n.op_type for n in model.graph.node}
            assert not ops & {"GroupNormalization", "InstanceNormalization"}  # TensorRT#4756 avoided
        ins = m.files["backbone"]["inputs"][0]
        assert ins["name"] == "images" and ins["dtype"] == "uint8" and ins["shape"] == ["batch", 32, 32, 3]
        assert m.files["denoiser"]["outputs"][-1]["shape"] == ["batch", 512]
    assert "pipeline" in read_manifest(bundles["fp32"]).files


def test_fp16_bundle_really_is_fp16(bundles):
    m = read_manifest(bundles["fp16"])
    for role in ("backbone", "denoiser"):
        model = onnx.load(str(bundles["fp16"] / m.files[role]["name"]))
        assert fp16_share(model) > 0.2
        assert m.files[role]["fp16_share_conv_matmul"] > 0.85
        inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
        assert inits, "no FP16 weights"
        # inputs and outputs stay FP32 / uint8
        assert all(o["dtype"] == "float32" for o in m.files[role]["outputs"])
    f32 = read_manifest(bundles["fp32"])

    def lfdn_bytes(bundle):  # weights other than the density heads (FP32 in every bundle)
        model = onnx.load(str(bundle / "denoiser.onnx"))
        return sum(len(i.raw_data) for i in model.graph.initializer if "density." not in i.name)

    assert lfdn_bytes(bundles["fp16"]) < 0.6 * lfdn_bytes(bundles["fp32"])
    assert f32.files["denoiser"]["fp16_share"] == 0.0


def test_manifest_roundtrip_and_tamper_detection(bundles, tmp_path):
    b = tmp_path / "copy"
    shutil.copytree(bundles["fp32"], b)
    m = read_manifest(b)
    data = json.loads((b / "manifest.json").read_text())
    assert data == m.data
    blob = bytearray((b / "denoiser.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (b / "denoiser.onnx").write_bytes(bytes(blob))
    with pytest.raises(BundleError, match="denoiser.onnx sha256"):
        read_manifest(b)
    (b / "backbone.onnx").write_bytes((b / "backbone.onnx").read_bytes()[:1000])
    with pytest.raises(BundleError, match="backbone.onnx has 1000 bytes"):
        read_manifest(b)
    (b / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="corrupt manifest"):
        read_manifest(b)


def test_manifest_refuses_paths_outside_bundle(bundles, tmp_path):
    b = tmp_path / "evil"
    shutil.copytree(bundles["fp32"], b)
    data = json.loads((b / "manifest.json").read_text())
    data["files"]["backbone"]["name"] = "../../etc/passwd"
    data["digest"] = content_digest(data)  # even with a recomputed digest (only a signature stops that)
    (b / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="outside the bundle"):
        read_manifest(b)


def test_export_refuses_existing_and_reports_parity_failure(tiny_run, bundles, tmp_path):
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.parity import Tolerances

    run, _, ood = tiny_run
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(run, bundles["fp32"])
    impossible = Tolerances(rank_corr=1.0, auroc_change=0.0, flip_rate=0.0, z0_rel=0.0)  # z0 error 0: fails
    with pytest.raises(ParityError, match="parity check failed.*strict.failed"):
        export_bundle(run, tmp_path / "strict", with_lr=False, n_verify=16, tolerances=impossible)
    assert not list(tmp_path.glob(".*partial"))
    # a failed bundle never stays at --out: it is set aside for inspection, and runtimes refuse it
    assert not (tmp_path / "strict").exists() and (tmp_path / "strict.failed" / "manifest.json").exists()
    from dlsr_deploy.runtime import Detector

    with pytest.raises(BundleError, match="failed its parity check"):
        Detector.load(tmp_path / "strict.failed", backend="ort-cpu")
    with pytest.raises(ParityError):  # keep_failed: kept at --out on request
        export_bundle(run, tmp_path / "kept", n_verify=16, tolerances=impossible, keep_failed=True)
    assert (tmp_path / "kept" / "manifest.json").exists()


def test_cli_check_and_inspect(bundles, tiny_run, tmp_path):
    from click.testing import CliRunner

    from dlsr_deploy.cli import check, inspect

    run, _, ood = tiny_run
    r = CliRunner().invoke(
        check, [str(bundles["fp16"]), "--ood", str(ood), "--n-verify", "32", "--report", str(tmp_path / "r.json")]
    )
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and json.loads((tmp_path / "r.json").read_text())["passed"]
    r = CliRunner().invoke(check, [str(bundles["fp32"]), "--n-verify", "16", "--z0-rel", "0"])
    assert r.exit_code == 1 and "FAIL" in r.output
    r = CliRunner().invoke(inspect, [str(bundles["fp16"])])
    assert r.exit_code == 0 and "fp16" in r.output and "verified" in r.output
    r = CliRunner().invoke(inspect, [str(tmp_path / "missing")])
    assert r.exit_code == 1 and "bundle not found" in r.output


def test_int8_bundle_for_onnx_runtime(tiny_run, tmp_path):
    from dlsr_deploy.errors import BackendUnavailable
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.runtime import Detector

    run, _, ood = tiny_run
    m = export_bundle(run, tmp_path / "int8", int8=True, verify_ood=[str(ood)], n_verify=48)
    assert (
        m["precision"]["mode"] == "int8"
        and m["parity"]["passed"]
        and sorted(m["backends"]) == ["openvino", "ort-cpu", "ort-cuda"]
    )
    ops = m["files"]["denoiser"]["ops"]
    assert any(op in ops for op in ("MatMulInteger", "DynamicQuantizeMatMul")), ops
    model = onnx.load(str(tmp_path / "int8" / "denoiser.onnx"))
    assert any(i.data_type == onnx.TensorProto.UINT8 and i.dims for i in model.graph.initializer)  # 8-bit weights
    with Detector.load(tmp_path / "int8", backend="auto") as det:
        assert det.backend_name in ("ort-cpu", "openvino")  # the faster CPU backend here
    with pytest.raises(BackendUnavailable):
        Detector.load(tmp_path / "int8", backend="trt")
    with pytest.raises(ConfigError, match="choose one"):
        export_bundle(run, tmp_path / "both", fp16=True, int8=True)


def test_int8_weight_only_denoiser_runs_on_ort_only(tiny_run, tmp_path):
    from dlsr_deploy.errors import BackendUnavailable
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.manifest import describe, read_manifest
    from dlsr_deploy.parity import Tolerances
    from dlsr_deploy.runtime import Detector

    run, _, ood = tiny_run
    loose = Tolerances(rank_corr=0.0, auroc_change=1.0, flip_rate=1.0, z0_rel=1e-4)  # parity is CPU-dependent here
    m = export_bundle(
        run,
        tmp_path / "w",
        int8=True,
        int8_scheme="weight-only",
        verify_ood=[str(ood)],
        n_verify=48,
        tolerances=loose,
    )
    assert m["precision"]["int8_scheme"] == "weight-only" and sorted(m["backends"]) == ["ort-cpu", "ort-cuda"]
    assert "MatMulNBits" in m["files"]["denoiser"]["ops"], m["files"]["denoiser"]["ops"]
    assert m["parity"]["tensors"]["z0"]["max_rel_l2"] < 1e-4  # the backbone is untouched
    relaxed = read_manifest(tmp_path / "w").relaxed_parity  # what dlsr-bench shows next to its rows
    assert relaxed == {"rank_corr": (0.0, 0.999), "auroc_change": (1.0, 0.002), "flip_rate": (1.0, 0.005)}, relaxed
    assert "flip_rate 1 (default 0.005)" in read_manifest(tmp_path / "w").relaxed_parity_note
    assert "relaxed tolerances" in describe(read_manifest(tmp_path / "w"))  # dlsr-inspect
    assert m["threshold"]["backend"] == "ONNX Runtime CPU on this bundle's graphs"
    with Detector.load(tmp_path / "w", backend="auto") as det:
        assert (
            det.backend_name == "ort-cpu"
            and np.isfinite(det.score(np.zeros((2, 32, 32, 3), np.uint8), ["mfsim"])["mfsim"]).all()
        )
    with pytest.raises(BackendUnavailable):
        Detector.load(tmp_path / "w", backend="openvino")
    with pytest.raises(ConfigError, match="int8_scheme: expected one of"):
        export_bundle(run, tmp_path / "x", int8=True, int8_scheme="4bit")


def test_int8_backbone_is_quantized_and_guarded_by_parity(tiny_run, tmp_path):
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.export.onnx_utils import backbone_fp32_nodes
    from dlsr_deploy.parity import Tolerances

    run, _, ood = tiny_run
    loose = Tolerances(rank_corr=0.0, auroc_change=1.0, flip_rate=1.0, z0_rel=1.0)
    opts = dict(int8=True, verify_ood=[str(ood)], n_verify=48)
    m = export_bundle(run, tmp_path / "q", int8_backbone_from=2, tolerances=loose, **opts)
    assert m["precision"]["int8_backbone_from"] == 2
    ops = m["files"]["backbone"]["ops"]
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0, ops
    model = onnx.load(str(tmp_path / "q" / "backbone.onnx"))
    kept = backbone_fp32_nodes(model, 2)  # stem and blocks 0-1 stay FP32
    assert kept and any("_conv_stem" in n for n in kept) and not any("_blocks.5/" in n for n in kept)
    # a guard the quantized backbone cannot meet: refused, nothing written, the fix named
    strict = Tolerances(rank_corr=1.0, auroc_change=1.0, flip_rate=1.0, z0_rel=1.0)  # 8-bit ranks move: fails
    with pytest.raises(ParityError, match="int8_backbone_from 6"):
        export_bundle(run, tmp_path / "refused", int8_backbone_from=2, tolerances=strict, **opts)
    assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".refused*"))


def test_openvino_int8_scheme_dq_weights_and_nncf_backbone(tiny_run, tmp_path):
    """--int8-scheme openvino: int8 per-channel denoiser weights behind DequantizeLinear (one per
    shared weight, density heads FP32), calibrated and verified on OpenVINO; with
    --int8-backbone-from an NNCF QDQ backbone whose taps and last block stay FP32."""
    pytest.importorskip("nncf", reason="the int8 extra (nncf) is not installed")
    pytest.importorskip("openvino", reason="the int8 extra (openvino) is not installed")
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.export.onnx_utils import backbone_tap_nodes
    from dlsr_deploy.parity import Tolerances
    from dlsr_deploy.runtime import Detector

    run, _, ood = tiny_run
    loose = Tolerances(rank_corr=0.0, auroc_change=1.0, flip_rate=1.0, z0_rel=1.0)  # the tiny model is not the point
    opts = dict(int8=True, int8_scheme="openvino", verify_ood=[str(ood)], n_verify=32, tolerances=loose)
    m = export_bundle(run, tmp_path / "ov", **opts)
    assert m["backends"] == ["openvino"] and "OpenVINO CPU" in m["self_check"]["reference"]
    assert m["threshold"]["backend"] == "OpenVINO CPU on this bundle's graphs"  # calibrated there
    den = onnx.load(str(tmp_path / "ov" / "denoiser.onnx"))
    int8 = [i for i in den.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    dq = [n for n in den.graph.node if n.op_type == "DequantizeLinear"]
    assert int8 and len(dq) == len(int8), (len(int8), len(dq))
    assert not any("density." in i.name for i in int8)
    assert m["parity"]["tensors"]["z0"]["max_rel_l2"] < 1e-4  # backbone untouched without --int8-backbone-from
    with Detector.load(tmp_path / "ov", backend="openvino") as det:
        assert np.isfinite(det.score(np.zeros((2, 32, 32, 3), np.uint8), ["mfsim"])["mfsim"]).all()
    m = export_bundle(run, tmp_path / "ovq", int8_backbone_from=1, **opts)
    bb = onnx.load(str(tmp_path / "ovq" / "backbone.onnx"))
    prod = {o: n for n in bb.graph.node for o in n.output}
    quantized = {
        n.name
        for n in bb.graph.node
        if any(prod.get(i) is not None and prod[i].op_type == "DequantizeLinear" for i in n.input)
    }
    taps = backbone_tap_nodes(bb)
    assert any("_blocks.1/" in n for n in quantized), sorted(quantized)[:5]
    assert not quantized & set(taps) and not any("_conv_stem" in n for n in quantized)
    assert m["files"]["backbone"]["int8_fp32_taps"] == taps and "tap" in m["precision"]["int8_fp32"]
    # dlsr-check re-verifies on the engine the export verified on (OpenVINO here, not ORT) and, as
    # the export did, does not hold an 8-bit backbone's z0 to the 1e-4 default
    from dataclasses import replace

    from dlsr_deploy.export.check import check_bundle

    assert m["parity"]["tensors"]["z0"]["max_rel_l2"] > 1e-4
    rep = check_bundle(tmp_path / "ovq", run, None, [str(ood)], 32, lambda p: replace(loose, z0_rel=1e-4))
    assert rep["engine"] == "OpenVINO CPU" and rep["passed"], rep["failures"]
    for k, sc in m["parity"]["scores"].items():  # the export's own numbers, reproduced
        assert rep["scores"][k]["spearman"] == pytest.approx(sc["spearman"], abs=1e-9), k
    with pytest.raises(ConfigError, match="drop fused"):
        export_bundle(run, tmp_path / "f", fused=True, **opts)


def test_force_never_deletes_a_model_or_a_foreign_folder(tiny_run, tmp_path):
    from dlsr_deploy.export.exporter import export_bundle

    run, _, _ = tiny_run
    before = sorted(p.name for p in run.iterdir())
    for target in (run, run.parent):
        with pytest.raises(BundleError, match="model folder"):
            export_bundle(run, target, force=True, verify=False)
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    with pytest.raises(BundleError, match="not a bundle written by dlsr-export"):
        export_bundle(run, mine, force=True, verify=False)
    assert (mine / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in run.iterdir()) == before


def test_calibration_data_is_checked_before_the_export(tiny_run, tmp_path):
    """run.json stores absolute paths and content hashes: changed or missing training data is
    an error at step 1, not a threshold silently calibrated on other images."""
    from dlsr_deploy.export.exporter import export_bundle

    run, _, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    info = json.loads((copy / "run.json").read_text())
    assert all(Path(d).is_absolute() for d in info["data"]) and len(info["data_sha256"]) == len(info["data"])
    info["data_sha256"] = ["0" * 64]
    (copy / "run.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="changed since training"):
        export_bundle(copy, tmp_path / "b1", verify=False)
    info["data"] = [str(tmp_path / "gone.npz")]
    (copy / "run.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="is gone"):
        export_bundle(copy, tmp_path / "b2", verify=False)
    assert not (tmp_path / "b1").exists() and not list(tmp_path.glob(".*partial"))


def test_an_edited_manifest_is_refused(bundles, tmp_path):
    """Setting the threshold to 1e9 would make the bundle flag nothing: the digest catches it."""
    from click.testing import CliRunner

    from dlsr_deploy.cli import inspect
    from dlsr_deploy.runtime import Detector

    b = tmp_path / "edited"
    shutil.copytree(bundles["fp32"], b)
    data = json.loads((b / "manifest.json").read_text())
    assert data["digest"] == content_digest(data)
    data["threshold"]["value"] = 1e9
    (b / "manifest.json").write_text(json.dumps(data, indent=2))
    with pytest.raises(BundleError, match="modified after export"):
        Detector.load(b, backend="ort-cpu")
    r = CliRunner().invoke(inspect, [str(b)])
    assert r.exit_code == 1 and "modified after export" in r.output


def test_auroc_guard_allows_three_swapped_pairs_on_small_sets():
    """One swapped ID/OOD pair moves AUROC by 1/(n_id n_ood); on 4 x 4 images the 0.002 guard would
    refuse any change at all, so up to three swaps pass and a fourth fails."""
    from dlsr_deploy.parity import Tolerances, compare

    ref = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0])
    is_ood = np.arange(8) >= 4
    tol = Tolerances(rank_corr=0.0, auroc_change=0.002, flip_rate=1.0, z0_rel=1.0)

    def swaps(n):  # lift the top ID scores above the lowest OOD one: n swapped pairs
        got = ref.copy()
        got[3 - np.arange(n)] = 10.5
        return compare({"score_x": ref}, {"score_x": got}, is_ood, {}, tol)

    assert swaps(3)["passed"]
    rep = swaps(4)
    assert not rep["passed"] and "4 swapped ID/OOD pairs" in rep["failures"][0]
