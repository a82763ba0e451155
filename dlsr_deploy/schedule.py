"""The diffusion schedule and the few-step reconstruction plan (numpy only).

This module is the single source of the coefficients: the PyTorch scorer and the ONNX
graph builder take them from `reconstruction_plan`; the exported graph holds them as
constants, so the runtime needs none of them.

Every reconstruction is linear in (z, x0_hat, noise), so a plan is
    z = start_a * z0 + start_b * n0                      (forward noising to t_start)
    for each step: x0_hat = model(z, t); z = a * z + b * x0_hat + sigma * n_step
and the reconstruction is the final z. Writing the update this way keeps the division by
sqrt(alpha_bar) out of the graph (it amplifies FP16 error) and makes the official
procedure and the corrected one two plans of one shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from dlsr_deploy.config import ScheduleConfig, ScoreConfig
from dlsr_deploy.errors import ConfigError


def betas(cfg: ScheduleConfig = ScheduleConfig()) -> np.ndarray:
    """beta_t = linspace(sqrt(beta_start), sqrt(beta_end), T)^2, float64, t = 0..T-1."""
    return np.linspace(np.sqrt(cfg.beta_start), np.sqrt(cfg.beta_end), cfg.timesteps, dtype=np.float64) ** 2


def alphas_cumprod(cfg: ScheduleConfig = ScheduleConfig()) -> np.ndarray:
    """alpha-bar_t for t = 0..T-1 (float64)."""
    return np.cumprod(1.0 - betas(cfg))


@dataclass(frozen=True)
class Step:
    """One model call: its timestep and the update z <- a * z + b * x0_hat (+ sigma * stored noise)."""

    t: int  # timestep the model is queried at
    a: float  # coefficient of the current z
    b: float  # coefficient of the model's x0 prediction
    sigma: float  # coefficient of this step's stored noise


@dataclass(frozen=True)
class Plan:
    """The whole test-time reconstruction: start noising coefficients and the steps."""

    start_a: float
    start_b: float
    steps: Tuple[Step, ...]

    @property
    def n_calls(self) -> int:
        """Number of model calls."""
        return len(self.steps)

    def to_dict(self) -> dict:
        """JSON form (stored in the manifest)."""
        return {
            "start_a": self.start_a,
            "start_b": self.start_b,
            "steps": [s.__dict__ for s in self.steps],
        }


def ddim_timesteps(t_start: int, steps: int) -> List[int]:
    """The K timesteps visited from t_start down to 0, evenly spaced."""
    ts = [int(round(t_start * (steps - i) / steps)) for i in range(steps)]
    if len(set(ts)) != len(ts):
        raise ConfigError(f"t_start={t_start} cannot be split into {steps} distinct DDIM steps")
    return ts


def reconstruction_plan(score: ScoreConfig, sched: ScheduleConfig = ScheduleConfig()) -> Plan:
    """The coefficients of the few-step reconstruction for a score config (ddim or paper mode)."""
    ab = alphas_cumprod(sched)
    if score.t_start >= sched.timesteps:
        raise ConfigError(f"t_start: expected < T={sched.timesteps}, got {score.t_start}")
    if score.mode == "paper":
        return _paper_plan(ab, eta=1.0)
    ts = ddim_timesteps(score.t_start, score.steps)
    steps = []
    for i, t in enumerate(ts):
        if i == len(ts) - 1:
            steps.append(Step(t, 0.0, 1.0, 0.0))  # reconstruction = final x0 prediction
            break
        tn = ts[i + 1]
        a_t, a_n = ab[t], ab[tn]
        sigma = score.eta * np.sqrt((1 - a_n) / (1 - a_t)) * np.sqrt(1 - a_t / a_n)
        # eps_hat = (z - sqrt(a_t) x0)/sqrt(1-a_t); z' = sqrt(a_n) x0 + sqrt(1-a_n-s^2) eps_hat + s n
        c = np.sqrt(max(1 - a_n - sigma**2, 0.0)) / np.sqrt(1 - a_t)
        steps.append(Step(t, float(c), float(np.sqrt(a_n) - c * np.sqrt(a_t)), float(sigma)))
    t0 = score.t_start
    return Plan(float(np.sqrt(ab[t0])), float(np.sqrt(1 - ab[t0])), tuple(steps))


def _paper_plan(ab: np.ndarray, eta: float = 1.0) -> Plan:
    """The official test procedure (dlsr-paper.md section 4.2): noise to t=3, model at
    t_m = 3, 2, 1 with DDIM coefficients taken at k = t_m - 1 (the off-by-one) and
    alpha_bar[-1] := alpha_bar[0]; eta = 1; returns the last iterate, not x0_hat."""
    steps = []
    for t_m in (3, 2, 1):
        k = t_m - 1
        a_m, a_k = ab[t_m], ab[k]
        a_prev = ab[k - 1] if k >= 1 else ab[0]
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a_k)) * np.sqrt(1 - a_k / a_prev)
        e1 = 1.0 / np.sqrt(1 - a_m)  # eps_hat = e1 z + e2 x0
        e2 = -1.0 / np.sqrt(1.0 / a_m - 1.0)
        s = np.sqrt(1 - a_k)
        c = np.sqrt(max(1 - a_prev - sigma**2, 0.0))
        a = np.sqrt(a_prev) * (1 - s * e1) / np.sqrt(a_k) + c * e1
        b = -np.sqrt(a_prev) * s * e2 / np.sqrt(a_k) + c * e2
        steps.append(Step(t_m, float(a), float(b), float(sigma)))
    return Plan(float(np.sqrt(ab[3])), float(np.sqrt(1 - ab[3])), tuple(steps))


def stored_noise(dim: int, plan: Plan, n_noise: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """The bundle's constant noise: start noise [n_noise, D] and step noise
    [n_noise, n_steps, D] (float32, numpy PCG64 seeded with `seed`)."""
    rng = np.random.default_rng(seed)
    n0 = rng.standard_normal((n_noise, dim)).astype(np.float32)
    ns = rng.standard_normal((n_noise, plan.n_calls, dim)).astype(np.float32)
    return n0, ns
