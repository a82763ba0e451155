"""The accuracy guard of low-precision bundles (dlsr_deploy/precision_guard.py): numpy only."""

import numpy as np
import pytest

from dlsr_deploy.errors import InputError
from dlsr_deploy.precision_guard import guard, margin


def _sets(seed=0, n_id=2000, n_ood=400):
    r = np.random.default_rng(seed)
    return {
        "id": r.normal(0, 1, n_id),
        "tin": r.normal(1.5, 1, n_ood),
        "dtd": r.normal(3, 1, n_ood),
        "probe:blur": r.normal(1, 1, n_ood),
        "probe:noise": r.normal(2, 1, n_ood),
    }


def _moved(sets, sigma, seed=1):
    r = np.random.default_rng(seed)
    return {k: v + r.normal(0, sigma, v.shape) for k, v in sets.items()}


def test_a_faithful_candidate_passes_and_a_noisy_one_is_refused_with_every_number():
    ref = _sets()
    ok = guard(ref, _moved(ref, 0.03), ["tin", "dtd"], ["probe:blur", "probe:noise"])
    assert ok["passed"] and not ok["failures"] and ok["flips"] < 0.02 and margin(ok) > 0
    bad = guard(ref, _moved(ref, 1.5), ["tin", "dtd"], ["probe:blur", "probe:noise"])
    assert not bad["passed"] and margin(bad) < 0
    text = " | ".join(bad["failures"])
    for what in ("tin: AUROC", "dtd: AUROC", "probe mean: AUROC", "FPR@95TPR", "decisions flipped"):
        assert what in text, text


def test_a_shifted_threshold_share_is_caught_even_when_ranks_are_equal():
    """ID scores compressed towards the OOD side: AUROC barely moves, the flagged share does."""
    ref = _sets()
    cand = {k: v.copy() for k, v in ref.items()}
    cand["id"][1::2] = np.where(cand["id"][1::2] > 1.0, cand["id"][1::2] + 5.0, cand["id"][1::2])
    res = guard(ref, cand, ["tin", "dtd"])
    assert not res["passed"]
    assert any("held-out ID images flagged" in f for f in res["failures"]), res["failures"]


def test_small_sets_allow_one_image():
    ref = {"id": np.arange(24.0), "ood": np.arange(100.0, 140.0)}
    cand = {"id": ref["id"].copy(), "ood": ref["ood"].copy()}
    cand["id"][23] = 60.0  # one more ID image above the threshold (below every OOD one): one flip, one flagged
    res = guard(ref, cand, ["ood"])
    assert res["passed"], res["failures"]


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda c: c.pop("tin"), "set 'tin' is missing"),
        (lambda c: c.__setitem__("tin", c["tin"][:-1]), "same length"),
        (lambda c: c["dtd"].__setitem__(0, np.nan), "non-finite"),
    ],
)
def test_bad_inputs_name_the_set(edit, needle):
    ref = _sets(n_id=50, n_ood=20)
    cand = {k: v.copy() for k, v in ref.items()}
    edit(cand)
    with pytest.raises(InputError, match=needle):
        guard(ref, cand, ["tin", "dtd"])


def test_nothing_to_compare_on_is_not_a_pass():
    ref = {"id": np.arange(10.0)}
    with pytest.raises(InputError, match="no OOD set and no shift probe"):
        guard(ref, {"id": ref["id"].copy()}, [])
