"""dlsr-score's work: score image files, folders, packs or tables with a bundle, without torch, into CSV /
JSON rows (`ScoredImages`) and an optional HTML report. The click command is in cli/runtime.py."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import click
import numpy as np

from dlsr_deploy.errors import DataError
from dlsr_deploy.log import progress, warning


def _rows(det, listing, chunk: List[int], res: dict, kept: List[int], skipped, scores: List[str]) -> List[dict]:
    """One row per input of the chunk, in input order: the requested scores, normalized, is_ood;
    unreadable inputs with their error and empty scores."""
    from dlsr_deploy.inputs import display_id
    from dlsr_deploy.runtime.scored import ScoredImages

    ids = [listing.ids[i] for i in chunk]
    ok = np.isin(chunk, kept)
    why = dict(skipped)
    errors = ["" if good else display_id(why.get(id_, "cannot be read")) for id_, good in zip(ids, ok)]
    scored = ScoredImages.of(det, ids, res, scores, ok, errors)
    return [scored.row(j, image=display_id(id_)) for j, id_ in enumerate(ids)]


def score_listing(det, listing, batch_size: int, scores: List[str]) -> List[dict]:
    """Score a listing chunk by chunk (only `batch_size` images decoded at a time) -> rows in input order."""
    from tqdm.auto import tqdm

    from dlsr_deploy.inputs import read_listing

    rows = []
    for start in tqdm(
        range(0, len(listing), batch_size),
        desc=f"score ({det.backend_name})",
        disable=not progress(),
        leave=False,
        file=sys.stderr,
    ):
        chunk = list(range(start, min(start + batch_size, len(listing))))
        images, kept, skipped = read_listing(listing.take(chunk), det.size)
        res = det.predict(images, scores) if len(kept) else {}
        rows += _rows(det, listing, chunk, res, [chunk[k] for k in kept], skipped, scores)
    return rows


def check_destination(
    out: Optional[Path], inputs: Sequence[str], bundles: Sequence = (), keys: Sequence = ()
) -> Optional[Path]:
    """Where the results go, checked before any work: None = stdout ('-' too). A regular file
    (or a new path) is replaced atomically, a symlink is written through to its target, a
    device or pipe is written to directly; nothing the command reads is ever overwritten (an
    input, globs expanded; a file in the bundle folder; a key: `dlsr_deploy.paths`)."""
    import os
    import stat

    from dlsr_deploy.paths import refuse_overwrite
    from dlsr_deploy.preprocess import IMAGE_SUFFIXES

    # resolve() follows symlinks: write through them, never replace them
    target = refuse_overwrite(out, "out", inputs, bundles, keys, suffixes=IMAGE_SUFFIXES | {".npz"})
    if target is None:
        return None
    if target.exists():
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise DataError(f"out: {out} is a folder; give a file name (.csv or .json)", param="out")
        if not os.access(target, os.W_OK):
            raise DataError(f"out: {out} is not writable", param="out")
        if not stat.S_ISREG(mode):
            return target  # a device or pipe: written to directly
    elif not target.parent.is_dir():
        raise DataError(f"out: {out}: the folder {target.parent} does not exist or is not writable", param="out")
    try:  # the atomic write needs a temporary file beside the target: try it now, before any scoring
        import tempfile

        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise DataError(f"out: {out} is not writable ({exc.strerror})", param="out") from None
    return target


ROW_BYTES = 256  # a generous upper estimate of one CSV / JSON row (id, a few scores, decision)


def check_free_space(out: Optional[Path], n_rows: int) -> None:
    """Refuse before any scoring when the output's disk cannot hold the results (about ROW_BYTES a
    row, twice: the temporary file and the one it replaces may coexist)."""
    import shutil
    import stat

    if out is None or (out.exists() and not stat.S_ISREG(out.stat().st_mode)):
        return
    need = 2 * (n_rows * ROW_BYTES + 65536)
    free = shutil.disk_usage(out.parent).free
    if free < need:
        raise DataError(
            f"out: not enough free space in {out.parent} ({free} bytes free, about {need} needed for {n_rows} rows)",
            param="out",
        )


def _write(rows: List[dict], out: Optional[Path], bundle, summary: str) -> None:  # noqa: D103
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
        sys.stdout.flush()  # the rows before the summary line on stderr
    elif out.exists() and not stat.S_ISREG(out.stat().st_mode):  # device, pipe: write through
        with open(out, "w") as f:
            f.write(text)
    else:
        atomic_write_text(out, text)


def score_inputs(
    bundle,
    inputs,
    *,
    backend="auto",
    out: Optional[Path] = None,
    batch_size: int = 32,
    strict: bool = False,
    resize: bool = True,
    trusted_keys=None,
    scores=None,
    report: Optional[Path] = None,
) -> dict:
    """dlsr-score: score every input (files, folders, globs, packs, tables: dlsr_deploy.inputs);
    CSV / JSON with one row per input, in input order. scores: None = the headline, 'all', or names.
    report: also an HTML page (the most OOD images first, the scores against the bundle's ID
    calibration scores)."""
    from dlsr_deploy.inputs import list_inputs
    from dlsr_deploy.runtime.detector import Detector

    out = check_destination(out, inputs, [bundle], [k for k in trusted_keys or () if not isinstance(k, bytes)])
    listing = list_inputs(inputs)  # names and headers only: a wrong input fails before the bundle loads
    check_free_space(out, len(listing))
    with Detector.load(
        bundle, backend=backend, strict_providers=strict, resize=resize, trusted_keys=trusted_keys
    ) as det:
        names = det.row_scores(scores)  # the headline too: normalized / is_ood are its
        rows = score_listing(det, listing, batch_size, names)
        bad = [r for r in rows if r["error"]]
        if bad:  # reported even with --quiet: each also has a row with its error
            shown = "; ".join(f"{r['image']} ({r['error']})" for r in bad[:5])
            warning(f"warning: {len(bad)} unreadable input(s): {shown}")
        n_ok = len(rows) - len(bad)
        n_ood = sum(1 for r in rows if r["is_ood"])
        summary = (
            f"{n_ok} images scored on {det.backend_name} ({det.manifest.precision}): {n_ood} flagged OOD "
            f"({n_ood / max(n_ok, 1):.1%}), threshold {det.score_name} > {det.threshold:.6g}; higher score = more OOD"
            + (f"; {len(bad)} unreadable (rows with an error)" if bad else "")
        )
        if report is not None and n_ok:
            write_score_report(report, det, listing, rows)
    if not n_ok:
        raise DataError(
            f"no readable images in {list(inputs)}: {[r['image'] + ' (' + r['error'] + ')' for r in bad[:3]]}"
        )
    try:
        _write(rows, out, bundle, summary)
    except OSError as exc:  # the disk filled while scoring: atomic_write left nothing half-written
        raise DataError(
            f"out: writing {out} failed ({exc.strerror or exc}); nothing was written (no partial file); free some "
            "space or choose another --out and run again",
            param="out",
        ) from None
    click.echo(summary, err=True)
    return {"rows": rows, "summary": summary}


def write_score_report(path: Path, det, listing, rows: List[dict]) -> Path:
    """dlsr-score --report: the HTML page of report/score_report.py for these rows."""
    from dlsr_deploy.inputs import read_listing
    from dlsr_deploy.report.html import write_page
    from dlsr_deploy.report.score_report import GALLERY, ScoreView, reference_scores, score_page
    from dlsr_deploy.runtime.selfcheck import load_golden

    m = det.manifest
    col = m.output_name(det.score_name)
    ok = [i for i, r in enumerate(rows) if not r["error"]]
    scores = np.array([rows[i][col] for i in ok], np.float64)
    top = [ok[j] for j in np.argsort(-scores, kind="stable")[:GALLERY]]
    images, kept, _ = read_listing(listing.take(top), det.size)
    top = [top[k] for k in kept]
    thr = m.threshold
    golden = None if thr.id_quantiles else load_golden(m)
    ref, how = reference_scores(thr, golden, col)
    view = ScoreView(
        bundle=m.name, precision=m.precision, backend=det.backend_name, score_name=det.score_name,
        threshold=det.threshold, center=thr.center, scale=thr.scale, scores=scores,
        ids=[rows[i]["image"] for i in ok], images=images, image_ids=[rows[i]["image"] for i in top],
        image_scores=np.array([rows[i][col] for i in top], np.float64), id_reference=ref, id_reference_how=how,
        n_unreadable=len(rows) - len(ok),
        meta=[f"bundle {m.name} ({m.precision}) on {det.backend_name}", f"{len(ok)} images scored"],
    )
    return write_page(path, score_page(view))
