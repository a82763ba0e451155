import numpy as np
import pytest

from dlsr_deploy.config import ScoreConfig
from dlsr_deploy.errors import ConfigError
from dlsr_deploy.schedule import alphas_cumprod, betas, ddim_timesteps, reconstruction_plan, stored_noise


def test_golden_values():
    # dlsr-paper.md section 3 table
    b, ab = betas(), alphas_cumprod()
    assert b.shape == (100,)
    assert b[0] == pytest.approx(0.0015) and b[99] == pytest.approx(0.0195)
    assert b[3] == pytest.approx(0.001746, abs=1e-6)
    assert ab[3] == pytest.approx(0.993527, abs=1e-6)
    assert ab[10] == pytest.approx(0.978961, abs=1e-6)
    assert ab[25] == pytest.approx(0.931923, abs=1e-6)
    assert ab[99] == pytest.approx(0.411750, abs=1e-6)


def test_ddim_plan_is_the_ddim_update():
    ab = alphas_cumprod()
    plan = reconstruction_plan(ScoreConfig(t_start=3, steps=2, eta=0.0))
    assert [s.t for s in plan.steps] == [3, 2]
    assert plan.start_a == pytest.approx(np.sqrt(ab[3])) and plan.start_b == pytest.approx(np.sqrt(1 - ab[3]))
    # explicit DDIM (eta=0) from t=3 to t=2 for random z, x0
    r = np.random.default_rng(0)
    z, x0 = r.normal(size=8), r.normal(size=8)
    eps = (z - np.sqrt(ab[3]) * x0) / np.sqrt(1 - ab[3])
    expected = np.sqrt(ab[2]) * x0 + np.sqrt(1 - ab[2]) * eps
    s = plan.steps[0]
    np.testing.assert_allclose(s.a * z + s.b * x0, expected, rtol=1e-12)
    last = plan.steps[-1]
    assert (last.a, last.b, last.sigma) == (0.0, 1.0, 0.0)  # returns x0_hat


def test_paper_plan_matches_official_arithmetic():
    ab = alphas_cumprod()
    plan = reconstruction_plan(ScoreConfig(mode="paper"))
    assert [s.t for s in plan.steps] == [3, 2, 1]
    # sigma values quoted in dlsr-paper.md 4.2: sigma_2 = 0.03287, sigma_1 = 0.02775, sigma_0 = 0
    assert plan.steps[0].sigma == pytest.approx(0.03287, abs=2e-5)
    assert plan.steps[1].sigma == pytest.approx(0.02775, abs=2e-5)
    assert plan.steps[2].sigma == 0.0
    # third call is a no-op: z unchanged
    assert plan.steps[2].a == pytest.approx(1.0, abs=1e-7) and plan.steps[2].b == pytest.approx(0.0, abs=1e-7)
    # step 1 explicitly (t_m = 3, k = 2): off-by-one coefficients
    r = np.random.default_rng(0)
    z, x0 = r.normal(size=5), r.normal(size=5)
    tm, k = 3, 2
    e = (z / np.sqrt(ab[tm]) - x0) / np.sqrt(1 / ab[tm] - 1)
    p = (z - np.sqrt(1 - ab[k]) * e) / np.sqrt(ab[k])
    sig = plan.steps[0].sigma
    expected = np.sqrt(ab[k - 1]) * p + np.sqrt(1 - ab[k - 1] - sig**2) * e
    s = plan.steps[0]
    np.testing.assert_allclose(s.a * z + s.b * x0, expected, rtol=1e-10)


def test_timesteps_and_errors():
    assert ddim_timesteps(10, 3) == [10, 7, 3]
    assert ddim_timesteps(1, 1) == [1]
    with pytest.raises(ConfigError):
        ScoreConfig(t_start=1, steps=3)
    with pytest.raises(ConfigError):
        reconstruction_plan(ScoreConfig(t_start=100, steps=1))


def test_stored_noise_is_seeded():
    plan = reconstruction_plan(ScoreConfig(steps=2))
    a = stored_noise(16, plan, 2, 7)
    b = stored_noise(16, plan, 2, 7)
    c = stored_noise(16, plan, 2, 8)
    assert a[0].shape == (2, 16) and a[1].shape == (2, 2, 16)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
