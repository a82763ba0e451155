"""The selection rule of issue 22 (dlsr_deploy/selection.py): the bootstrap replicates are the
statistics they claim, the intervals cover, and a candidate replaces the incumbent only on
evidence (not worse anywhere, better on the worst real set), ties going to the simpler score."""

import numpy as np
import pytest

from dlsr_deploy.errors import InputError
from dlsr_deploy.metrics import auroc, fpr_at_tpr
from dlsr_deploy.selection import (
    Evidence,
    IdReplicates,
    Resample,
    auroc_replicates,
    auroc_with_interval,
    choose,
    complexity,
    fpr95_replicates,
)


def test_identity_resample_gives_the_point_statistics():
    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=500), 1)  # ties between and within the sets
    b = np.round(rng.normal(0.7, 1, size=300), 1)
    ones_a, ones_b = np.ones((3, a.size)), np.ones((3, b.size))
    np.testing.assert_allclose(auroc_replicates(a, b, ones_a, ones_b), auroc(a, b), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fpr95_replicates(a, b, ones_a, ones_b), fpr_at_tpr(a, b), rtol=0, atol=1e-12)


def test_replicates_equal_the_statistic_on_the_resampled_sets():
    """A count matrix is a resample: AUROC / FPR95 on the explicitly repeated images match."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=200), rng.normal(1.0, 1, size=120)
    rs = Resample.draw(a.size, {"x": b.size}, n_boot=5, seed=3)
    side = IdReplicates(a, rs.id_counts)
    got_auroc, got_fpr = side.auroc(b, rs.ood_counts["x"]), side.fpr(b, rs.ood_counts["x"])
    for r in range(5):
        ra = np.repeat(a, rs.id_counts[r].astype(int))
        rb = np.repeat(b, rs.ood_counts["x"][r].astype(int))
        assert got_auroc[r] == pytest.approx(auroc(ra, rb), abs=1e-12)
        assert got_fpr[r] == pytest.approx(fpr_at_tpr(ra, rb), abs=1e-12)


def test_joint_resample_shares_the_id_side_and_is_stable_per_set():
    one = Resample.draw(100, {"tin": 50}, n_boot=20, seed=0)
    two = Resample.draw(100, {"dtd": 30, "tin": 50}, n_boot=20, seed=0)
    np.testing.assert_array_equal(one.id_counts, two.id_counts)  # one ID draw for every set
    np.testing.assert_array_equal(one.ood_counts["tin"], two.ood_counts["tin"])  # adding a set moves nothing
    assert (two.id_counts.sum(axis=1) == 100).all() and (two.ood_counts["dtd"].sum(axis=1) == 30).all()
    assert not np.array_equal(Resample.draw(100, {"tin": 50}, 20, seed=1).id_counts, one.id_counts)


def test_interval_covers_the_true_auroc():
    """Percentile intervals of 200 replicates cover the population AUROC in most of 40 samples
    (two unit Gaussians 1 apart: AUROC = Phi(1 / sqrt 2) = 0.7602)."""
    truth, hits = 0.76025, 0
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        r = auroc_with_interval(rng.normal(size=300), rng.normal(1.0, 1, size=200), seed=seed)
        assert r["auroc_lo"] <= r["auroc"] <= r["auroc_hi"]
        hits += r["auroc_lo"] <= truth <= r["auroc_hi"]
    assert hits >= 33  # 95 % nominal; binomial(40, 0.95) is below 34 with probability ~3 %


def test_bad_scores_are_refused():
    with pytest.raises(InputError, match="finite"):
        auroc_with_interval([0.1, np.nan], [0.2])
    with pytest.raises(InputError, match="non-empty"):
        auroc_with_interval([], [0.2])
    with pytest.raises(InputError, match="n_boot"):
        Resample.draw(10, {"x": 5}, n_boot=0)


def _evidence(shift: dict, n: int = 2000, seed: int = 0) -> Evidence:
    """ID ~ N(0, 1) for every candidate; on set s candidate c's OOD ~ N(shift[c][s], 1)."""
    rng = np.random.default_rng(seed)
    sets = list(next(iter(shift.values())))
    ids = {c: rng.normal(size=n) for c in shift}
    ood = {s: {c: rng.normal(shift[c][s], 1, size=n // 2) for c in shift} for s in sets}
    probes = [s for s in sets if s.startswith("probe:")]
    return Evidence(id=ids, ood=ood, real=[s for s in sets if s not in probes], probes=probes)


def test_a_clearly_better_candidate_replaces_the_incumbent():
    ev = _evidence({"maha_ridge": {"a": 1.0, "b": 1.0}, "gauss_layer": {"a": 1.6, "b": 1.6}})
    res = choose(ev, "maha_ridge", ["maha_ridge", "gauss_layer"])
    assert res["chosen"] == "gauss_layer" and res["steps"][0]["replaces"]
    assert res["table"]["gauss_layer"]["a"]["lo"] > res["table"]["maha_ridge"]["a"]["hi"]


def test_better_on_one_set_worse_on_another_does_not_replace():
    """The failure of issue 22: a mean-of-two-sets winner that is worse beyond its interval on one set."""
    ev = _evidence({"maha_ridge": {"a": 1.0, "b": 2.0}, "gauss_layer": {"a": 1.5, "b": 1.2}})
    step = choose(ev, "maha_ridge", ["gauss_layer"])["steps"][0]
    assert not step["not_worse"] and step["real"]["b"]["hi"] < 0
    assert step["replaces"] is False


def test_worse_on_the_probe_mean_blocks_a_replacement():
    ev = _evidence(
        {
            "maha_ridge": {"a": 1.0, "b": 1.0, "probe:blur": 2.0},
            "gauss_layer": {"a": 1.5, "b": 1.5, "probe:blur": 1.0},
        }
    )
    step = choose(ev, "maha_ridge", ["gauss_layer"])["steps"][0]
    assert step["better_on_worst"] and step["probe_mean"]["hi"] < 0 and not step["replaces"]


def test_a_tie_goes_to_the_simpler_score():
    """Equal populations: nothing beats the incumbent, and candidates are tried simplest first."""
    same = {"a": 1.0, "b": 1.0}
    ev = _evidence({"maha_ridge": same, "sum_maha_ridge_gauss_layer": same, "gauss_layer": same})
    res = choose(ev, "maha_ridge", ["sum_maha_ridge_gauss_layer", "gauss_layer"])
    assert res["chosen"] == "maha_ridge"
    assert [s["candidate"] for s in res["steps"]] == ["gauss_layer", "sum_maha_ridge_gauss_layer"]
    assert complexity("maha_ridge") == 1 and complexity("sum_mfsim_gauss_layer") == 2
    assert complexity("max_mfsim_maha_ridge_gauss_layer_dn") == 3


def test_near_chance_is_flagged():
    ev = _evidence({"maha_ridge": {"a": 0.0}, "gauss_layer": {"a": 0.05}})
    assert choose(ev, "maha_ridge", ["gauss_layer"])["near_chance"] is True
