"""Headless Chromium for the page tests (issue 31): Debian's `chromium` + `chromium-driver`,
driven with Selenium. Skipped with a reason where either is absent, except under CI (`CI` set),
where a missing browser is a failure: .ci/run installs both."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def chromium(width: int = 1280, height: int = 1600):
    """A headless Chromium WebDriver (quit it after use)."""
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromium-driver", DRIVER)) if not p]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install 'dlsr-deploy[dev]')")
    if missing:
        why = f"needs {', '.join(missing)} (apt install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"CI: the browser tests {why}")
        pytest.skip(why)
    opts = webdriver.ChromeOptions()
    flags = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage")
    for a in (*flags, f"--window-size={width},{height}"):
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    return webdriver.Chrome(options=opts, service=Service(DRIVER))
