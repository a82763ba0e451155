"""Inputs of a batch job: listed on the driver (ids only, `dlsr_deploy.inputs`), decoded in Ray
tasks. The rules are the input layer's, the same as every other command's; this module only
shapes them into Ray Data columns. Nothing here imports Ray."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from dlsr_deploy.errors import DataError, InputError
from dlsr_deploy.inputs import decode_one
from dlsr_deploy.inputs import list_inputs as _list


def list_inputs(sources: Sequence[str]) -> Dict[str, np.ndarray]:
    """Columns id / kind / path / index / error (one entry per input image) for the sources, in
    the order given; a source that does not exist or holds nothing is an error naming it."""
    return _list(sources).columns()


def decode_batch(batch: Dict[str, np.ndarray], size: int, max_pixels: Optional[int] = None) -> Dict[str, np.ndarray]:
    """A batch of listed inputs -> id, shard, image uint8 [n, size, size, 3], error ('' when
    the image was read; else why not, with a black image that the scorer skips)."""
    n = len(batch["id"])
    images = np.zeros((n, size, size, 3), np.uint8)
    errors = np.full(n, "", dtype=object)
    listed = batch.get("error", np.full(n, "", dtype=object))
    for i in range(n):
        if listed[i]:
            errors[i] = f"{batch['id'][i]}: {listed[i]}"
            continue
        try:
            images[i] = decode_one(
                str(batch["kind"][i]), str(batch["path"][i]), int(batch["index"][i]), size, max_pixels
            )
        except (InputError, DataError, OSError) as exc:
            errors[i] = str(exc)
    return {"id": batch["id"], "shard": batch["shard"], "image": images, "error": errors}
