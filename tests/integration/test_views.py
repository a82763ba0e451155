"""A detector of several feature views end to end (issue 32): training, export with parity and
self-check on every view, the runtime's ensemble, inspect, eval, and what is refused."""

import json

import numpy as np
import pytest
from bundles import make_sets
from click.testing import CliRunner

VIEWS = ("lite0@64:flip", "lite1@64")


@pytest.fixture(scope="module")
def views_run(tmp_path_factory):
    from dlsr_deploy.config import FeatureConfig, TrainConfig, ViewConfig
    from dlsr_deploy.pipeline import run_train

    folder = tmp_path_factory.mktemp("views")
    idp, oodp = make_sets(folder)
    run_train(
        str(idp), folder / "run", FeatureConfig(backbone="efficientnet-lite0", input_size=64), preset="small",
        tcfg=TrainConfig(epochs=2, batch_size=32), holdout=0.25, cache_dir=folder / "cache",
        views=tuple(ViewConfig.parse(v) for v in VIEWS),
    )  # fmt: skip
    return folder, folder / "run", idp, oodp


@pytest.fixture(scope="module")
def views_bundle(views_run):
    from dlsr_deploy.export.exporter import export_bundle

    folder, run, _, oodp = views_run
    export_bundle(run, folder / "bundle", verify_ood=[str(oodp)], n_verify=64)
    return folder / "bundle"


def test_run_keeps_every_views_features_and_head(views_run):
    from dlsr_deploy.config import ModelConfig
    from dlsr_deploy.run_folder import RunRecord

    _, run, _, _ = views_run
    cfg = ModelConfig.load(run / "config.json")
    assert [v.name for v in cfg.views] == list(VIEWS) and cfg.profile is None
    assert [v.dim for v in cfg.views] == [cfg.denoiser.dim, sum(cfg.views[1].layer_sizes)]
    info = RunRecord(run).read_info()
    assert info.views["views"] == "lite0@64 + " + " + ".join(VIEWS)
    vz, hz = np.load(run / "views_train_z0.npy"), np.load(run / "views_holdout_z0.npy")
    assert vz.shape == (info.n_train, cfg.z0_dim - cfg.denoiser.dim) and hz.shape[0] == info.n_holdout
    # the flip view of the primary backbone is the primary's z0 of the flipped images
    assert not np.allclose(vz[:, : cfg.denoiser.dim], np.load(run / "train_z0.npy"))


def test_bundle_scores_every_view_with_parity_and_decides_by_the_ensemble(views_bundle):
    m = json.loads((views_bundle / "manifest.json").read_text())
    names = m["scores"]["names"]
    assert {"v1_maha_ridge", "v2_maha_ridge", "ensemble"} <= set(names)
    assert m["scores"]["headline"] == m["threshold"]["score"] == "ensemble"
    assert m["parity"]["passed"], m["parity"]["failures"]
    for s in ("v1_maha_ridge", "v2_maha_ridge", "ensemble"):  # parity per view, by its score
        assert (
            m["parity"]["scores"][f"score_{s}"]["spearman"] > 0.999
            and m["parity"]["paths"]["heads"]["scores"][f"score_{s}"]["flips"] == 0
        )
    pre = m["preprocessing"]
    assert [v["view"] for v in pre["views"]] == list(VIEWS) and pre["z0_dim"] == pre["views"][-1]["z0"][1]
    ens = next(c for c in m["scores"]["combinations"] if c.get("label") == "ensemble")
    assert ens["components"] == ["maha_ridge", "v1_maha_ridge", "v2_maha_ridge"]
    assert "lite1@64" in m["scores"]["definitions"]["ensemble"]
    from dlsr_deploy.manifest import read_manifest

    typed = read_manifest(views_bundle)
    assert typed.views == ["lite0@64", *VIEWS] and typed.profile is None
    assert (views_bundle / "decision.onnx").exists()  # images -> ensemble in one call


@pytest.mark.parametrize("backend", ["ort-cpu", "openvino"])
def test_runtime_ensemble_matches_eager_and_its_own_views(views_run, views_bundle, backend):
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.model.reference import EagerReference
    from dlsr_deploy.runtime import Detector
    from dlsr_deploy.scoring import Combination

    folder = views_run[0]
    pytest.importorskip("openvino" if backend == "openvino" else "onnxruntime")
    images = np.load(folder / "id_unseen.npz")["images"]
    m = json.loads((views_bundle / "manifest.json").read_text())
    ref = EagerReference.from_run(views_run[1], ScoreConfig(**{k: m["schedule"][k] for k in ("t_start", "steps")}),
                                  combos=m["scores"]["combinations"])  # fmt: skip
    eager = ref.score_z0(ref.z0(images))
    with Detector.load(views_bundle, backend=backend, self_check="always") as det:
        assert det.self_check_report["passed"]
        got = det.score(images, ["maha_ridge", "v1_maha_ridge", "v2_maha_ridge", "ensemble"])
        out = det.backend.run(images, ["heads"])
    for s, v in got.items():
        np.testing.assert_allclose(v, eager[s], rtol=2e-4, atol=1e-4 * np.abs(eager[s]).max())
    ens = Combination.from_dict(next(c for c in m["scores"]["combinations"] if c.get("label") == "ensemble"))
    np.testing.assert_allclose(got["ensemble"], ens.combine(got), rtol=1e-4, atol=1e-5)
    # the flip view's slice of z0 is the primary view's z0 of the mirrored images
    d = ref.cfg.denoiser.dim
    with Detector.load(views_bundle, backend=backend, self_check="never") as det:
        mirrored = det.backend.run(np.ascontiguousarray(images[:, :, ::-1]), ["heads"])["z0"]
    np.testing.assert_allclose(out["z0"][:, d : 2 * d], mirrored[:, :d], rtol=1e-4, atol=1e-4)


def test_inspect_shows_the_views(views_bundle):
    from dlsr_deploy.cli import inspect

    r = CliRunner().invoke(inspect, [str(views_bundle)])
    assert r.exit_code == 0, r.output
    assert "views lite0@64 + lite0@64:flip + lite1@64" in r.output and "v2_maha_ridge" in r.output


def test_fp16_views_bundle_passes_parity(views_run):
    from dlsr_deploy.export.exporter import export_bundle

    folder, run, _, oodp = views_run
    m = export_bundle(run, folder / "b16", verify_ood=[str(oodp)], n_verify=64, fp16=True)
    assert m["parity"]["passed"] and m["precision"]["mode"] == "fp16" and m["scores"]["headline"] == "ensemble"


@pytest.mark.parametrize(
    "opts,match",
    [
        ({"bf16": True}, "not supported for a run of several views"),
        ({"int8": True, "int8_backbone_from": 2}, "not supported"),
        ({"density": ("gauss_layer",)}, "maha_ridge"),
    ],
)
def test_unsupported_exports_are_refused_before_any_work(views_run, opts, match):
    from dlsr_deploy.errors import ConfigError
    from dlsr_deploy.export.exporter import export_bundle

    folder, run, _, oodp = views_run
    with pytest.raises(ConfigError, match=match):
        export_bundle(run, folder / "refused", verify_ood=[str(oodp)], **opts)
    assert not (folder / "refused").exists() and not (folder / ".refused.partial").exists()


def test_eval_reports_every_view_and_the_ensemble(views_run, tmp_path):
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.eval_pipeline import run_eval

    folder, run, _, oodp = views_run
    run_eval(
        run, str(folder / "id_unseen.npz"), [("ood", str(oodp))], [ScoreConfig()], out_dir=tmp_path, plot=False,
        html=False, n_boot=0, cache_dir=folder / "cache",
    )  # fmt: skip
    res = json.loads((tmp_path / "eval.json").read_text())
    metrics = res["runs"][0]["metrics"]
    assert {"v1_maha_ridge", "v2_maha_ridge", "ensemble"} <= set(metrics)
    assert metrics["ensemble"]["ood"]["auroc"] > 0.9  # noise images against one ID colour: far OOD
    assert res["runs"][0]["combinations"][-1]["label"] == "ensemble"


def test_bench_eager_runner_scores_views_and_peers_refuse_them(views_run, views_bundle):
    from dlsr_deploy.bench.peers import PlainExportRunner
    from dlsr_deploy.bench.runners import EagerRunner
    from dlsr_deploy.errors import ConfigError
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.runtime import Detector

    images = np.load(views_run[0] / "id_unseen.npz")["images"][:8]
    m = read_manifest(views_bundle)
    eager, stages = EagerRunner(m, path="all").run(images)
    with Detector.load(views_bundle, backend="ort-cpu", self_check="never") as det:
        got = det.score(images, "all")
    for n in ("ensemble", "v2_maha_ridge", "mfsim"):
        np.testing.assert_allclose(eager[n], got[n], rtol=2e-4, atol=1e-4 * np.abs(got[n]).max())
    with pytest.raises(ConfigError, match="several views"):
        PlainExportRunner(m, engine="ort", path="headline")


def test_dlsr_check_compares_every_view_with_eager_and_on_target(views_run, views_bundle, tmp_path):
    from dlsr_deploy.cli import check

    folder, run, _, oodp = views_run
    r = CliRunner().invoke(check, [str(views_bundle), "--model", str(run), "--ood", str(oodp), "--n-verify", "32"])
    assert r.exit_code == 0 and "PASS" in r.output and "v2_maha_ridge" in r.output, r.output
    r = CliRunner().invoke(check, [str(views_bundle), "--on-target", "--backend", "openvino"])
    assert r.exit_code == 0 and "PASS" in r.output, r.output


def test_dlsr_train_forwards_view_and_records_the_profile(views_run, tmp_path):
    """--view reaches the run (config, files, run.json) through the CLI; default settings record 'balanced'."""
    from dlsr_deploy.cli import train
    from dlsr_deploy.config import ModelConfig

    folder = views_run[0]
    common = ["--data", str(folder / "id.npz"), "--native-size", "32", "--preset", "small", "--epochs", "1"]
    common += ["--batch-size", "32", "--holdout", "0.25", "--cache-dir", str(folder / "cache"), "--quiet"]
    tiny = ["--backbone", "efficientnet-lite0", "--input-size", "64"]
    r = CliRunner().invoke(train, [*common, *tiny, "--out", str(tmp_path / "v"), "--view", "lite0@64:flip"])
    assert r.exit_code == 0, r.output
    cfg = ModelConfig.load(tmp_path / "v" / "config.json")
    assert [v.name for v in cfg.views] == ["lite0@64:flip"] and cfg.profile is None
    assert (tmp_path / "v" / "views_density.npz").exists()
    assert json.loads((tmp_path / "v" / "run.json").read_text())["views"]["views"] == "lite0@64 + lite0@64:flip"
    r = CliRunner().invoke(train, [*common, *tiny, "--out", str(tmp_path / "one")])
    assert r.exit_code == 0 and ModelConfig.load(tmp_path / "one" / "config.json").views == ()
