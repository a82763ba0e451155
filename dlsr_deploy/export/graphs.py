"""The modules that are traced into ONNX.

They reuse the trained weights but are written for deployment:
  * preprocessing (cast, resize, normalisation) is inside the backbone graph;
  * the "resize each tap to the stride-16 grid (bilinear, align_corners=True), then
    global-average-pool" step is a fixed weighted spatial sum (one MatMul per tap). A
    bilinear resize is linear, so its mean over the output grid equals a weighted mean
    of the input: this is exact, cheaper, and keeps Resize(align_corners) out of the graph;
  * GroupNorm(1) is written as ReduceMean-based arithmetic in FP32, so no
    GroupNormalization / InstanceNormalization op reaches TensorRT's parser (whose
    GroupNormalization(num_groups=1) is wrong, NVIDIA/TensorRT#4756) and the statistics
    stay in FP32 in FP16 graphs;
  * the DDIM plan, the stored noise and the per-step time terms are constants;
  * in FP16 graphs, weights and activations are FP16; inputs, outputs, the z-score,
    GroupNorm statistics, the DDIM arithmetic and the score reductions are FP32.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlsr_deploy.model.backbones import fold_batchnorm
from dlsr_deploy.model.denoiser import LFDN
from dlsr_deploy.model.detector import Reconstructor, torch_scores
from dlsr_deploy.model.features import FeatureExtractor, zscore_layers
from dlsr_deploy.registry import SCORES
from dlsr_deploy.scoring import LR_SIGN, Combination, DensityHead, bundle_score_names, layer_bounds


def bilinear_mean_weights(n: int, m: int) -> np.ndarray:
    """w [n] with mean_j(resize_align_corners(x, m))_j == sum_i w_i x_i for 1-D x of length n."""
    if n == m:
        return np.full(n, 1.0 / n)
    w = np.zeros(n)
    for j in range(m):
        src = j * (n - 1) / (m - 1) if m > 1 else 0.0
        lo = min(int(np.floor(src)), n - 1)
        hi = min(lo + 1, n - 1)
        frac = src - lo
        w[lo] += 1 - frac
        w[hi] += frac
    return w / m


class BackboneGraph(nn.Module):
    """images uint8 [B, H, W, 3] -> z0 float32 [B, D]."""

    def __init__(self, extractor: FeatureExtractor, native_size: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg = extractor.cfg
        self.dtype = dtype
        # BatchNorm folded in FP32 before any cast (fold_batchnorm: halves the FP16 z0 error)
        self.backbone = fold_batchnorm(extractor.backbone).to(dtype).eval()
        self.register_buffer("mean", extractor.mean.clone())
        self.register_buffer("inv_std", extractor.inv_std.clone())
        self.layer_sizes = list(extractor.layer_sizes)
        s = self.cfg.input_size
        with torch.no_grad():
            taps = extractor.backbone.forward_taps(torch.zeros(1, 3, s, s))
        grid = taps[extractor.fuse_index].shape[-2:]
        for i, t in enumerate(taps):
            h, w = t.shape[-2:]
            wt = np.outer(bilinear_mean_weights(h, grid[0]), bilinear_mean_weights(w, grid[1])).reshape(-1, 1)
            self.register_buffer(f"pool{i}", torch.from_numpy(wt).float())
        self.n_taps = len(taps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # normalise first, then resize: bilinear weights sum to one, so the order does not
        # change the result (up to float rounding), and at 32 -> 224 px the normalisation
        # touches 49x fewer pixels
        x = (images.permute(0, 3, 1, 2).to(torch.float32) - self.mean) * self.inv_std
        s = self.cfg.input_size
        if x.shape[-2] != s or x.shape[-1] != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        x = x.to(self.dtype)
        taps = self.backbone.forward_taps(x)
        pooled = []
        for i, t in enumerate(taps):
            t = t.to(torch.float32).flatten(2)  # [B, C, HW]
            pooled.append(torch.matmul(t, getattr(self, f"pool{i}")).squeeze(-1))
        return zscore_layers(torch.cat(pooled, dim=1), self.layer_sizes, self.cfg.zscore_eps)


class ViewsBackboneGraph(nn.Module):
    """images uint8 [B, H, W, 3] -> the bundle's z0 of several views [B, D + D_1 + ...]: the primary
    view's z0, then each extra view's (`dlsr_deploy.views`). Views that share a backbone and input
    size (a flip view of the primary) run as one batch through one copy of its weights."""

    def __init__(self, primary: BackboneGraph, views: Sequence[Tuple[BackboneGraph, bool]]):
        super().__init__()
        mods, keys, self.route = [primary], [(primary.cfg.backbone, primary.cfg.input_size)], [(0, False)]
        for g, flip in views:
            key = (g.cfg.backbone, g.cfg.input_size)
            if key not in keys:
                keys.append(key)
                mods.append(g)
            self.route.append((keys.index(key), bool(flip)))
        self.mods = nn.ModuleList(mods)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        out: List[Optional[torch.Tensor]] = [None] * len(self.route)
        for m, mod in enumerate(self.mods):
            mine = [(i, flip) for i, (k, flip) in enumerate(self.route) if k == m]
            x = torch.cat([images.flip(2) if flip else images for _, flip in mine], dim=0)
            z = mod(x)
            for j, (i, _) in enumerate(mine):
                out[i] = z[j * b : (j + 1) * b]
        return torch.cat(out, dim=1)


class _GN1(nn.Module):
    """GroupNorm(num_groups=1) over the last dim, statistics in FP32."""

    def __init__(self, gn: nn.GroupNorm, dtype: torch.dtype):
        super().__init__()
        self.eps = gn.eps
        self.dtype = dtype
        self.weight = nn.Parameter(gn.weight.detach().to(dtype), requires_grad=False)
        self.bias = nn.Parameter(gn.bias.detach().to(dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # written in the ReduceMean-Sub-Pow-ReduceMean-Add-Sqrt-Div form that ONNX Runtime
        # (LayerNormFusion) and TensorRT recognise as a normalisation over the last axis
        x32 = x.to(torch.float32)
        d = x32 - x32.mean(dim=-1, keepdim=True)
        var = d.pow(2).mean(dim=-1, keepdim=True)
        y = (d / torch.sqrt(var + self.eps)).to(self.dtype)
        return y * self.weight + self.bias


class _MatMulLinear(nn.Module):
    """x @ W^T + b written as MatMul + Add (not Gemm), so weight-only quantisers and
    TensorRT's MatMul fusions see a plain MatMul with a constant weight."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("weight_t", linear.weight.detach().t().contiguous().to(dtype))
        self.register_buffer("bias", linear.bias.detach().to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight_t) + self.bias


class _DeployLFDN(nn.Module):
    """LFDN with the time embedding's per-block terms folded into constants per step."""

    def __init__(self, lfdn: LFDN, timesteps: Sequence[int], dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        src = lfdn.eval()

        def lin(m):
            return _MatMulLinear(m, dtype)

        self.input_proj = lin(src.input_proj)
        self.fc1 = nn.ModuleList(lin(b.fc1) for b in src.blocks)
        self.fc2 = nn.ModuleList(lin(b.fc2) for b in src.blocks)
        self.n1 = nn.ModuleList(_GN1(b.norm1, dtype) for b in src.blocks)
        self.n2 = nn.ModuleList(_GN1(b.norm2, dtype) for b in src.blocks)
        self.out_norm = _GN1(src.out_norm, dtype)
        self.out = lin(src.out)
        with torch.no_grad():
            fc1_bias = torch.stack([b.fc1.bias.detach() for b in src.blocks])  # [blocks, W]
            for k, t in enumerate(timesteps):
                emb = F.silu(src.time_embedding(torch.tensor([t])))
                terms = torch.cat([b.emb(emb) for b in src.blocks], dim=0)  # [blocks, W]
                # the step's time term folded into fc1's bias (in FP32, then cast): one
                # MatMul + Add per block, which runtimes fuse into a single GEMM
                self.register_buffer(f"bias1_{k}", (fc1_bias + terms).to(dtype))

    def forward(self, z: torch.Tensor, k: int) -> torch.Tensor:
        bias1 = getattr(self, f"bias1_{k}")
        x = self.input_proj(F.silu(z.to(self.dtype)))
        for j in range(len(self.fc1)):
            h = torch.matmul(F.silu(self.n1[j](x)), self.fc1[j].weight_t) + bias1[j]
            x = x + self.fc2[j](F.silu(self.n2[j](h)))
        return self.out(F.silu(self.out_norm(x))).to(torch.float32)


class _DeployReconstructor(nn.Module):
    def __init__(self, rec: Reconstructor, dtype: torch.dtype):
        super().__init__()
        self.plan = rec.plan
        self.net = _DeployLFDN(rec.lfdn, [s.t for s in rec.plan.steps], dtype)
        self.register_buffer("n0", rec.n0.clone())
        self.register_buffer("ns", rec.ns.clone())

    def forward(self, z0: torch.Tensor) -> torch.Tensor:
        """-> [R, B, D] reconstructions (FP32)."""
        r = self.n0.shape[0]
        d = z0.shape[1]
        z = (self.plan.start_a * z0.unsqueeze(0) + self.plan.start_b * self.n0.unsqueeze(1)).reshape(-1, d)
        for k, step in enumerate(self.plan.steps):
            x0 = self.net(z, k)
            if step.a == 0.0 and step.sigma == 0.0:
                z = x0 if step.b == 1.0 else step.b * x0
            else:
                z = step.a * z + step.b * x0
                if step.sigma != 0.0:
                    z = (z.reshape(r, -1, d) + step.sigma * self.ns[:, k].unsqueeze(1)).reshape(-1, d)
        return z.reshape(r, -1, d)


class _DensityScores(nn.Module):
    """Density heads in FP32 (every bundle): ||(f(z0) - mean) @ proj||^2 per head, f = l2
    normalisation for heads fitted on l2-normalised z0. A block-diagonal head (gauss_layer)
    runs one small MatMul per tap layer: 117k instead of 262k weights read per call. bounds:
    {head: (start, end)} of the z0 slice a head reads (an extra view's); default the whole z0."""

    def __init__(self, heads: Dict[str, DensityHead], bounds: Optional[Dict[str, Tuple[int, int]]] = None):
        super().__init__()
        self.names = list(heads)
        self.bounds = [(bounds or {}).get(n) for n in self.names]
        self.l2 = [bool(h.l2) for h in heads.values()]
        self.blocks = [list(h.blocks) for h in heads.values()]
        for i, h in enumerate(heads.values()):
            self.register_buffer(f"mean{i}", torch.from_numpy(np.asarray(h.mean, np.float32)))
            if h.blocks:
                for j, (a, b) in enumerate(layer_bounds(h.blocks)):
                    self.register_buffer(
                        f"proj{i}_{j}", torch.from_numpy(np.ascontiguousarray(h.proj[a:b, a:b], np.float32))
                    )
            else:
                self.register_buffer(f"proj{i}", torch.from_numpy(np.ascontiguousarray(h.proj, np.float32)))

    def forward(self, z0: torch.Tensor) -> Dict[str, torch.Tensor]:
        full = z0.to(torch.float32)
        norms: Dict[Optional[Tuple[int, int]], torch.Tensor] = {}
        out = {}
        for i, name in enumerate(self.names):
            bd = self.bounds[i]
            z = full if bd is None else full[:, bd[0] : bd[1]]
            if self.l2[i] and bd not in norms:
                norms[bd] = z / torch.clamp(torch.sqrt((z * z).sum(dim=1, keepdim=True)), min=1e-12)
            d = (norms[bd] if self.l2[i] else z) - getattr(self, f"mean{i}")
            if self.blocks[i]:
                parts = [
                    torch.matmul(d[:, a:b], getattr(self, f"proj{i}_{j}"))
                    for j, (a, b) in enumerate(layer_bounds(self.blocks[i]))
                ]
                out[name] = sum((p * p).sum(dim=1) for p in parts)
            else:
                y = torch.matmul(d, getattr(self, f"proj{i}"))
                out[name] = (y * y).sum(dim=1)
        return out


def combine_torch(c: Combination, scores: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Combination.combine in FP32 torch (same arithmetic as dlsr_deploy.scoring)."""
    z = torch.stack([(scores[n] - m) / s for n, m, s in zip(c.components, c.center, c.scale)], dim=0)
    return z.mean(dim=0) if c.how == "sum" else z.max(dim=0).values


class DenoiserGraph(nn.Module):
    """z0 float32 [B, D] -> score_<DLSR score>... (every registered reconstruction score, then
    lr_<score> with the first-epoch model), score_<density head>..., score_<combination>...,
    z0_hat (all FP32)."""

    def __init__(
        self,
        rec: Reconstructor,
        first: Optional[Reconstructor],
        dtype: torch.dtype = torch.float32,
        heads: Optional[Dict[str, DensityHead]] = None,
        combos: Sequence[Combination] = (),
        bounds: Optional[Dict[str, Tuple[int, int]]] = None,
    ):
        super().__init__()
        self.sizes = list(rec.sizes)
        self.dim = int(sum(rec.sizes))  # the primary view's z0 (the bundle's z0 may hold extra views after it)
        self.skip_first = rec.skip_first
        self.final = _DeployReconstructor(rec, dtype)
        self.first = _DeployReconstructor(first, dtype) if first is not None else None
        self.density = _DensityScores(heads, bounds) if heads else None
        self.combos = list(combos)

    @property
    def score_names(self) -> List[str]:
        return bundle_score_names(
            self.first is not None, self.density.names if self.density else [], [c.name for c in self.combos]
        )

    @property
    def output_names(self) -> List[str]:
        return [f"score_{n}" for n in self.score_names] + ["z0_hat"]

    def _scores(self, z0: torch.Tensor, zh: torch.Tensor) -> Dict[str, torch.Tensor]:
        r, b, d = zh.shape
        z0r = z0.unsqueeze(0).expand(r, b, d).reshape(-1, d)
        s = torch_scores(z0r, zh.reshape(-1, d), self.sizes, self.skip_first)
        return {k: v.reshape(r, b).mean(dim=0) for k, v in s.items()}

    def forward(self, z0: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        full, z0 = z0, z0[:, : self.dim]
        zh = self.final(z0)
        s = self._scores(z0, zh)
        if self.first is not None:
            f = self._scores(z0, self.first(z0))
            for base, spec in SCORES.items():
                if spec.lr:
                    s[f"lr_{base}"] = LR_SIGN * (f[base] - s[base])
        if self.density is not None:
            s.update(self.density(full))
        for c in self.combos:
            s[c.name] = combine_torch(c, s)
        return tuple(s[n] for n in self.score_names) + (zh.mean(dim=0),)


class HeadsGraph(nn.Module):
    """z0 float32 [B, D] -> score_<density head>..., score_<combination of density heads>... (FP32
    in every bundle): what a density headline needs, without the denoiser."""

    def __init__(
        self,
        heads: Dict[str, DensityHead],
        combos: Sequence[Combination] = (),
        bounds: Optional[Dict[str, Tuple[int, int]]] = None,
    ):
        super().__init__()
        self.density = _DensityScores(heads, bounds)
        self.combos = [c for c in combos if all(x in heads for x in c.components)]

    @property
    def score_names(self) -> List[str]:
        return self.density.names + [c.name for c in self.combos]

    @property
    def output_names(self) -> List[str]:
        return [f"score_{n}" for n in self.score_names]

    def forward(self, z0: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        s = self.density(z0)
        for c in self.combos:
            s[c.name] = combine_torch(c, s)
        return tuple(s[n] for n in self.score_names)


class PipelineGraph(nn.Module):
    """images uint8 -> scores and z0_hat, plus z0."""

    def __init__(self, backbone: BackboneGraph, denoiser: DenoiserGraph):
        super().__init__()
        self.backbone = backbone
        self.denoiser = denoiser

    @property
    def output_names(self) -> List[str]:
        return self.denoiser.output_names + ["z0"]

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        z0 = self.backbone(images)
        return tuple(self.denoiser(z0)) + (z0,)
