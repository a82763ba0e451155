"""The pack and table formats the input layer reads (numpy; scipy for SVHN and pyarrow for
Parquet, imported when used): lengths and shapes from headers, arrays on demand (cached)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import List, Tuple

import numpy as np

from dlsr_deploy.errors import DataError, InputError
from dlsr_deploy.preprocess import as_images

BYTES_COLUMNS = ("image", "bytes", "image_bytes", "content")
ID_COLUMNS = ("id", "path", "name")


def npz_length(path: str) -> int:
    """Images in a .npz pack, read from the array header only (no decompression)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            with z.open("images.npy") as f:
                fmt = np.lib.format
                major, _ = fmt.read_magic(f)
                header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
                shape, _, dtype = header(f)
    except KeyError:
        raise DataError(f"{path}: expected an array named 'images' in the .npz pack") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc.__class__.__name__}: {exc})") from None
    if len(shape) not in (3, 4) or shape[0] == 0:
        raise DataError(f"{path}: expected images [N, H, W, 3] with N > 0, got shape {list(shape)}")
    if dtype not in (np.uint8, np.uint16) and dtype.kind != "f":
        raise DataError(f"{path}: expected dtype uint8 (0..255), uint16 or float in [0, 1], got {dtype}")
    return int(shape[0])


def svhn_length(path: str) -> int:
    """Images in an SVHN .mat file, from its header (scipy.io.whosmat)."""
    from scipy.io import whosmat

    try:
        shapes = {name: shape for name, shape, _ in whosmat(path)}
    except Exception as exc:
        raise DataError(f"{path}: not a readable .mat file ({exc})") from None
    shape = shapes.get("X")
    if shape is None or len(shape) != 4 or shape[2] != 3:
        raise DataError(f"{path}: expected SVHN array 'X' [32, 32, 3, N], found {shapes}")
    return int(shape[3])


def parquet_ids(path: str) -> List[str]:
    """One id per row of a Parquet table: its id / path / name column, else path#row."""
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    names = f.schema_arrow.names
    _bytes_column(f.schema_arrow, path)
    id_col = next((c for c in ID_COLUMNS if c in names), None)
    if id_col is None:
        return [f"{path}#{j}" for j in range(f.metadata.num_rows)]
    # a row whose id is null is named by its position (never the id "None")
    values = f.read(columns=[id_col]).column(0).to_pylist()
    return [f"{path}#{j}" if v is None else str(v) for j, v in enumerate(values)]


def _bytes_column(schema, path) -> str:
    import pyarrow as pa

    def usable(t):
        return (
            pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
            or (pa.types.is_struct(t) and t.get_field_index("bytes") >= 0)
        )

    for name in BYTES_COLUMNS:
        if name in schema.names and usable(schema.field(name).type):
            return name
    binary = [f.name for f in schema if usable(f.type)]
    if len(binary) == 1:
        return binary[0]
    raise DataError(
        f"{path}: expected one column of encoded image bytes (named one of {list(BYTES_COLUMNS)}), "
        f"found columns {schema.names}"
    )


@functools.lru_cache(maxsize=2)
def _npz(path: str, mtime: float) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            return as_images(data["images"], path, pack=True)
    except InputError:
        raise
    except Exception as exc:  # BadZipFile, EOFError, zlib errors of a truncated pack
        raise DataError(f"{path}: not a readable .npz file ({exc.__class__.__name__}: {exc})") from None


@functools.lru_cache(maxsize=2)
def _svhn(path: str, mtime: float) -> np.ndarray:
    from scipy.io import loadmat

    try:
        x = loadmat(path)["X"]
    except Exception as exc:
        raise DataError(f"{path}: not a readable SVHN .mat file ({exc})") from None
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2))


@functools.lru_cache(maxsize=2)
def _cifar_cached(spec: str) -> np.ndarray:
    import pickle

    path, split = spec.rsplit("#", 1)
    p = Path(path)
    if (p / "test_batch").exists() or (p / "data_batch_1").exists():
        names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    else:
        names = [split]
    arrays = []
    for n in names:
        f = p / n
        if not f.exists():
            raise DataError(f"{p}: expected the CIFAR file {n} ({split} split), not found")
        try:
            with open(f, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")  # CIFAR's own format is a pickle
            data = d.get(b"data", d.get("data"))
            arrays.append(np.asarray(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        except Exception as exc:
            raise DataError(f"{f}: not a CIFAR pickle ({exc.__class__.__name__}: {exc})") from None
    return np.ascontiguousarray(np.concatenate(arrays))


def cifar(spec: str) -> np.ndarray:
    """The images of a CIFAR folder's split, spec = 'folder#train' or 'folder#test' (cached)."""
    return _cifar_cached(spec)


def mtime(path: str) -> float:
    """A file's modification time (the cache key of its arrays), or DataError."""
    try:
        return os.stat(path).st_mtime
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror})") from None


@functools.lru_cache(maxsize=2)
def table_column(path: str, mtime: float):
    """The image-bytes column of a Parquet table as a list (cached per file version)."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    return f.read(columns=[_bytes_column(f.schema_arrow, path)]).column(0).to_pylist()


def npz_shape(path: str) -> Tuple[int, int]:
    """(height, width) of a .npz pack's images, from its header."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z, z.open("images.npy") as f:
            fmt = np.lib.format
            major, _ = fmt.read_magic(f)
            shape = (fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0)(f)[0]
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc.__class__.__name__}: {exc})") from None
    return int(shape[1]), int(shape[2])


# --- the functions of the built-in input kinds (dlsr_deploy.input_kinds) -----------------------


def npz_ids(path: str) -> List[str]:
    """pack.npz#0, #1, ..."""
    return [f"{path}#{j}" for j in range(npz_length(path))]


def npz_images(path: str) -> np.ndarray:
    """Every image of a .npz pack (cached per file version)."""
    return _npz(path, mtime(path))


def svhn_ids(path: str) -> List[str]:
    """test_32x32.mat#0, #1, ..."""
    return [f"{path}#{j}" for j in range(svhn_length(path))]


def svhn_images(path: str) -> np.ndarray:
    """Every image of an SVHN .mat file (cached per file version)."""
    return _svhn(path, mtime(path))


def cifar_ids(spec: str) -> List[str]:
    """folder#test#0, ... (spec: the folder with its split)."""
    return [f"{spec}#{j}" for j in range(len(cifar(spec)))]


def is_cifar_folder(path) -> bool:
    """A CIFAR-10 (data_batch_* / test_batch) or CIFAR-100 (meta + train / test) pickle folder."""
    path = Path(path)
    return (
        (path / "data_batch_1").exists()
        or (path / "test_batch").exists()
        or ((path / "meta").exists() and ((path / "train").exists() or (path / "test").exists()))
    )


def read_file_one(path: str, index: int, size, max_pixels=None) -> np.ndarray:
    """One image file (dlsr_deploy.preprocess rules)."""
    from dlsr_deploy.preprocess import read_image

    return read_image(path, size, max_pixels=max_pixels)


def read_error_one(path: str, index: int, size, max_pixels=None) -> np.ndarray:
    """An input listed with an error (a broken or looping link) cannot be read."""
    raise InputError(f"{path}: cannot be read")


def parquet_one(path: str, index: int, size, max_pixels=None) -> np.ndarray:
    """Row `index` of a Parquet table's image-bytes column, decoded."""
    from dlsr_deploy.preprocess import decode_image

    value = table_column(path, mtime(path))[index]
    if isinstance(value, dict):
        value = value.get("bytes")
    return decode_image(value or b"", size, f"{path}#{index}", max_pixels=max_pixels)
