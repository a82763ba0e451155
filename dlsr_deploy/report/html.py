"""One self-contained HTML file: inline CSS, SVG plots and PNG thumbnails as data URIs; no script,
no network, no framework, so it opens the same in any browser, offline, years later.

What a page may show is what the run or bundle holds: set names, scores, metrics, thumbnails.
Paths are shown as their last part only (`display_name`), never the machine's absolute path.
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;
padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin-bottom:4px} .meta{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left} .note{background:#fff6d6;border-left:4px solid #e0b000;padding:6px 10px;
margin:8px 0;font-size:13px} .plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.gallery{display:flex;flex-wrap:wrap;gap:8px} figure{margin:0;width:104px;font-size:11px;text-align:center}
figure img{width:96px;height:96px;image-rendering:pixelated;border:3px solid #ccc}
figure.over img{border-color:#d62728} figure.under img{border-color:#2ca02c}
"""


def display_name(path_or_name) -> str:
    """A set or file as the report shows it: its last path part (no machine paths)."""
    s = str(path_or_name)
    if "=" in s and not s.startswith("/"):
        s = s.split("=", 1)[0]
    return Path(s).name or s


def thumbnail(img: np.ndarray, size: int = 96) -> str:
    """uint8 HxWx3 (or HxW) -> a PNG data URI, scaled to size x size (nearest: the pixels as scored)."""
    from PIL import Image

    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise ValueError(f"thumbnail: expected uint8 pixels, got {a.dtype}")
    im = Image.fromarray(a)
    if max(im.size) > size:
        im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> str:
    """An HTML table, every cell escaped."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def gallery(title: str, items: List[dict], blurb: str, cls: str = "") -> str:
    """Thumbnails with captions. items: {image, lines: [str], over: bool}: a red frame marks an
    image over the threshold (flagged OOD), a green one under it."""
    figs = []
    for it in items:
        state = "over" if it["over"] else "under"
        cap = "<br>".join(escape(x) for x in it["lines"])
        figs.append(
            f'<figure class="{state}"><img src="{thumbnail(it["image"])}" alt="{escape(it["lines"][0])}">'
            f"<figcaption>{cap}</figcaption></figure>"
        )
    return (
        f'<section class="gallery-block {escape(cls)}"><h3>{escape(title)}</h3><p class="meta">{escape(blurb)}</p>'
        f'<div class="gallery">{"".join(figs) or "<p>(none)</p>"}</div></section>'
    )


def note(text: str) -> str:
    """A highlighted note (escaped)."""
    return f'<p class="note">{escape(text)}</p>'


def page(title: str, meta: Sequence[str], sections: Sequence[str]) -> str:
    """The document: title, meta lines (escaped), then the sections (HTML, made by this package)."""
    lines = "".join(f"<div>{escape(m)}</div>" for m in meta)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f'<body><h1>{escape(title)}</h1><div class="meta">{lines}</div>{"".join(sections)}</body></html>\n'
    )


def write_page(path: Path, html: str) -> Path:
    """Written whole (a temporary file, then a rename)."""
    from dlsr_deploy.io import atomic_write_text

    atomic_write_text(Path(path), html)
    return Path(path)


def score_items(
    images, scores: np.ndarray, order: np.ndarray, threshold: Optional[float], norm, ids=None
) -> List[dict]:
    """Gallery items for images[order]: score, normalised score (1.0 = threshold), id if given."""
    out = []
    for i in order:
        s = float(scores[i])
        lines = [f"score {s:.4g}", f"normalised {float(norm(s)):.2f}"]
        if ids is not None:
            lines.insert(0, display_name(ids[i])[:18])
        out.append({"image": images[i], "lines": lines, "over": threshold is not None and s > threshold})
    return out
