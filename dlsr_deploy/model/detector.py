"""Few-step reconstruction and scoring in PyTorch (the eager reference for every backend)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from dlsr_deploy.config import ScheduleConfig, ScoreConfig
from dlsr_deploy.model.denoiser import LFDN
from dlsr_deploy.registry import SCORES, reconstruction_scores
from dlsr_deploy.schedule import Plan, reconstruction_plan, stored_noise
from dlsr_deploy.scoring import LR_SIGN


def torch_mfsim(z0: torch.Tensor, zh: torch.Tensor, sizes: Sequence[int], options: dict) -> torch.Tensor:
    """-mean over layers of cos(z0_m, zh_m) [B] (same definition as dlsr_deploy.scoring.mfsim)."""
    skip_first = bool(options.get("skip_first", False))
    cos = []
    start = 0
    for m, s in enumerate(sizes):
        a, b = start, start + s
        start = b
        if skip_first and m == 0:
            continue
        x, y = z0[:, a:b], zh[:, a:b]
        num = (x * y).sum(dim=1)
        den = torch.sqrt((x * x).sum(dim=1)) * torch.sqrt((y * y).sum(dim=1))
        cos.append(num / torch.clamp(den, min=1e-8))
    return -torch.stack(cos, dim=1).mean(dim=1)


def torch_mse(z0: torch.Tensor, zh: torch.Tensor, sizes: Sequence[int], options: dict) -> torch.Tensor:
    """sum (z0 - zh)^2 [B]."""
    d = z0 - zh
    return (d * d).sum(dim=1)


def torch_scores(
    z0: torch.Tensor, zh: torch.Tensor, sizes: Sequence[int], skip_first: bool = False
) -> Dict[str, torch.Tensor]:
    """Every registered reconstruction score (dlsr_deploy.registry: mfsim, mse, ...) [B] in torch."""
    from dlsr_deploy.registry import SCORES, resolve

    opts = {"skip_first": skip_first}
    return {n: resolve(spec.torch)(z0, zh, sizes, opts) for n, spec in SCORES.items()}


class Reconstructor(nn.Module):
    """z0 [B, D] -> dict(z0_hat [B, D], mfsim [B], mse [B]); the plan and the stored noise
    are constants, so the same z0 always gives the same scores."""

    def __init__(
        self, lfdn: LFDN, plan: Plan, n0: np.ndarray, ns: np.ndarray, sizes: Sequence[int], skip_first: bool = False
    ):
        super().__init__()
        self.lfdn = lfdn
        self.plan = plan
        self.sizes = list(sizes)
        self.skip_first = skip_first
        self.register_buffer("n0", torch.from_numpy(np.ascontiguousarray(n0)))  # [R, D]
        self.register_buffer("ns", torch.from_numpy(np.ascontiguousarray(ns)))  # [R, K, D]
        with torch.no_grad():
            emb = [lfdn.time_embedding(torch.tensor([s.t])) for s in plan.steps]
        self.register_buffer("emb", torch.cat(emb, dim=0))  # [K, D]

    @property
    def n_noise(self) -> int:
        return self.n0.shape[0]

    def reconstruct(self, z0: torch.Tensor) -> torch.Tensor:
        """[R, B, D]: one reconstruction per stored noise draw."""
        r = self.n_noise
        b, d = z0.shape
        z0r = z0.unsqueeze(0).expand(r, b, d)
        z = self.plan.start_a * z0r + self.plan.start_b * self.n0.unsqueeze(1)
        z = z.reshape(r * b, d)
        for k, step in enumerate(self.plan.steps):
            x0 = self.lfdn.forward_emb(z, self.emb[k : k + 1].expand(z.shape[0], -1))
            z = step.a * z + step.b * x0
            if step.sigma != 0.0:
                z = z + step.sigma * self.ns[:, k].unsqueeze(1).expand(r, b, d).reshape(r * b, d)
        return z.reshape(r, b, d)

    def forward(self, z0: torch.Tensor) -> Dict[str, torch.Tensor]:
        zh = self.reconstruct(z0)
        r, b, d = zh.shape
        s = torch_scores(
            z0.unsqueeze(0).expand(r, b, d).reshape(r * b, d), zh.reshape(r * b, d), self.sizes, self.skip_first
        )
        out = {k: v.reshape(r, b).mean(dim=0) for k, v in s.items()}
        out["z0_hat"] = zh.mean(dim=0)
        return out


def build_reconstructor(lfdn: LFDN, score: ScoreConfig, sched: ScheduleConfig, sizes: Sequence[int]) -> Reconstructor:
    plan = reconstruction_plan(score, sched)
    n0, ns = stored_noise(lfdn.cfg.dim, plan, score.n_noise, score.noise_seed)
    return Reconstructor(lfdn, plan, n0, ns, sizes, score.mfsim_skip_first).eval()


@torch.no_grad()
def score_features(
    z0: np.ndarray,
    lfdn: LFDN,
    score: ScoreConfig,
    sched: ScheduleConfig,
    sizes: Sequence[int],
    *,
    first: Optional[LFDN] = None,
    batch_size: int = 512,
    progress: bool = False,
    desc: str = "scoring",
    with_z0_hat: bool = False,
) -> Dict[str, np.ndarray]:
    """The one eager scoring loop, for cached features: every registered reconstruction score (and
    lr_<score> when `first` is given; z0_hat float32 with `with_z0_hat`), float64 [N].

    LR = score(first-epoch model) - score(final model), both with the same stored noise."""
    from tqdm.auto import tqdm

    rec = build_reconstructor(lfdn, score, sched, sizes)
    rec_first = build_reconstructor(first, score, sched, sizes) if first is not None else None
    out: Dict[str, list] = {}
    for i in tqdm(range(0, len(z0), batch_size), desc=desc, disable=not progress, leave=False):
        zb = torch.from_numpy(np.ascontiguousarray(z0[i : i + batch_size], dtype=np.float32))
        s = rec(zb)
        res = {n: s[n] for n in reconstruction_scores()}
        if rec_first is not None:
            f = rec_first(zb)
            for n in reconstruction_scores():
                if SCORES[n].lr:
                    res[f"lr_{n}"] = LR_SIGN * (f[n] - s[n])
        for k, v in res.items():
            out.setdefault(k, []).append(v.numpy().astype(np.float64))
        if with_z0_hat:
            out.setdefault("z0_hat", []).append(s["z0_hat"].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}
