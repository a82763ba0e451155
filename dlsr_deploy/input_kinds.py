"""The table of input kinds: how each kind of input is listed and read (numpy + Pillow; pyarrow for
Parquet, scipy for SVHN: imported when used).

`dlsr_deploy.inputs` lists every source through this table and reads every listed input through
it, for every command. A new kind (a file format, a dataset layout) is one module with its
functions plus one `register_input_kind(InputKind(...))` line; `dlsr-score`, `dlsr-train`,
`dlsr-eval`, the bench and the Ray job then accept it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class InputKind:
    """One kind of input.

    suffixes: file suffixes of this kind (lower case, with the dot); a folder kind has none and is
        recognised by `is_folder(path)`.
    ids: path -> one id per image inside it (a single image file: None).
    images: path -> every image of it, uint8 [N, H, W, 3] (kinds read as one array; None for kinds
        read one input at a time).
    one: (path, index, size, max_pixels) -> uint8 [H, W, 3] (kinds read one input at a time).
    shape: path -> (height, width) from headers, without decoding (the native size's median).
    """

    name: str
    suffixes: Tuple[str, ...] = ()
    ids: Optional[Callable[[str], List[str]]] = None
    images: Optional[Callable[[str], np.ndarray]] = None
    one: Optional[Callable[..., np.ndarray]] = None
    shape: Optional[Callable[[str], Tuple[int, int]]] = None
    is_folder: Optional[Callable[[str], bool]] = None

    @property
    def bulk(self) -> bool:
        """Whether its inputs are read as one array (a pack) rather than one at a time."""
        return self.images is not None


INPUT_KINDS: Dict[str, InputKind] = {}


def register_input_kind(kind: InputKind, replace: bool = False) -> InputKind:
    """Add an input kind (replace=True to override one of the same name or suffix)."""
    from dlsr_deploy.errors import ConfigError

    taken = {s: k.name for k in INPUT_KINDS.values() for s in k.suffixes if k.name != kind.name}
    clash = [s for s in kind.suffixes if s in taken]
    if (kind.name in INPUT_KINDS or clash) and not replace:
        raise ConfigError(f"input kind {kind.name!r}: already registered, or its suffixes {clash} are taken")
    if (kind.images is None) == (kind.one is None):
        raise ConfigError(f"input kind {kind.name!r}: give exactly one of images (a pack) or one (one at a time)")
    INPUT_KINDS[kind.name] = kind
    return kind


def unregister_input_kind(name: str) -> None:
    """Remove an input kind (tests, plug-ins)."""
    INPUT_KINDS.pop(name, None)


def kind_for_suffix(suffix: str) -> Optional[str]:
    """The kind a file suffix names (None: not a registered pack or table suffix)."""
    return next((k.name for k in INPUT_KINDS.values() if suffix.lower() in k.suffixes), None)


def folder_kind(path: str) -> Optional[str]:
    """The kind a folder is as a whole (a CIFAR folder), else None (a folder of inputs)."""
    return next((k.name for k in INPUT_KINDS.values() if k.is_folder and k.is_folder(path)), None)


def _register_builtin_kinds() -> None:
    from dlsr_deploy import packs

    register_input_kind(InputKind("file", one=packs.read_file_one))
    register_input_kind(InputKind("error", one=packs.read_error_one))
    register_input_kind(
        InputKind("npz", (".npz",), packs.npz_ids, packs.npz_images, shape=packs.npz_shape)
    )  # fmt: skip
    register_input_kind(InputKind("parquet", (".parquet",), packs.parquet_ids, one=packs.parquet_one))
    register_input_kind(
        InputKind("svhn", (".mat",), packs.svhn_ids, packs.svhn_images, shape=lambda p: (32, 32))
    )  # fmt: skip
    register_input_kind(
        InputKind("cifar", (), packs.cifar_ids, packs.cifar, shape=lambda p: (32, 32), is_folder=packs.is_cifar_folder)
    )  # fmt: skip


_register_builtin_kinds()
