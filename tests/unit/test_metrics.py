import numpy as np
import pytest

from dlsr_deploy.errors import InputError
from dlsr_deploy.metrics import auroc, average_precision, fpr_at_tpr, ood_metrics, roc_curve


def test_auroc_hand_computed():
    # pairs (ood > id): ood 3 beats id 1,2 ; ood 2.5 beats 1,2 ; ood 1.5 beats 1 -> 5 of 6
    assert auroc([1, 2], [3, 2.5, 1.5]) == pytest.approx(5 / 6)
    assert auroc([0, 0], [1, 1]) == 1.0
    assert auroc([1, 1], [0, 0]) == 0.0


def test_auroc_ties_count_half():
    assert auroc([1, 1], [1, 1]) == 0.5
    assert auroc([0, 1], [1, 2]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)


def test_fpr95_hand_computed():
    id_s = np.arange(1, 101)  # 95th percentile = 95.05
    ood = np.array([10, 50, 95, 96, 200])
    assert fpr_at_tpr(id_s, ood) == pytest.approx(3 / 5)  # 10, 50, 95 accepted as ID


def test_average_precision_hand_computed():
    # ranked: p(0.9) n(0.8) p(0.7) -> precision at the two positives 1, 2/3 -> AP = (1 + 2/3)/2
    assert average_precision([0.9, 0.7], [0.8]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([3, 2], [1, 0]) == 1.0


def test_aupr_in_and_out_directions():
    m = ood_metrics([0, 1, 2], [3, 4, 5])
    assert m["auroc"] == 1 and m["aupr_in"] == 1 and m["aupr_out"] == 1 and m["fpr95"] == 0
    m = ood_metrics([3, 4, 5], [0, 1, 2])
    assert m["auroc"] == 0 and m["fpr95"] == 1


def test_roc_curve_endpoints():
    fpr, tpr = roc_curve([0, 1, 2], [1.5, 3])
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


@pytest.mark.parametrize("a,b", [([], [1.0]), ([1.0], []), ([np.nan], [1.0])])
def test_metrics_reject_bad_input(a, b):
    with pytest.raises(InputError):
        auroc(a, b)


def test_matches_sklearn_when_available():
    sk = pytest.importorskip("sklearn.metrics")
    r = np.random.default_rng(1)
    a, b = r.normal(0, 1, 300), r.normal(0.7, 1.2, 200)
    y = np.r_[np.zeros(300), np.ones(200)]
    s = np.r_[a, b]
    assert auroc(a, b) == pytest.approx(sk.roc_auc_score(y, s))
    assert average_precision(b, a) == pytest.approx(sk.average_precision_score(y, s))
    assert average_precision(-a, -b) == pytest.approx(sk.average_precision_score(1 - y, -s))
