"""One way in for every input (numpy + Pillow; pyarrow for Parquet, scipy for SVHN: imported when used).

Every command lists its inputs here, with the same rules and the same error messages:
dlsr-train --data, dlsr-eval --id / --ood, dlsr-export --verify-ood / --calibrate-on,
dlsr-bench --data / --ood, dlsr-score with and without --ray. A source is

    an image file          any Pillow format (dlsr_deploy.preprocess rules: EXIF orientation
                           applied, 16/32-bit and float images scaled, alpha dropped, ...)
    a folder               everything below it, recursively, sorted: image files, .npz packs,
                           .parquet tables, SVHN .mat files; symbolic links are followed, a
                           link that loops back or points nowhere becomes an input with an error
    a glob                 'lake/**/*.jpg' (recursive), matched files as above
    a .npz pack            array `images` uint8 [N, H, W, 3] (or [N, H, W] greyscale)
    a .parquet table       a column of encoded image bytes (binary, or a Hugging Face style
                           struct with `bytes`), ids from an `id` / `path` / `name` column
    a CIFAR-10/100 folder  the python pickles (train split: data_batch_* / train; test split:
                           test_batch / test); `folder#test` or `folder#train` picks one
    an SVHN .mat           X [32, 32, 3, N]

Listing is lazy: `list_inputs` reads names and array headers only (ids first, pixels on
demand), so ten million inputs are listed without decoding one. Every input has one id (the
file path, `pack.npz#7`, `table.parquet#7` or the table's own id) and, when it cannot be read,
an error instead of pixels: commands that promise a row per input give it one.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.errors import DataError, InputError
from dlsr_deploy.input_kinds import INPUT_KINDS, folder_kind, kind_for_suffix
from dlsr_deploy.packs import is_cifar_folder
from dlsr_deploy.preprocess import IMAGE_SUFFIXES, resize_images

GLOB_CHARS = set("*?[")
EXPECTED = "image files, folders, globs, .npz packs, .parquet tables, CIFAR folders or SVHN .mat files"


@dataclass
class Listing:
    """Inputs in order, one entry each: id, kind, path, index (inside a pack / table), error
    (set at listing time for broken or looping links; '' otherwise)."""

    ids: List[str] = field(default_factory=list)
    kinds: List[str] = field(default_factory=list)
    paths: List[str] = field(default_factory=list)
    index: List[int] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, id_: str, kind: str, path: str, index: int = 0, error: str = "") -> None:
        """Append one input."""
        self.ids.append(id_)
        self.kinds.append(kind)
        self.paths.append(path)
        self.index.append(int(index))
        self.errors.append(error)

    def columns(self) -> Dict[str, np.ndarray]:
        """Columns id / kind / path / index / error as numpy arrays (what Ray Data takes)."""
        return {
            "id": np.array(self.ids, dtype=object),
            "kind": np.array(self.kinds, dtype=object),
            "path": np.array(self.paths, dtype=object),
            "index": np.array(self.index, dtype=np.int64),
            "error": np.array(self.errors, dtype=object),
        }

    def take(self, idx: Sequence[int]) -> "Listing":
        """A sub-listing (e.g. the first N of a source)."""
        out = Listing()
        for i in idx:
            out.add(self.ids[i], self.kinds[i], self.paths[i], self.index[i], self.errors[i])
        return out


def display_id(id_: str) -> str:
    """An id safe to write to UTF-8 text (file names that are not UTF-8 keep their bytes as \\x escapes)."""
    return id_.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _split_spec(src: str) -> Tuple[str, Optional[str]]:
    """'cifar-10-batches-py#test' -> (path, 'test'); other sources unchanged."""
    if "#" in src and src.rsplit("#", 1)[1] in ("train", "test") and Path(src.rsplit("#", 1)[0]).is_dir():
        path, split = src.rsplit("#", 1)
        return path, split
    return src, None


def is_cifar_dir(path: Path) -> bool:
    """A CIFAR-10 (data_batch_* / test_batch) or CIFAR-100 (meta + train / test) pickle folder."""
    return is_cifar_folder(path)


def check_source(src, param: str = "inputs") -> None:
    """A clear error now when a source does not exist (or a glob matches nothing)."""
    s = str(src)
    if s.startswith("demo:"):
        return
    path, _ = _split_spec(s)
    if GLOB_CHARS & set(path) and not Path(path).exists():
        if not any(True for _ in glob.iglob(path, recursive=True)):
            raise DataError(f"{param}: the glob {s} matches no file", param=param)
        return
    if not os.path.lexists(path):
        raise DataError(f"{param}: not found: {s} (expected {EXPECTED})", param=param)


def _walk(folder: Path) -> Iterator[Tuple[str, str]]:
    """(path, error) for every file below folder, links followed, loops and dangling links named."""
    seen = set()
    for root, dirs, files in os.walk(folder, followlinks=True, onerror=None):
        st = os.stat(root)
        key = (st.st_dev, st.st_ino)
        if key in seen:
            yield root, "symbolic link loop: this folder is already listed above it"
            dirs[:] = []
            continue
        seen.add(key)
        dirs.sort()
        for name in files:
            p = os.path.join(root, name)
            if not os.path.exists(p):
                yield p, "broken symbolic link (its target does not exist)"
            else:
                yield p, ""
        for name in list(dirs):
            p = os.path.join(root, name)
            if os.path.islink(p) and not os.path.exists(p):
                yield p, "broken symbolic link (its target does not exist)"
                dirs.remove(name)


def _pillow_suffixes() -> set:
    """Every suffix Pillow reads here (.avif, .jp2, .ico, ... beside IMAGE_SUFFIXES)."""
    from PIL import Image

    return {k.lower() for k, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _wanted(path: str, pillow: set) -> bool:
    """In a folder: image and pack suffixes, anything Pillow reads, and files with no suffix (each
    gets a row: scored, or its reason). Other files are counted and named in one warning."""
    suffix = os.path.splitext(path)[1].lower()
    return suffix in IMAGE_SUFFIXES or kind_for_suffix(suffix) is not None or suffix in pillow or suffix == ""


def _warn_skipped(src: str, skipped: List[str]) -> None:
    if not skipped:
        return
    import collections
    import warnings

    kinds = collections.Counter(os.path.splitext(p)[1].lower() for p in skipped)
    warnings.warn(
        f"{src}: {len(skipped)} file(s) skipped, not images by their suffix ("
        + ", ".join(f"{k} x{n}" for k, n in kinds.most_common(5))
        + ")",
        RuntimeWarning,
        stacklevel=4,
    )


def _expand(src: str, cifar_split: str) -> List[Tuple[str, str, str]]:
    """(kind, path, error) entries of one source (a CIFAR folder is one 'cifar' entry)."""
    path, split = _split_spec(src)
    if GLOB_CHARS & set(path) and not Path(path).exists():
        found = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p) or os.path.islink(p))
        if not found:
            raise DataError(f"{src}: the glob matches no file")
        return [_entry(p) for p in found]
    if not os.path.lexists(path):
        raise DataError(f"input not found: {src} (expected {EXPECTED})")
    p = Path(path)
    whole = folder_kind(path) if p.is_dir() else None
    if whole is not None:  # a folder that is one input kind as a whole (CIFAR pickles)
        return [(whole, f"{path}#{split or cifar_split}" if whole == "cifar" else path, "")]
    if p.is_dir():
        pillow = _pillow_suffixes()
        walked = list(_walk(p))
        entries = sorted((f, err) for f, err in walked if err or _wanted(f, pillow))
        _warn_skipped(src, [f for f, err in walked if not err and not _wanted(f, pillow)])
        if not entries:
            raise DataError(f"{src}: no image files, .npz, .parquet or .mat found below it")
        return [("error", f, err) if err else _entry(f) for f, err in entries]
    if not p.exists():
        return [("error", path, "broken symbolic link (its target does not exist)")]
    return [_entry(path)]


def _entry(path: str) -> Tuple[str, str, str]:
    suffix = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        return ("error", path, "broken symbolic link (its target does not exist)")
    if kind_for_suffix(suffix) is not None:
        return (kind_for_suffix(suffix), path, "")
    if suffix in IMAGE_SUFFIXES or suffix == "" or suffix in _pillow_suffixes():
        return ("file", path, "")
    raise DataError(f"{path}: unsupported input (expected {EXPECTED})")


def list_inputs(sources: Sequence, cifar_split: str = "test", limit: Optional[int] = None) -> Listing:
    """Every input of the sources, in order (see the module docstring); `limit`: at most N per source.
    A source that does not exist or holds nothing is an error naming it; an input given twice
    (the same file, pack entry or table row) is an error too."""
    if not sources:
        raise DataError("no input given")
    out = Listing()
    for src in sources:
        part = Listing()
        for kind, path, err in _expand(str(src), cifar_split):
            if kind == "error":
                part.add(path, "error", path, 0, err)
            elif kind == "file":
                part.add(path, "file", path)
            else:
                for j, id_ in enumerate(INPUT_KINDS[kind].ids(path)):
                    part.add(id_, kind, path, j)
            if limit is not None and len(part) >= limit:
                break
        if limit is not None and len(part) > limit:
            part = part.take(range(limit))
        for i in range(len(part)):
            out.add(part.ids[i], part.kinds[i], part.paths[i], part.index[i], part.errors[i])
    _check_unique(out)
    return out


def _check_unique(listing: Listing) -> None:
    """The same input twice (also spelled differently: ./a.npz and a.npz, or through a link) is an error."""
    seen = {}
    for i in range(len(listing)):
        kind, path = listing.kinds[i], listing.paths[i]
        key = (
            listing.ids[i]
            if kind == "error"
            else (
                kind,
                os.path.realpath(path.rsplit("#", 1)[0]) if kind == "cifar" else os.path.realpath(path),
                path.rsplit("#", 1)[-1] if kind == "cifar" else "",
                listing.index[i],
            )
        )
        if key in seen:
            raise DataError(
                f"input {display_id(listing.ids[i])!r} is given twice (also as {display_id(seen[key])!r}); every "
                "input must come once"
            )
        seen[key] = listing.ids[i]


def decode_one(kind: str, path: str, index: int, size: Optional[int], max_pixels: Optional[int] = None) -> np.ndarray:
    """One listed input -> uint8 [size, size, 3] (InputError / DataError with the reason)."""
    k = INPUT_KINDS[kind]
    if not k.bulk:
        return k.one(path, index, size, max_pixels)
    image = k.images(path)[index : index + 1]
    return resize_images(image, size)[0] if size else image[0]


def read_listing(listing: Listing, size: Optional[int], max_pixels: Optional[int] = None):
    """(images uint8 [n, size, size, 3] of the readable inputs, their positions in the listing,
    [(id, why)] for the others). Pack entries are decoded in bulk, files one by one."""
    arrays, kept, skipped = [], [], []
    i, n = 0, len(listing)
    while i < n:
        kind, path = listing.kinds[i], listing.paths[i]
        if INPUT_KINDS[kind].bulk:
            j = i
            while j < n and listing.kinds[j] == kind and listing.paths[j] == path:
                j += 1
            idx = np.asarray(listing.index[i:j])
            arrays.append(resize_images(INPUT_KINDS[kind].images(path)[idx], size))
            kept.extend(range(i, j))
            i = j
            continue
        try:
            if listing.errors[i]:
                raise InputError(listing.errors[i])
            arrays.append(decode_one(kind, path, listing.index[i], size, max_pixels)[None])
            kept.append(i)
        except (InputError, DataError) as exc:
            skipped.append((listing.ids[i], str(exc).split(": ", 1)[-1] if listing.ids[i] in str(exc) else str(exc)))
        i += 1
    if arrays and len({a.shape[1:] for a in arrays}) > 1:
        shapes = sorted({tuple(a.shape[1:]) for a in arrays})[:3]
        raise InputError(f"images have different sizes {shapes}...; give a size to bring them to one")
    images = np.concatenate(arrays) if arrays else np.zeros((0, size or 0, size or 0, 3), np.uint8)
    return images, kept, skipped


def image_sizes(listing: Listing, n: int = 512) -> List[Tuple[int, int]]:
    """(height, width) of up to n inputs spread over the listing, read from headers (no decoding);
    unreadable inputs are left out."""
    from PIL import Image

    if not len(listing):
        return []
    picks = np.unique(np.linspace(0, len(listing) - 1, min(n, len(listing))).astype(int))
    sizes, packs = [], {}
    for i in picks:
        kind, path = listing.kinds[i], listing.paths[i]
        try:
            if kind == "file":
                with Image.open(path) as im:
                    w, h = im.size
                sizes.append((h, w))
            elif INPUT_KINDS[kind].shape is not None:
                if path not in packs:
                    packs[path] = INPUT_KINDS[kind].shape(path)
                sizes.append(packs[path])
            elif kind != "error":
                sizes.append(decode_one(kind, path, listing.index[i], None).shape[:2])
        except Exception:
            continue
    return sizes


def native_size_from(sizes: Sequence[Tuple[int, int]], cap: int) -> int:
    """The native size a model should bring every image to: the median shorter side of the
    training images, capped at the backbone's input size (never below 8)."""
    if not sizes:
        raise DataError("no readable training image to take the native size from")
    med = int(np.median([min(h, w) for h, w in sizes]))
    return max(8, min(med, int(cap)))
