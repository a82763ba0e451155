import numpy as np
import pytest
import torch

from dlsr_deploy.errors import InputError
from dlsr_deploy.model.detector import torch_scores
from dlsr_deploy.scoring import mfsim, mse, normalisation, threshold_at_tpr


def test_mfsim_hand_computed():
    z0 = np.array([[1.0, 0.0, 1.0, 1.0]])
    zh = np.array([[1.0, 0.0, -1.0, -1.0]])  # layer 1 cos = 1, layer 2 cos = -1
    assert mfsim(z0, zh, [2, 2])[0] == pytest.approx(0.0)
    assert mfsim(z0, zh, [2, 2], skip_first=True)[0] == pytest.approx(1.0)
    assert mse(z0, zh)[0] == pytest.approx(8.0)


def test_torch_scores_match_numpy(rng):
    z0, zh = rng.normal(size=(5, 12)), rng.normal(size=(5, 12))
    t = torch_scores(torch.tensor(z0), torch.tensor(zh), [3, 4, 5])
    np.testing.assert_allclose(t["mfsim"].numpy(), mfsim(z0, zh, [3, 4, 5]), rtol=1e-10)
    np.testing.assert_allclose(t["mse"].numpy(), mse(z0, zh), rtol=1e-10)
    t = torch_scores(torch.tensor(z0), torch.tensor(zh), [3, 4, 5], skip_first=True)
    np.testing.assert_allclose(t["mfsim"].numpy(), mfsim(z0, zh, [3, 4, 5], True), rtol=1e-10)


def test_threshold_and_normalisation():
    s = np.arange(1, 101, dtype=float)
    thr = threshold_at_tpr(s, 0.95)
    assert np.mean(s <= thr) == pytest.approx(0.95)
    c, k = normalisation(s, thr)
    assert (thr - c) / k == pytest.approx(1.0) and (np.median(s) - c) / k == pytest.approx(0.0)
    with pytest.raises(InputError):
        threshold_at_tpr(np.array([]))
    with pytest.raises(InputError):
        threshold_at_tpr(np.array([1.0, np.nan]))
