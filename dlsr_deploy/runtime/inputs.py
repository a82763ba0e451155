"""Input validation and conversion for the runtime (numpy + Pillow only)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Sequence, Union

import numpy as np

from dlsr_deploy.errors import InputError

ImagesLike = Union[np.ndarray, Sequence]


def as_batch(images: ImagesLike, size: int, resize: bool = True) -> np.ndarray:
    """Return uint8 [N, size, size, 3] from:
      - uint8 [N, H, W, 3] or a single [H, W, 3] image;
      - float [N, H, W, 3] / [H, W, 3] with values in [0, 1] (converted as round(x * 255));
      - a list of file paths or PIL images (see `load_files`).
    Images of another size are brought to `size` exactly as the training data was
    (centre square crop, Pillow bilinear) when resize=True, and refused otherwise."""
    if isinstance(images, (list, tuple)):
        images = load_files(images, size)
    if not isinstance(images, np.ndarray):
        raise InputError(f"images: expected a numpy array [N, H, W, 3] or a list of paths / PIL images, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise InputError(f"images: expected rank 4 [N, H, W, 3] (or one [H, W, 3] image), got shape {list(images.shape)}")
    if images.shape[-1] != 3:
        hint = " (channel-first? transpose to NHWC)" if images.shape[1] == 3 else ""
        raise InputError(f"images: expected 3 RGB channels last, got shape {list(images.shape)}{hint}")
    if images.shape[0] == 0:
        raise InputError("images: the batch is empty")
    if images.dtype != np.uint8:
        if np.issubdtype(images.dtype, np.floating):
            if not np.all(np.isfinite(images)):
                raise InputError(f"images: {int((~np.isfinite(images)).sum())} values are NaN or infinite")
            lo, hi = float(images.min()), float(images.max())
            if lo < 0.0 or hi > 1.0:
                raise InputError(f"images: float input must lie in [0, 1] (got min {lo:.3g}, max {hi:.3g}); pass uint8 0..255 instead")
            images = np.round(images * 255.0).astype(np.uint8)
        else:
            raise InputError(f"images: expected dtype uint8 (or float in [0, 1]), got {images.dtype}")
    if images.shape[1:3] != (size, size):
        if not resize:
            raise InputError(f"images: expected {size}x{size} (the bundle's native size), got {images.shape[1]}x{images.shape[2]}; pass resize=True to resize them")
        from dlsr_deploy.data import resize_images

        images = resize_images(images, size)
    return np.ascontiguousarray(images)


def load_files(items: Iterable, size: int) -> np.ndarray:
    """File paths or PIL images -> uint8 [N, size, size, 3] (centre crop + bilinear)."""
    from PIL import Image

    from dlsr_deploy.data import _to_square

    out: List[np.ndarray] = []
    for it in items:
        if isinstance(it, (str, Path)):
            try:
                with Image.open(it) as img:
                    out.append(_to_square(img.convert("RGB"), size))
            except (OSError, ValueError) as exc:
                raise InputError(f"{it}: cannot read image ({exc})") from None
        elif hasattr(it, "convert") and hasattr(it, "size"):
            out.append(_to_square(it.convert("RGB"), size))
        elif isinstance(it, np.ndarray):
            out.append(as_batch(it, size)[0])
        else:
            raise InputError(f"images: list items must be paths, PIL images or arrays, got {type(it).__name__}")
    if not out:
        raise InputError("images: the list is empty")
    return np.stack(out)
