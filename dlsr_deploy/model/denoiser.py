"""LFDN: the latent feature diffusion network (an x0-predicting MLP), DESIGN.md section 3.

input:  SiLU(z_t) -> Linear D->W                      (W = width, 2D in the paper preset)
time:   sinusoidal(t, W) -> Linear W->D, SiLU, Linear D->D  = emb
blocks: h = Linear(SiLU(GN(x))) + Linear_e(SiLU(emb)); h = Linear0(SiLU(GN(h))); x += h
output: GN, SiLU, Linear0 W->D                         (Linear0 = zero-initialised)
GN is GroupNorm(1, W): a per-sample normalisation over all W features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlsr_deploy.config import DenoiserConfig


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[cos(t f_i), sin(t f_i)], f_i = 10000^(-i/half), i = 0..half-1 -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_dim, width)
        self.norm2 = nn.GroupNorm(1, width)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.fc1(self.act(self.norm1(x))) + self.emb(self.act(emb))
        return x + self.fc2(self.act(self.norm2(h)))


class LFDN(nn.Module):
    """x0-prediction network: (z_t [B, D] float, t [B] int) -> x0_hat [B, D]."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.cfg = cfg
        d, w = cfg.dim, cfg.hidden
        self.act = nn.SiLU()
        self.input_proj = nn.Linear(d, w)
        self.time_mlp = nn.Sequential(nn.Linear(w, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(ResBlock(w, d) for _ in range(cfg.blocks))
        self.out_norm = nn.GroupNorm(1, w)
        self.out = nn.Linear(w, d)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(timestep_embedding(t, self.cfg.hidden))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.forward_emb(z, self.time_embedding(t))

    def forward_emb(self, z: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Same as forward with a precomputed time embedding (the export folds it to a constant)."""
        x = self.input_proj(self.act(z))
        for block in self.blocks:
            x = block(x, emb)
        return self.out(self.act(self.out_norm(x)))
