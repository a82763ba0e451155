"""Views and profiles as configuration (issue 32): parsing, the strict round trip, the profiles."""

import json

import pytest
from click.testing import CliRunner

from dlsr_deploy.config import FeatureConfig, ModelConfig, ViewConfig
from dlsr_deploy.errors import ConfigError
from dlsr_deploy.profiles import PROFILE_BOUNDS, PROFILES, get_profile, profile_of


def test_parse_views():
    v = ViewConfig.parse("lite1@128")
    assert (v.backbone, v.input_size, v.flip, v.name) == ("efficientnet-lite1", 128, False, "lite1@128")
    f = ViewConfig.parse("efficientnet-lite2@160:flip")
    assert (f.backbone, f.input_size, f.flip, f.name) == ("efficientnet-lite2", 160, True, "lite2@160:flip")


@pytest.mark.parametrize(
    "bad", ["lite1", "lite1@", "lite1@x", "lite1@128:mirror", "resnet50@224", "lite9@128", "lite1@16"]
)
def test_bad_views_are_refused_by_name(bad):
    with pytest.raises(ConfigError, match="view"):
        ViewConfig.parse(bad)


def test_model_config_with_views_round_trips_through_json():
    views = (ViewConfig.parse("lite2@160:flip"), ViewConfig("efficientnet-lite1", 128, layer_sizes=(40, 112)))
    cfg = ModelConfig(views=views, profile="accurate")
    back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert back.views[1].dim == 152
    assert ModelConfig.from_dict({}).views == ()  # configs of earlier versions: one view


def test_views_z0_layout():
    cfg = ModelConfig(
        layer_sizes=(8, 8),
        views=(
            ViewConfig("efficientnet-lite0", 64, True, layer_sizes=(4, 6)),
            ViewConfig("efficientnet-lite1", 64, layer_sizes=(3,)),
        ),
    )
    d = cfg.denoiser.dim
    assert cfg.view_bounds() == [(d, d + 10), (d + 10, d + 13)]
    assert cfg.z0_dim == d + 13


def test_repeated_or_primary_views_are_refused():
    with pytest.raises(ConfigError, match="twice"):
        ModelConfig(views=(ViewConfig.parse("lite1@128"), ViewConfig.parse("lite1@128")))
    with pytest.raises(ConfigError, match="primary"):
        ModelConfig(
            feature=FeatureConfig(backbone="efficientnet-lite2", input_size=160), views=(ViewConfig.parse("lite2@160"),)
        )
    with pytest.raises(ConfigError, match="views: expected a list"):
        ModelConfig.from_dict({"views": "lite1@128"})
    with pytest.raises(ConfigError, match="unknown key"):
        ModelConfig.from_dict({"views": [{"backbone": "efficientnet-lite1", "input_size": 128, "mirror": True}]})


def test_profiles_are_within_their_bounds_and_balanced_is_the_default():
    from dlsr_deploy.config import DEFAULT_BACKBONE, DEFAULT_INPUT_SIZE

    assert set(PROFILES) == set(PROFILE_BOUNDS) == {"fast", "balanced", "accurate"}
    b = PROFILES["balanced"]
    assert (b.backbone, b.input_size, b.views) == (DEFAULT_BACKBONE, DEFAULT_INPUT_SIZE, ())
    assert profile_of(DEFAULT_BACKBONE, DEFAULT_INPUT_SIZE, ()) == "balanced"
    for p in PROFILES.values():
        assert profile_of(p.backbone, p.input_size, p.view_configs()) == p.name
    assert profile_of("efficientnet-lite0", 64, ()) is None
    with pytest.raises(ConfigError, match="fast"):
        get_profile("turbo")


def test_train_profile_refuses_explicit_backbone_size_or_view(tmp_path):
    from dlsr_deploy.cli import train

    for extra in (["--backbone", "efficientnet-lite1"], ["--input-size", "128"], ["--view", "lite1@128"]):
        r = CliRunner().invoke(train, ["--data", "demo:id", "--out", str(tmp_path / "r"), "--profile", "fast", *extra])
        assert r.exit_code == 2 and "--profile sets the backbone" in r.output, r.output
    assert not (tmp_path / "r").exists()
    r = CliRunner().invoke(train, ["--data", "demo:id", "--out", str(tmp_path / "r"), "--view", "lite1@12x"])
    assert r.exit_code != 0 and "BACKBONE@SIZE" in r.output and not (tmp_path / "r").exists()


def test_profiles_are_the_sweeps_picks():
    """The package's profiles are the ones research/default_detector/results/pareto_views.json picked."""
    from pathlib import Path

    res = json.loads((Path(__file__).parents[2] / "research/default_detector/results/pareto_views.json").read_text())
    rows = {r["name"]: r for r in res["rows"]}
    for name, p in PROFILES.items():
        pick = res["profiles"][name]["pick"]
        assert sorted(p.summary.split(" + ")) == sorted(pick.split(" + ")), name
        # the trade --help states is the sweep's Tiny ImageNet AUROC of the pick (and of balanced)
        tin = 100 * rows[pick]["auroc"]["tinyimagenet"]["auroc"]
        assert f"AUROC {tin:.1f}" in p.trade, (name, tin, p.trade)
        if name != "balanced":
            assert f"against {100 * rows['lite2@160']['auroc']['tinyimagenet']['auroc']:.1f}" in p.trade, p.trade


def test_one_view_runs_keep_the_identity_earlier_versions_recorded():
    """A run trained before views existed must still resume: its identity has no views / profile."""
    from dlsr_deploy.pipeline import _identity

    feat = {"data": ["x.npz"], "data_sha256": ["0"], "flip": False, "limit": None, "feature_engine": "ort"}
    one = _identity(feat, ModelConfig(profile="balanced"), 0.1, "given")["config"]
    assert "views" not in one and "profile" not in one
    two = _identity(feat, ModelConfig(views=(ViewConfig.parse("lite1@128"),), profile="x"), 0.1, "given")["config"]
    assert two["views"][0]["input_size"] == 128 and "profile" not in two


def test_a_view_repeating_the_primary_is_refused_before_any_work(tmp_path):
    from dlsr_deploy.cli import train

    r = CliRunner().invoke(
        train, ["--data", "demo:id", "--out", str(tmp_path / "r"), "--view", "lite2@160", "--cache-dir", str(tmp_path)]
    )
    assert r.exit_code != 0 and "differ from the others and from the primary view" in r.output, r.output
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob("*.npy"))


def test_a_refused_resume_of_a_views_run_computes_no_view_features(tmp_path, monkeypatch):
    """The resume check comes before the extra views' features (minutes on real data)."""
    from dlsr_deploy import pipeline

    def no_views(*a, **k):
        raise AssertionError("the views' features were computed before the resume was refused")

    monkeypatch.setattr(pipeline, "_view_features", no_views)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "training", "identity": {"holdout": 0.5}}))
    fcfg = FeatureConfig(backbone="efficientnet-lite0", input_size=32)
    with pytest.raises(ConfigError, match="holdout"):
        pipeline.run_train(
            "demo:id", run, fcfg, resume=True, limit=8, cache_dir=tmp_path / "c", native_size="given",
            views=(ViewConfig.parse("lite0@32:flip"),),
        )  # fmt: skip
