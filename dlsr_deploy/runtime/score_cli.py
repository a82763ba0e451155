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


def collect(inputs: Sequence[str], size: int) -> Tuple[np.ndarray, List[str], List[Tuple[str, str]]]:
    """(images uint8 [N, size, size, 3], ids, [(path, why unreadable)]) from image files,
    folders and .npz packs (dlsr_deploy.preprocess rules; every input is accounted for)."""
    from dlsr_deploy.errors import InputError
    from dlsr_deploy.preprocess import IMAGE_SUFFIXES, image_files, read_files, read_npz, resize_images

    arrays, ids, skipped = [], [], []
    for src in inputs:
        p = Path(src)
        if not p.exists():
            raise DataError(f"input not found: {src} (expected image files, folders or .npz packs)")
        try:
            if p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES:
                files = image_files(p) if p.is_dir() else [p]
                if not files:
                    raise DataError(f"{p}: no image files found (looked for {sorted(IMAGE_SUFFIXES)})")
                images, kept, bad = read_files(files, size)
                skipped += bad
            elif p.suffix.lower() == ".npz":
                images = resize_images(read_npz(p), size)
                kept = [f"{src}#{i}" for i in range(len(images))]
            else:
                raise DataError(f"{src}: unsupported input (expected image files, folders or .npz packs)")
        except InputError as exc:
            raise DataError(str(exc)) from None
        if len(images):
            arrays.append(images)
            ids += kept
    if not arrays:
        raise DataError(f"no readable images in {list(inputs)}" + (f"; unreadable: {skipped[:3]}" if skipped else ""))
    return np.concatenate(arrays), ids, skipped


def _rows(det, ids: List[str], res: dict, skipped) -> List[dict]:
    """One row per input: every score, normalized, is_ood; unreadable inputs with their error."""
    m = det.manifest
    rows = [
        {
            "image": ids[i],
            **{o: float(res[n][i]) for n, o in zip(m.score_names, m.output_names)},
            "normalized": float(res["normalized"][i]),
            "is_ood": bool(res["is_ood"][i]),
            "error": "",
        }
        for i in range(len(ids))
    ]
    empty = {o: None for o in m.output_names}
    return rows + [{"image": p, **empty, "normalized": None, "is_ood": None, "error": why} for p, why in skipped]


def check_destination(out: Optional[Path], inputs: Sequence[str]) -> Optional[Path]:
    """Where the results go, checked before any work: None = stdout ('-' too). A regular file
    (or a new path) is replaced atomically, a symlink is written through to its target, a
    device or pipe is written to directly; an input is never overwritten."""
    import os
    import stat

    from dlsr_deploy.preprocess import IMAGE_SUFFIXES

    if out is None or str(out) == "-":
        return None
    target = Path(out).resolve()  # follows symlinks: write through them, never replace them
    for src in inputs:
        p = Path(src).resolve()
        if target == p or (p.is_dir() and p in target.parents and target.suffix.lower() in IMAGE_SUFFIXES | {".npz"}):
            raise DataError(f"--out {out} is one of the inputs; choose another file")
    if target.exists():
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise DataError(f"--out {out} is a folder; give a file name (.csv or .json)")
        if not os.access(target, os.W_OK):
            raise DataError(f"--out {out}: not writable")
        if not stat.S_ISREG(mode):
            return target  # a device or pipe: written to directly
    elif not target.parent.is_dir():
        raise DataError(f"--out {out}: the folder {target.parent} does not exist or is not writable")
    try:  # the atomic write needs a temporary file beside the target: try it now, before any scoring
        import tempfile

        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise DataError(f"--out {out}: not writable ({exc.strerror})") from None
    return target


def _write(rows: List[dict], out: Optional[Path], bundle, summary: str) -> None:
    """JSON when --out ends in .json (any case), else CSV; stdout without --out."""
    import stat

    from dlsr_deploy.io import atomic_write_text

    if out is not None and out.suffix.lower() == ".json":
        text = json.dumps({"bundle": str(bundle), "summary": summary, "results": rows}, indent=2) + "\n"
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    if out is None:
        sys.stdout.write(text)
    elif out.exists() and not stat.S_ISREG(out.stat().st_mode):  # device, pipe: write through
        with open(out, "w") as f:
            f.write(text)
    else:
        atomic_write_text(out, text)


def score_inputs(
    bundle,
    inputs,
    backend="auto",
    out: Optional[Path] = None,
    batch_size: int = 32,
    strict: bool = False,
    resize: bool = True,
    quiet: bool = False,
    trusted_keys=None,
) -> dict:
    """dlsr-score: score files, folders and packs; CSV / JSON with one row per input."""
    from tqdm.auto import tqdm

    from dlsr_deploy.runtime.detector import Detector

    out = check_destination(out, inputs)
    with Detector.load(
        bundle, backend=backend, strict_providers=strict, resize=resize, trusted_keys=trusted_keys
    ) as det:
        images, ids, skipped = collect(inputs, det.size)
        if skipped:  # reported even with --quiet: each also gets a row with its error
            bad = "; ".join(f"{p} ({why})" for p, why in skipped[:5])
            print(f"warning: {len(skipped)} unreadable file(s): {bad}", file=sys.stderr)
        steps = range(0, len(images), batch_size)
        bar = tqdm(steps, desc=f"score ({det.backend_name})", disable=quiet, leave=False, file=sys.stderr)
        parts = [det.predict(images[i : i + batch_size]) for i in bar]
        res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        rows = _rows(det, ids, res, skipped)
        n_ood = int(res["is_ood"].sum())
        summary = (
            f"{len(ids)} images scored on {det.backend_name} ({det.manifest.precision}): {n_ood} flagged OOD "
            f"({n_ood / len(ids):.1%}), threshold {det.score_name} > {det.threshold:.6g}; higher score = more OOD"
            + (f"; {len(skipped)} unreadable (rows with an error)" if skipped else "")
        )
    _write(rows, out, bundle, summary)
    print(summary, file=sys.stderr)
    return {"rows": rows, "summary": summary}
