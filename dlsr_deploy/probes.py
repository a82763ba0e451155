"""Synthetic shift probes: OOD test sets made from held-out ID images alone (numpy + Pillow).

A user choosing a detector has the OOD images they happen to have; a score tuned to those
can be the one that generalises worst. These probes add evidence nobody tuned to: each is a
named, seeded transform of ID images. They follow the corruption families of ImageNet-C
(Hendrycks & Dietterich, ICLR 2019: noise, blur, digital - JPEG, pixelate, contrast) and the
structure-breaking "far-OOD" constructions used in the OOD literature (patch permutations as in
Jigsaw-style shuffles; blends of two images, the "mixup" outliers of e.g. Tack et al. CSI, 2020).

Not every transform is a shift for a detector of *semantic* novelty. OpenOOD v1.5 (Zhang et al.
2023) calls covariate-shifted ID data ("full-spectrum" OOD) *ID*: a greyscale or rotated cat is
still a cat. So each probe has a kind:

- `shift`: the image no longer looks like the ID data (noise, blur, JPEG at quality 5,
  pixelation, contrast collapse, patch shuffles, blends). The selection rule
  (`dlsr_deploy.selection`) uses the mean AUROC over these.
- `content`: the content survives (greyscale, 180-degree rotation, channel permutation, colour
  inversion). Reported next to the others, never used to choose: a detector that flags them is
  not better, and one that does not is not worse.

Every probe takes uint8 [N, H, W, 3] and a seed and returns uint8 [N, H, W, 3] of the same size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from dlsr_deploy.errors import InputError


@dataclass(frozen=True)
class Probe:
    """A named transform; kind 'shift' (counts for selection) or 'content' (reported only)."""

    name: str
    kind: str
    stands_for: str
    fn: Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _pil_each(images: np.ndarray, op) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(op(Image.fromarray(im)), dtype=np.uint8) for im in images])


def _blur(x, rng):
    from PIL import ImageFilter

    radius = max(1.0, x.shape[1] / 16.0)
    return _pil_each(x, lambda im: im.filter(ImageFilter.GaussianBlur(radius)))


def _noise(x, rng):
    return np.clip(x.astype(np.float32) + rng.normal(0.0, 40.0, x.shape), 0, 255).round().astype(np.uint8)


def _salt_pepper(x, rng):
    out = x.copy()
    mask = rng.random(x.shape[:3])
    out[mask < 0.05] = 0
    out[mask > 0.95] = 255
    return out


def _jpeg5(x, rng):
    import io

    from PIL import Image

    def enc(im):
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=5)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    return _pil_each(x, enc)


def _pixelate(x, rng):
    from PIL import Image

    s = x.shape[1]
    small = max(2, s // 8)
    return _pil_each(x, lambda im: im.resize((small, small), Image.BILINEAR).resize((s, s), Image.NEAREST))


def _contrast(x, rng):
    f = x.astype(np.float32)
    m = f.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip(m + 0.15 * (f - m), 0, 255).round().astype(np.uint8)


def _shuffle(grid: int):
    def fn(x, rng):
        n, h, w, c = x.shape
        ph, pw = h // grid, w // grid
        out = x.copy()
        for i in range(n):
            tiles = [x[i, a * ph : (a + 1) * ph, b * pw : (b + 1) * pw] for a in range(grid) for b in range(grid)]
            perm = rng.permutation(len(tiles))
            while grid > 1 and np.all(perm == np.arange(len(tiles))):
                perm = rng.permutation(len(tiles))
            for k, t in enumerate(perm):
                a, b = divmod(k, grid)
                out[i, a * ph : (a + 1) * ph, b * pw : (b + 1) * pw] = tiles[t]
        return out

    return fn


def _mix(x, rng):
    other = x[rng.permutation(len(x))]
    return ((x.astype(np.uint16) + other.astype(np.uint16)) // 2).astype(np.uint8)


def _grey(x, rng):
    g = (x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round()
    return np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


PROBES: Dict[str, Probe] = {
    p.name: p
    for p in (
        Probe("blur", "shift", "defocus / motion blur, a dirty lens", _blur),
        Probe("noise", "shift", "sensor noise in the dark (Gaussian, sigma 40 of 255)", _noise),
        Probe("salt_pepper", "shift", "dead or hot pixels, transmission errors (10 % of pixels)", _salt_pepper),
        Probe("jpeg5", "shift", "a broken encoder or a badly compressed stream (JPEG quality 5)", _jpeg5),
        Probe("pixelate", "shift", "a camera at the wrong resolution (8x down, nearest up)", _pixelate),
        Probe("contrast", "shift", "fog, over-exposure, a washed-out sensor (contrast x0.15)", _contrast),
        Probe("shuffle2", "shift", "scrambled global structure (2x2 patch shuffle)", _shuffle(2)),
        Probe("shuffle4", "shift", "scrambled structure, local texture kept (4x4 patch shuffle)", _shuffle(4)),
        Probe("shuffle8", "shift", "texture-only content (8x8 patch shuffle)", _shuffle(8)),
        Probe("mix", "shift", "two images superimposed (50/50 blend)", _mix),
        Probe("grey", "content", "a greyscale camera: content unchanged", _grey),
        Probe("rot180", "content", "an upside-down camera: content unchanged", lambda x, r: x[:, ::-1, ::-1].copy()),
        Probe("channel_perm", "content", "RGB read as BGR: content unchanged", lambda x, r: x[..., ::-1].copy()),
        Probe("invert", "content", "a photographic negative: content unchanged", lambda x, r: 255 - x),
    )
}


def shift_probes() -> List[str]:
    """Names of the probes whose mean the selection rule uses."""
    return [n for n, p in PROBES.items() if p.kind == "shift"]


def make_probes(
    images: np.ndarray, names: Optional[Sequence[str]] = None, seed: int = 0, n: Optional[int] = None
) -> Dict[str, np.ndarray]:
    """{probe name: transformed images} from ID images uint8 [N, H, W, 3] (at most n of them, spread
    evenly over the set). Each probe has its own seed (seed + its index), so adding a probe
    changes no other probe's images."""
    from dlsr_deploy.preprocess import as_images

    x = as_images(images, "probe images", pack=True)
    if n is not None and n < len(x):
        x = x[np.unique(np.linspace(0, len(x) - 1, n).astype(int))]
    names = list(PROBES) if names is None else list(names)
    unknown = [p for p in names if p not in PROBES]
    if unknown:
        raise InputError(f"probes: unknown {unknown}; expected names among {list(PROBES)}", param="probes")
    if x.shape[1] < 8 or x.shape[2] < 8:
        raise InputError(f"probes: images must be at least 8x8 pixels, got {x.shape[1]}x{x.shape[2]}")
    return {p: PROBES[p].fn(x, np.random.default_rng(seed + list(PROBES).index(p))) for p in names}
