"""The README's picture of the demo report: headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium, as in the page tests) on runs/demo/eval/eval.html, the top 1280 px of the page,
as a 256-colour PNG.

    .venv/bin/dlsr-demo
    .venv/bin/python docs/images/screenshot.py runs/demo/eval/eval.html docs/images/demo-report.png
"""

import shutil
import sys
from pathlib import Path


def main(page: str, out: str) -> None:
    """Screenshot `page` into `out`."""
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1800"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "chromedriver"))
    try:
        driver.get(Path(page).resolve().as_uri())
        driver.save_screenshot(out)
    finally:
        driver.quit()
    im = Image.open(out).convert("RGB")
    im = im.crop((0, 0, im.size[0] - 16, min(1280, im.size[1])))  # without the scroll bar
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"wrote {out} ({Path(out).stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
