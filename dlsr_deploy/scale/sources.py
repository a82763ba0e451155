"""Inputs of a batch job: list them on the driver (ids only), decode them in Ray tasks.

Sources: image files, folders (every image below them), globs (`data/**/*.jpg`), `.npz` packs
(`images` uint8 [N, H, W, 3]) and Parquet files whose image column holds encoded bytes (a
binary column named image / bytes / image_bytes / content, or a Hugging Face style struct
with a `bytes` field; ids from an `id` / `path` / `name` string column when there is one).

Every input gets one id and one row in the output, readable or not: ids are the file path,
`pack.npz#7` or `table.parquet#7` (or the table's own id column). Nothing here imports Ray.
"""

from __future__ import annotations

import functools
import glob
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from dlsr_deploy.errors import DataError, InputError
from dlsr_deploy.preprocess import IMAGE_SUFFIXES, as_images, decode_image, image_files, read_image, to_square

BYTES_COLUMNS = ("image", "bytes", "image_bytes", "content")
ID_COLUMNS = ("id", "path", "name")
GLOB_CHARS = set("*?[")


def list_inputs(sources: Sequence[str]) -> Dict[str, np.ndarray]:
    """Columns id / kind / path / index (one entry per input image) for the sources, in the
    order given; a source that does not exist or holds nothing is an error naming it."""
    ids: List[str] = []
    kinds: List[str] = []
    paths: List[str] = []
    index: List[int] = []

    def add(i, k, p, j):
        ids.append(i)
        kinds.append(k)
        paths.append(p)
        index.append(j)

    for src in sources:
        for p in _expand(src):
            suffix = p.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                add(str(p), "file", str(p), 0)
            elif suffix == ".npz":
                for j in range(_pack_length(p)):
                    add(f"{p}#{j}", "npz", str(p), j)
            elif suffix == ".parquet":
                for j, name in enumerate(_parquet_ids(p)):
                    add(name, "parquet", str(p), j)
            else:
                raise DataError(f"{p}: unsupported input (expected image files, folders, globs, .npz or .parquet)")
    if not ids:
        raise DataError(f"no inputs in {list(sources)}")
    seen = set()
    dup = next((i for i in ids if i in seen or seen.add(i)), None)
    if dup is not None:
        raise DataError(f"input {dup!r} is given twice; every input must have one id")
    return {
        "id": np.array(ids, dtype=object),
        "kind": np.array(kinds, dtype=object),
        "path": np.array(paths, dtype=object),
        "index": np.array(index, dtype=np.int64),
    }


def _expand(src: str) -> List[Path]:
    if GLOB_CHARS & set(src):
        found = sorted(Path(p) for p in glob.glob(src, recursive=True) if Path(p).is_file())
        if not found:
            raise DataError(f"{src}: the glob matches no file")
        return found
    p = Path(src)
    if not p.exists():
        raise DataError(f"input not found: {src} (expected image files, folders, globs, .npz or .parquet)")
    if p.is_dir():
        files = image_files(p) + sorted(p.rglob("*.npz")) + sorted(p.rglob("*.parquet"))
        if not files:
            raise DataError(f"{p}: no image files, .npz or .parquet found")
        return files
    return [p]


def _pack_length(path: Path) -> int:
    """Images in a .npz pack, read from the array header only (no decompression)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            with z.open("images.npy") as f:
                fmt = np.lib.format
                major, _ = fmt.read_magic(f)
                header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
                shape, _, _ = header(f)
    except KeyError:
        raise DataError(f"{path}: expected an array named 'images'") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if len(shape) not in (3, 4) or shape[0] == 0:
        raise DataError(f"{path}: expected images [N, H, W, 3] with N > 0, got shape {list(shape)}")
    return int(shape[0])


def _parquet_ids(path: Path) -> List[str]:
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
    return [str(v) for v in f.read(columns=[id_col]).column(0).to_pylist()]


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
def _pack(path: str, mtime: float) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return data["images"]


@functools.lru_cache(maxsize=2)
def _table_column(path: str, mtime: float):
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    col = f.read(columns=[_bytes_column(f.schema_arrow, path)]).column(0)
    return col.to_pylist()


def _decode_one(kind: str, path: str, index: int, size: int) -> np.ndarray:
    if kind == "file":
        return read_image(path, size)
    mtime = Path(path).stat().st_mtime
    if kind == "npz":
        image = as_images(_pack(path, mtime)[index : index + 1], f"{path}#{index}", pack=True)[0]
        return to_square(image, size)
    value = _table_column(path, mtime)[index]
    if isinstance(value, dict):
        value = value.get("bytes")
    return decode_image(value or b"", size, f"{path}#{index}")


def decode_batch(batch: Dict[str, np.ndarray], size: int) -> Dict[str, np.ndarray]:
    """A batch of listed inputs -> id, shard, image uint8 [n, size, size, 3], error ('' when
    the image was read; else why not, with a black image that the scorer skips)."""
    n = len(batch["id"])
    images = np.zeros((n, size, size, 3), np.uint8)
    errors = np.full(n, "", dtype=object)
    for i in range(n):
        try:
            images[i] = _decode_one(str(batch["kind"][i]), str(batch["path"][i]), int(batch["index"][i]), size)
        except (InputError, DataError, OSError) as exc:
            errors[i] = str(exc)
    return {"id": batch["id"], "shard": batch["shard"], "image": images, "error": errors}
