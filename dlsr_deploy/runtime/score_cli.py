"""dlsr-score: score image files, folders or .npz packs with a bundle (no torch)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.errors import DataError


def collect(inputs: Sequence[str], size: int) -> Tuple[np.ndarray, List[str], List[str]]:
    """(images uint8 [N, size, size, 3], ids, skipped) from files, folders and .npz packs."""
    from dlsr_deploy.data import IMAGE_SUFFIXES, load_images, _to_square

    from PIL import Image

    arrays, ids, skipped = [], [], []
    for src in inputs:
        p = Path(src)
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            try:
                with Image.open(p) as img:
                    arrays.append(_to_square(img.convert("RGB"), size)[None])
                ids.append(str(p))
            except (OSError, ValueError) as exc:
                skipped.append(f"{p} ({exc.__class__.__name__})")
            continue
        s = load_images(src, size=size)
        arrays.append(s.images)
        ids += s.paths or [f"{src}#{i}" for i in range(len(s))]
        skipped += s.skipped
    if not arrays:
        raise DataError(f"no readable images in {list(inputs)}" + (f"; unreadable: {skipped[:3]}" if skipped else ""))
    return np.concatenate(arrays), ids, skipped


def score_inputs(bundle, inputs, backend="auto", out: Optional[Path] = None, batch_size: int = 32, strict: bool = False, resize: bool = True, quiet: bool = False) -> dict:
    from tqdm.auto import tqdm

    from dlsr_deploy.runtime.detector import Detector

    with Detector.load(bundle, backend=backend, strict_providers=strict, resize=resize) as det:
        images, ids, skipped = collect(inputs, det.size)
        if skipped and not quiet:
            print(f"warning: {len(skipped)} unreadable file(s) skipped: " + "; ".join(skipped[:5]), file=sys.stderr)
        parts = []
        for i in tqdm(range(0, len(images), batch_size), desc=f"score ({det.backend_name})", disable=quiet, leave=False, file=sys.stderr):
            parts.append(det.predict(images[i : i + batch_size]))
        res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        names = list(det.manifest.score_names)
        rows = [{"image": ids[i], **{f"score_{n}": float(res[n][i]) for n in names}, "normalized": float(res["normalized"][i]), "is_ood": bool(res["is_ood"][i])} for i in range(len(ids))]
        n_ood = int(res["is_ood"].sum())
        summary = f"{len(rows)} images scored on {det.backend_name} ({det.manifest.precision}): {n_ood} flagged OOD ({n_ood / len(rows):.1%}), threshold {det.score_name} > {det.threshold:.6g}; higher score = more OOD"
    if out is not None and Path(out).suffix == ".json":
        from dlsr_deploy.io import atomic_write_text

        atomic_write_text(Path(out), json.dumps({"bundle": str(bundle), "summary": summary, "results": rows}, indent=2) + "\n")
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
        if out is not None:
            from dlsr_deploy.io import atomic_write_text

            atomic_write_text(Path(out), buf.getvalue())
        else:
            sys.stdout.write(buf.getvalue())
    print(summary, file=sys.stderr)
    return {"rows": rows, "summary": summary}
