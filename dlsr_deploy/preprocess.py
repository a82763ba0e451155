"""Images in: the one place files are read and arrays are validated (numpy + Pillow only).

Used by the data sources (`dlsr_deploy.data`), the runtime (`Detector`, `dlsr-score`), the
CLI and the exporter, so every path applies the same rules:

- uint8 arrays: [N, H, W, C] batches; a [H, W, C] array is one image (Python API); in `.npz`
  packs a [N, H, W] array is a greyscale batch.
- channels: 3 = RGB; 1 = greyscale, replicated; 4 = RGBA, alpha dropped (not composited);
  others refused (channel-first input gets a hint).
- float arrays (Python API and `.npz` packs): values in [0, 1], converted as round(x * 255); NaN,
  inf and values out of range are refused. uint16 arrays: 16-bit levels, scaled 65535 -> 255.
- image files: any Pillow format; the EXIF orientation is applied; palette, greyscale, CMYK,
  LA / RGBA -> RGB (alpha dropped); 16-bit greyscale scaled to 8 bits (65535 -> 255), not
  clipped; 32-bit integer greyscale scaled by the smallest of 8 / 16 / 24 / 32 bits that holds
  its maximum; float greyscale (TIFF mode F) in [0, 1] scaled by 255, else read as levels by the
  same bit-depth rule (NaN, inf and negative values refused); animated files: the first frame;
  zero-sized images refused; `max_pixels` refuses an image from its header, before decoding
  (default `MAX_PIXELS`, 100 megapixels: one decoded RGB image stays under ~300 MB). Large
  images are cropped and resized inside Pillow (no full-size numpy copies), and a JPEG above
  `DRAFT_PIXELS` is decoded at a reduced DCT scale no smaller than the target size.
- size: every image is brought to the model's native size by a centre square crop, then
  Pillow bilinear (the training data's own path).
- empty batches are refused; unreadable files are named (dlsr-score gives each a row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from dlsr_deploy.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MAX_PIXELS = 100_000_000  # the default pixel limit of one image (read_image, decode_image, Detector)
DRAFT_PIXELS = 16_000_000  # JPEGs above this decode at a reduced scale (smaller ones exactly as before)
_PIL_MODES = ("RGB", "RGBA", "RGBX", "P", "PA", "L", "LA", "CMYK", "YCbCr", "1")
ImagesLike = Union[np.ndarray, Sequence]


def _scale_levels(a: np.ndarray, what: str) -> np.ndarray:
    """A greyscale array of any numeric type -> uint8 levels (the module docstring's rules)."""
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what}: {int((~np.isfinite(a)).sum())} pixels are NaN or infinite")
    lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))
    if lo < 0:
        raise InputError(f"{what}: negative pixel values (min {lo:.3g}); expected light levels >= 0")
    if a.dtype.kind == "f" and hi <= 1.0:
        depth = 1.0
    else:
        depth = next((d for d in (255.0, 65535.0, 2.0**24 - 1, 2.0**32 - 1) if hi <= d), None)
        if depth is None:
            raise InputError(f"{what}: pixel values up to {hi:.3g}, beyond 32 bits")
    return np.clip(np.round(a * (255.0 / depth)), 0, 255).astype(np.uint8)


def pil_to_rgb(img, what: str = "image") -> np.ndarray:
    """A Pillow image (first frame) -> uint8 [H, W, 3] by the rules in the module docstring."""
    from PIL import ImageOps

    if img.size[0] == 0 or img.size[1] == 0:
        raise InputError(f"{what}: the image is empty ({img.size[0]}x{img.size[1]} pixels)")
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    img = ImageOps.exif_transpose(img) or img  # a phone photo taken sideways is upright here too
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img)
        if img.mode.startswith("I;16"):
            a = a.astype(np.float64) * (255.0 / 65535.0)
            g = np.clip(np.round(a), 0, 255).astype(np.uint8)
        elif img.mode == "F":
            g = _scale_levels(a.astype(np.float32), what)
        else:
            g = _scale_levels(a.astype(np.int64), what)
        return np.repeat(g[..., None], 3, axis=-1)
    if img.mode != "RGB":
        img = img.convert("RGBA" if img.mode in ("P", "PA", "LA") else "RGB").convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def to_square(image: np.ndarray, size: Optional[int]) -> np.ndarray:
    """uint8 [H, W, 3] -> [size, size, 3]: centre square crop, then Pillow bilinear."""
    if size is None or image.shape[:2] == (size, size):
        return image
    from PIL import Image

    h, w = image.shape[:2]
    s = min(w, h)
    top, left = (h - s) // 2, (w - s) // 2
    img = Image.fromarray(np.ascontiguousarray(image[top : top + s, left : left + s]))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def read_image(path: Union[str, Path], size: Optional[int] = None, max_pixels: Optional[int] = None) -> np.ndarray:
    """An image file -> uint8 [size, size, 3] (or its own size when size is None). max_pixels:
    refuse images with more pixels, checked from the file header before any decoding (None:
    MAX_PIXELS; 0: no limit)."""
    return _open_image(path, str(path), size, max_pixels)


def decode_image(
    data: bytes, size: Optional[int] = None, what: str = "image", max_pixels: Optional[int] = None
) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, any Pillow format) -> uint8 [size, size, 3]."""
    import io

    if not data:
        raise InputError(f"{what}: empty (0 bytes)")
    return _open_image(io.BytesIO(data), what, size, max_pixels)


def _square_in_pil(img, size: int) -> np.ndarray:
    """to_square done by Pillow on a standard-mode image: the same pixels (RGB conversion, centre
    crop, bilinear), without the full-size numpy copies a large image would cost."""
    from PIL import Image

    if img.mode != "RGB":
        img = img.convert("RGBA" if img.mode in ("P", "PA", "LA") else "RGB").convert("RGB")
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    if (w, h) != (s, s):
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _open_image(src, what: str, size: Optional[int], max_pixels: Optional[int] = None) -> np.ndarray:
    from PIL import Image

    limit = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with Image.open(src) as img:
            w, h = img.size  # from the header: nothing is decoded yet
            if limit and w * h > limit:
                raise InputError(
                    f"{what}: {w}x{h} = {w * h} pixels, over the limit of {limit} (max_pixels; about "
                    f"{3 * w * h / 2**20:.0f} MB decoded)"
                )
            if size is not None and w * h > DRAFT_PIXELS and img.format == "JPEG":
                img.draft("RGB", (size * max(w, h) // min(w, h), size))  # DCT scaling, never below size
            if size is not None and img.mode in _PIL_MODES and getattr(img, "n_frames", 1) == 1:
                if img.size[0] == 0 or img.size[1] == 0:
                    raise InputError(f"{what}: the image is empty ({img.size[0]}x{img.size[1]} pixels)")
                from PIL import ImageOps

                return _square_in_pil(ImageOps.exif_transpose(img) or img, size)
            return to_square(pil_to_rgb(img, what), size)
    except InputError:
        raise
    except Image.UnidentifiedImageError:
        raise InputError(f"{what}: cannot read image (not a format Pillow can read)") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, MemoryError) as exc:
        raise InputError(f"{what}: cannot read image ({exc.__class__.__name__}: {exc})") from None


def resize_images(images: np.ndarray, size: Optional[int]) -> np.ndarray:
    """Bring every image of a batch to size x size (see `to_square`)."""
    if size is None or images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, im in enumerate(images):
        out[i] = to_square(im, size)
    return out


def as_images(images, what: str = "images", pack: bool = False) -> np.ndarray:
    """Validate and convert an array to uint8 [N, H, W, 3] (rules in the module docstring).
    pack: the array comes from a `.npz` pack (rank 3 = a greyscale batch)."""
    if not isinstance(images, np.ndarray):
        raise InputError(f"{what}: expected a numpy array [N, H, W, 3], got {type(images).__name__}")
    if images.ndim == 3:
        images = images[..., None] if pack else images[None]
    if images.ndim != 4:
        raise InputError(
            f"{what}: expected rank 4 [N, H, W, 3] (or one [H, W, 3] image), got shape {list(images.shape)}"
        )
    if images.shape[-1] not in (1, 3, 4):
        hint = " (channel-first? transpose to NHWC)" if images.shape[1] in (1, 3, 4) else ""
        raise InputError(f"{what}: expected 3 RGB channels last (or 1 / 4), got shape {list(images.shape)}{hint}")
    if images.shape[0] == 0:
        raise InputError(f"{what}: the batch is empty")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise InputError(f"{what}: images have zero size, shape {list(images.shape)}")
    if images.dtype == np.uint16:
        images = np.round(images.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise InputError(f"{what}: expected dtype uint8 (0..255), uint16 or float in [0, 1], got {images.dtype}")
        if not np.all(np.isfinite(images)):
            raise InputError(f"{what}: {int((~np.isfinite(images)).sum())} values are NaN or infinite")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"{what}: float input must lie in [0, 1] (got min {lo:.3g}, max {hi:.3g}); pass uint8 0..255 instead"
            )
        images = np.round(images * 255.0).astype(np.uint8)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    elif images.shape[-1] == 4:
        images = images[..., :3]
    return np.ascontiguousarray(images)


def load_items(items: Iterable, size: int) -> np.ndarray:
    """A list of file paths, PIL images or arrays -> uint8 [N, size, size, 3]; every image of
    an array item counts (a [4, H, W, 3] item gives four images)."""
    out: List[np.ndarray] = []
    for it in items:
        if isinstance(it, (str, Path)):
            out.append(read_image(it, size)[None])
        elif hasattr(it, "convert") and hasattr(it, "size"):
            out.append(to_square(pil_to_rgb(it), size)[None])
        elif isinstance(it, np.ndarray):
            out.append(resize_images(as_images(it), size))
        else:
            raise InputError(f"images: list items must be paths, PIL images or arrays, got {type(it).__name__}")
    if not out:
        raise InputError("images: the list is empty")
    return np.concatenate(out)


def as_batch(images: ImagesLike, size: int, resize: bool = True) -> np.ndarray:
    """The runtime's input: uint8 [N, size, size, 3] from an array, one image, or a list of
    paths / PIL images / arrays. Other sizes are brought to `size` (resize=True) or refused."""
    if isinstance(images, (list, tuple)):
        images = load_items(images, size)
    images = as_images(images)
    if images.shape[1:3] != (size, size):
        if not resize:
            raise InputError(
                f"images: expected {size}x{size} (the bundle's native size), got "
                f"{images.shape[1]}x{images.shape[2]}; pass resize=True to resize them"
            )
        images = resize_images(images, size)
    return images


def read_npz(path: Union[str, Path]) -> np.ndarray:
    """The `images` array of a .npz pack, validated (uint8 [N, H, W, 3])."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data:
                raise InputError(f"{path}: expected an array named 'images', found {sorted(data.files)}")
            images = data["images"]
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    return as_images(images, str(path), pack=True)


def image_files(folder: Union[str, Path]) -> List[Path]:
    """Every image file below a folder, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_files(files: Sequence[Path], size: Optional[int]):
    """(images uint8 [N, size, size, 3], kept paths, skipped [(path, reason)]) for image files;
    unreadable files are skipped and named, never dropped silently."""
    arrays, kept, skipped = [], [], []
    for f in files:
        try:
            arrays.append(read_image(f, size))
        except InputError as exc:
            skipped.append((str(f), str(exc).split(": ", 1)[-1]))
            continue
        kept.append(str(f))
    if arrays and len({a.shape for a in arrays}) > 1:
        raise InputError(
            f"images have different sizes {sorted({a.shape for a in arrays})[:3]}...; give a size to resize them"
        )
    return (np.stack(arrays) if arrays else np.zeros((0, size or 0, size or 0, 3), np.uint8)), kept, skipped


def images_digest(images: np.ndarray) -> str:
    """sha256 of an image set's content (shape + pixels): what a run was trained / calibrated on."""
    import hashlib

    h = hashlib.sha256(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()
