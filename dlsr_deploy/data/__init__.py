"""Image sets for training and evaluation -> uint8 [N, H, W, 3] numpy arrays (no torch).

A source is anything `dlsr_deploy.inputs` lists (image files, folders, globs, .npz packs,
Parquet tables, CIFAR-10/100 pickle folders, SVHN .mat files) or a name:
  demo:id / demo:ood     the embedded demo set (scikit-learn digits / scikit-image crops)
Every image is brought to `size` x `size` (centre square crop + Pillow bilinear) when `size` is
given, so ID and OOD sets reach the backbone alike. Unreadable files in a set are skipped and
named (`ImageSet.skipped`), never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from dlsr_deploy.errors import DataError, InputError
from dlsr_deploy.inputs import is_cifar_dir, list_inputs, read_listing
from dlsr_deploy.preprocess import resize_images


@dataclass
class ImageSet:
    images: np.ndarray
    name: str
    paths: Optional[List[str]] = None
    skipped: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def _name(src: str) -> str:
    path = src.rsplit("#", 1)[0] if "#" in src else src
    p = Path(path)
    return p.name if p.is_dir() else p.stem if p.suffix else p.name


def load_images(source: str, size: Optional[int] = 32, limit: Optional[int] = None, split: str = "test") -> ImageSet:
    """Load any supported source as uint8 [N, size, size, 3] (see the module docstring). split:
    the CIFAR split of a CIFAR folder given without `#train` / `#test`."""
    src = str(source)
    if src.startswith("demo:"):
        from dlsr_deploy.data.demo import demo_images

        images = demo_images(src.split(":", 1)[1])
        return ImageSet(resize_images(images[:limit] if limit else images, size), src)
    try:
        listing = list_inputs([src], cifar_split=split, limit=limit)
        images, kept, skipped = read_listing(listing, size)
    except InputError as exc:  # the array / file rules are the input layer's; a data source reports DataError
        raise DataError(str(exc)) from None
    reasons = [f"{i} ({why})" for i, why in skipped]
    if not kept:
        raise DataError(f"{src}: none of its {len(listing)} input(s) could be read: {reasons[:3]}")
    return ImageSet(images, _name(src), [listing.ids[i] for i in kept], reasons)


def expand_sources(sources: Sequence[str]) -> List[str]:
    """Sources with every folder that holds only .npz packs (at its top level) replaced by its
    packs, sorted by name; the same source twice (however spelled) is an error."""
    import os

    if not sources:
        raise DataError("no data source given")
    out: List[str] = []
    for s in sources:
        p = Path(str(s))
        if not str(s).startswith("demo:") and p.is_dir() and not is_cifar_dir(p) and _is_pack_dir(p):
            out.extend(str(f) for f in sorted(p.glob("*.npz")))
        else:
            out.append(str(s))
    real = [os.path.realpath(s) if not s.startswith("demo:") else s for s in out]
    dup = sorted({out[i] for i, r in enumerate(real) if real.count(r) > 1})
    if dup:
        raise DataError(f"the same data source is given twice: {dup}")
    return out


def _is_pack_dir(path: Path) -> bool:
    """A folder of .npz packs (and no image files at its top level)."""
    from dlsr_deploy.preprocess import IMAGE_SUFFIXES

    kids = [p for p in path.iterdir() if p.is_file()]
    return any(p.suffix == ".npz" for p in kids) and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in kids)


def load_sources(sources: Sequence[str], size: Optional[int] = 32, limit: Optional[int] = None) -> ImageSet:
    """Several sources concatenated in order (`limit` applies to each source)."""
    sets = [load_images(s, size=size, limit=limit) for s in expand_sources(sources)]
    if len({s.images.shape[1:] for s in sets}) > 1:
        raise DataError(
            f"sources have different image sizes {[list(s.images.shape[1:]) for s in sets]}; give a native size"
        )
    return ImageSet(
        np.concatenate([s.images for s in sets]),
        "+".join(s.name for s in sets),
        None,
        [k for s in sets for k in s.skipped],
    )
