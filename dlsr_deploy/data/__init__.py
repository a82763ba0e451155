"""Image sources -> uint8 [N, H, W, 3] numpy arrays (numpy, Pillow, scipy; no torch).

A source is a path or a name:
  *.npz                  array `images` uint8 [N, H, W, 3]
  a folder               every image file below it (any size and mode -> RGB)
  a CIFAR-10/100 folder  the python pickles (data_batch_*, test_batch / train, test)
  *.mat                  SVHN cropped digits (X [32, 32, 3, N])
  demo:id / demo:ood     the embedded demo set (scikit-learn digits / scikit-image crops)
Every image is brought to `size` x `size` (bilinear, antialiased, centre square crop for
non-square images) when `size` is given, so ID and OOD sets reach the backbone alike.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from dlsr_deploy.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class ImageSet:
    images: np.ndarray
    name: str
    paths: Optional[List[str]] = None
    skipped: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def validate_images(images: np.ndarray, source: str) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise DataError(f"{source}: expected a numpy array of images, got {type(images).__name__}")
    if images.ndim == 3:  # greyscale N x H x W
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError(f"{source}: expected images of shape [N, H, W, 3], got {list(images.shape)}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    elif images.shape[-1] == 4:
        images = images[..., :3]
    if images.dtype != np.uint8:
        raise DataError(f"{source}: expected dtype uint8 (0..255), got {images.dtype}")
    if len(images) == 0:
        raise DataError(f"{source}: the image set is empty")
    return np.ascontiguousarray(images)


def resize_images(images: np.ndarray, size: Optional[int]) -> np.ndarray:
    """Bring every image to size x size: centre square crop, then Pillow bilinear."""
    if size is None or images.shape[1:3] == (size, size):
        return images
    from PIL import Image

    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, im in enumerate(images):
        out[i] = _to_square(Image.fromarray(im), size)
    return out


def _to_square(img, size: int) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    s = min(w, h)
    if w != h:
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def load_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data:
                raise DataError(f"{path}: expected an array named 'images', found {sorted(data.files)}")
            return data["images"]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def load_folder(path: Path, size: Optional[int]) -> ImageSet:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no image files found (looked for {sorted(IMAGE_SUFFIXES)})")
    images, kept, skipped = [], [], []
    for f in files:
        try:
            with Image.open(f) as img:
                img = img.convert("RGB")
                arr = _to_square(img, size) if size else np.asarray(img, np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            skipped.append(f"{f} ({exc.__class__.__name__})")
            continue
        images.append(arr)
        kept.append(str(f))
    if not images:
        raise DataError(f"{path}: none of the {len(files)} image files could be read: {skipped[:3]}")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DataError(f"{path}: images have different sizes {sorted(shapes)[:3]}...; pass a size to resize them")
    return ImageSet(np.stack(images), Path(path).name, kept, skipped)


def _is_cifar_dir(path: Path) -> bool:
    return (path / "data_batch_1").exists() or (path / "test_batch").exists() or (path / "meta").exists() and (
        (path / "train").exists() or (path / "test").exists()
    )


def load_cifar(path: Path, split: str = "test") -> np.ndarray:
    """CIFAR-10 (data_batch_1..5 / test_batch) or CIFAR-100 (train / test) python pickles."""
    if (path / "test_batch").exists() or (path / "data_batch_1").exists():
        names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    else:
        names = [split]
    arrays = []
    for n in names:
        f = path / n
        if not f.exists():
            raise DataError(f"{path}: expected CIFAR file {n}, not found")
        with open(f, "rb") as fh:
            try:
                d = pickle.load(fh, encoding="bytes")
            except Exception as exc:
                raise DataError(f"{f}: not a CIFAR pickle ({exc})") from None
        data = d.get(b"data", d.get("data"))
        if data is None:
            raise DataError(f"{f}: no 'data' entry in the CIFAR pickle")
        arrays.append(np.asarray(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.concatenate(arrays)


def load_svhn(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable .mat file ({exc})") from None
    if "X" not in mat:
        raise DataError(f"{path}: expected SVHN array 'X' [32, 32, 3, N], found {[k for k in mat if not k.startswith('__')]}")
    x = mat["X"]
    if x.ndim != 4 or x.shape[2] != 3:
        raise DataError(f"{path}: expected 'X' of shape [32, 32, 3, N], got {list(x.shape)}")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))


def load_images(source: str, size: Optional[int] = 32, limit: Optional[int] = None, split: str = "test") -> ImageSet:
    """Load any supported source as uint8 [N, size, size, 3] (see the module docstring)."""
    src = str(source)
    if src.startswith("demo:"):
        from dlsr_deploy.data.demo import demo_images

        images = demo_images(src.split(":", 1)[1])
        name = src
        iset = ImageSet(images, name)
    else:
        path = Path(src)
        if not path.exists():
            raise DataError(f"data source not found: {src} (expected a .npz, an image folder, a CIFAR folder, an SVHN .mat or demo:id/demo:ood)")
        if path.is_dir() and _is_cifar_dir(path):
            iset = ImageSet(load_cifar(path, split), path.name)
        elif path.is_dir():
            iset = load_folder(path, size)
        elif path.suffix == ".npz":
            iset = ImageSet(load_npz(path), path.stem)
        elif path.suffix == ".mat":
            iset = ImageSet(load_svhn(path), path.stem)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            iset = load_folder_files([path], size)
        else:
            raise DataError(f"{src}: unsupported source (expected .npz, .mat, an image file or a folder)")
    iset.images = validate_images(iset.images, src)
    if limit is not None:
        iset.images = iset.images[:limit]
    iset.images = resize_images(iset.images, size)
    return iset


def load_folder_files(files: Sequence[Path], size: Optional[int]) -> ImageSet:
    from PIL import Image

    arrays = []
    for f in files:
        try:
            with Image.open(f) as img:
                img = img.convert("RGB")
                arrays.append(_to_square(img, size) if size else np.asarray(img, np.uint8))
        except Exception as exc:
            raise DataError(f"{f}: cannot read image ({exc})") from None
    return ImageSet(np.stack(arrays), Path(files[0]).stem, [str(f) for f in files])
