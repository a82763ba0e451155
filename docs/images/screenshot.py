"""The README's picture of the demo report: headless Chromium (tests/browser.py's settings) on
runs/demo/eval/eval.html, the top 1280 px of the page, as a 256-colour PNG.

    .venv/bin/dlsr-demo
    .venv/bin/python docs/images/screenshot.py runs/demo/eval/eval.html docs/images/demo-report.png
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))


def main(page: str, out: str) -> None:
    """Screenshot `page` into `out`."""
    from browser import chromium
    from PIL import Image

    d = chromium(1280, 1800)
    try:
        d.get(Path(page).resolve().as_uri())
        d.save_screenshot(out)
    finally:
        d.quit()
    im = Image.open(out).convert("RGB")
    im = im.crop((0, 0, im.size[0] - 16, min(1280, im.size[1])))  # without the scroll bar
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"wrote {out} ({Path(out).stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
