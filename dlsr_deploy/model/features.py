"""Image -> z0, exactly as DESIGN.md section 3 fixes it.

uint8 NHWC -> float in [0, 1] -> bilinear resize to input_size -> ImageNet normalisation
-> backbone taps -> each tap resized to the stride-16 grid (bilinear, align_corners=True)
-> concat -> global average pool -> per-layer z-score (unbiased std + eps) -> z0 [B, D].

The whole path is one nn.Module so the ONNX export contains the preprocessing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlsr_deploy.config import FeatureConfig
from dlsr_deploy.errors import InputError


def layer_bounds(sizes: Sequence[int]) -> List[Tuple[int, int]]:
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


def zscore_layers(f: torch.Tensor, sizes: Sequence[int], eps: float) -> torch.Tensor:
    parts = []
    for a, b in layer_bounds(sizes):
        x = f[:, a:b]
        mean = x.mean(dim=1, keepdim=True)
        std = torch.sqrt(((x - mean) ** 2).sum(dim=1, keepdim=True) / (b - a - 1))  # unbiased
        parts.append((x - mean) / (std + eps))
    return torch.cat(parts, dim=1)


class FeatureExtractor(nn.Module):
    """images uint8 [B, H, W, 3] -> z0 float32 [B, D]."""

    def __init__(self, backbone: nn.Module, cfg: FeatureConfig):
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0))
        self.layer_sizes = list(backbone.tap_channels)
        self.fuse_index = list(backbone.tap_strides).index(16)

    @property
    def dim(self) -> int:
        return sum(self.layer_sizes)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        s = self.cfg.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        # (x/255 - mean)/std with the constants folded
        return (x - self.mean) * self.inv_std

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.backbone.forward_taps(x)
        grid = taps[self.fuse_index].shape[-2:]
        pooled = []
        for t in taps:
            if t.shape[-2:] != grid:
                t = F.interpolate(t, size=grid, mode="bilinear", align_corners=True)
            pooled.append(t.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.pooled(self.preprocess(images))
        return zscore_layers(f, self.layer_sizes, self.cfg.zscore_eps)


def build_extractor(cfg: FeatureConfig) -> FeatureExtractor:
    from dlsr_deploy.model.backbones import load_backbone

    backbone = load_backbone(cfg.backbone, cfg.weights)
    return FeatureExtractor(backbone, cfg).eval()


def check_images(images: np.ndarray, what: str = "images") -> None:
    if not isinstance(images, np.ndarray):
        raise InputError(f"{what}: expected a numpy array, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"{what}: expected uint8 [N, H, W, 3], got shape {list(images.shape)}")
    if images.dtype != np.uint8:
        raise InputError(f"{what}: expected dtype uint8, got {images.dtype}")
    if images.shape[0] == 0:
        raise InputError(f"{what}: the batch is empty")


def weights_digest(cfg: FeatureConfig) -> str:
    from dlsr_deploy.io import sha256_file
    from dlsr_deploy.model.backbones import default_weights_path

    path = Path(cfg.weights) if cfg.weights else default_weights_path(cfg.backbone)
    return sha256_file(path)


def cache_key(images: np.ndarray, cfg: FeatureConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    h.update(weights_digest(cfg).encode())
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    """$DLSR_CACHE/features (default ~/.cache/dlsr-deploy/features)."""
    from dlsr_deploy.io import cache_root

    return cache_root() / "features"


@torch.no_grad()
def extract_features(
    images: np.ndarray,
    cfg: FeatureConfig,
    *,
    extractor: Optional[FeatureExtractor] = None,
    batch_size: int = 64,
    cache_dir: Optional[Path] = None,
    progress: bool = True,
    desc: str = "features",
    engine: str = "eager",
    engine_factory: Optional[Callable] = None,
) -> np.ndarray:
    """z0 float32 [N, D] for uint8 images [N, H, W, 3]; cached on disk by content + config.

    engine "eager" runs the PyTorch extractor. Any other engine names a faster equivalent
    (e.g. "ort": the exported backbone graph on ONNX Runtime) that `engine_factory(images)`
    builds on a cache miss and returns as a function images -> z0, or None when it failed
    its parity check (then eager runs). The engine is part of the cache key.
    """
    check_images(images)
    path = None
    tag = "" if engine == "eager" else f"-{engine}"
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cfg.backbone}-{cfg.input_size}-{cache_key(images, cfg)}{tag}.npy"
        if path.exists():
            return np.load(path)
    fn = engine_factory(images) if engine != "eager" and engine_factory is not None else None
    if fn is None:
        if engine != "eager" and path is not None:  # parity failed: eager result, eager key
            path = Path(cache_dir) / f"{cfg.backbone}-{cfg.input_size}-{cache_key(images, cfg)}.npy"
            if path.exists():
                return np.load(path)
        extractor = extractor or build_extractor(cfg)
        fn = lambda x: extractor(torch.from_numpy(np.ascontiguousarray(x))).numpy()  # noqa: E731
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for i in range(0, len(images), batch_size):
            out.append(fn(images[i : i + batch_size]))
            bar.update(len(out[-1]))
    z = np.concatenate(out).astype(np.float32)
    if path is not None:
        from dlsr_deploy.io import atomic_write

        atomic_write(path, lambda p: np.save(open(p, "wb"), z))
    return z
