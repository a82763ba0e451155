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

from dlsr_deploy.errors import DataError, InputError
from dlsr_deploy.preprocess import IMAGE_SUFFIXES, as_images, image_files, read_files, read_npz, resize_images  # noqa: F401


@dataclass
class ImageSet:
    images: np.ndarray
    name: str
    paths: Optional[List[str]] = None
    skipped: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def _data_error(fn, *args, **kwargs):
    """Array / file rules live in dlsr_deploy.preprocess (InputError); a data source reports
    them as DataError."""
    try:
        return fn(*args, **kwargs)
    except InputError as exc:
        raise DataError(str(exc)) from None


def load_folder(path: Path, size: Optional[int]) -> ImageSet:
    files = image_files(path)
    if not files:
        raise DataError(f"{path}: no image files found (looked for {sorted(IMAGE_SUFFIXES)})")
    images, kept, bad = _data_error(read_files, files, size)
    skipped = [f"{p} ({why})" for p, why in bad]
    if not kept:
        raise DataError(f"{path}: none of the {len(files)} image files could be read: {skipped[:3]}")
    return ImageSet(images, Path(path).name, kept, skipped)


def _is_cifar_dir(path: Path) -> bool:
    return (
        (path / "data_batch_1").exists()
        or (path / "test_batch").exists()
        or (path / "meta").exists()
        and ((path / "train").exists() or (path / "test").exists())
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
        raise DataError(
            f"{path}: expected SVHN array 'X' [32, 32, 3, N], found {[k for k in mat if not k.startswith('__')]}"
        )
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
            raise DataError(
                f"data source not found: {src} (expected a .npz, an image folder, a CIFAR folder, an SVHN .mat or "
                "demo:id/demo:ood)"
            )
        if path.is_dir() and _is_cifar_dir(path):
            iset = ImageSet(load_cifar(path, split), path.name)
        elif path.is_dir():
            iset = load_folder(path, size)
        elif path.suffix.lower() == ".npz":
            iset = ImageSet(_data_error(read_npz, path), path.stem)
        elif path.suffix == ".mat":
            iset = ImageSet(load_svhn(path), path.stem)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images, kept, bad = _data_error(read_files, [path], size)
            if bad:
                raise DataError(f"{bad[0][0]}: {bad[0][1]}")
            iset = ImageSet(images, path.stem, kept)
        else:
            raise DataError(f"{src}: unsupported source (expected .npz, .mat, an image file or a folder)")
    iset.images = _data_error(as_images, iset.images, src, pack=True)
    if limit is not None:
        iset.images = iset.images[:limit]
    iset.images = resize_images(iset.images, size)
    return iset


def _is_pack_dir(path: Path) -> bool:
    """A folder of .npz packs (and no image files at its top level)."""
    kids = [p for p in path.iterdir() if p.is_file()]
    return any(p.suffix == ".npz" for p in kids) and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in kids)


def expand_sources(sources: Sequence[str]) -> List[str]:
    """Sources with every folder of .npz packs replaced by its packs (sorted by name)."""
    if not sources:
        raise DataError("no data source given")
    out: List[str] = []
    for s in sources:
        p = Path(str(s))
        if not str(s).startswith("demo:") and p.is_dir() and not _is_cifar_dir(p) and _is_pack_dir(p):
            out.extend(str(f) for f in sorted(p.glob("*.npz")))
        else:
            out.append(str(s))
    if len(set(out)) != len(out):
        raise DataError(f"the same data source is given twice: {sorted({s for s in out if out.count(s) > 1})}")
    return out


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
