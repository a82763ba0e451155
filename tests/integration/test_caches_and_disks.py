"""Caches are optional, disks can fill, any image has a bounded cost (issue 29)."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlsr_deploy.runtime import Detector
from dlsr_deploy.runtime.verdicts import VerdictCache

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def full_disk(kb=64):
    """A tiny tmpfs filled to the last byte (needs root to mount; skipped otherwise)."""
    d = Path(tempfile.mkdtemp(prefix="dlsr-full-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:80]})")
    try:
        with contextlib.suppress(OSError), open(d / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        yield d
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def _leftovers(d: Path):
    files = [p for p in d.rglob("*") if p.is_file() and p.name != "filler"]
    return [str(p) for p in files if p.stat().st_size == 0 or ".tmp" in p.name]


def test_dlsr_cache_is_the_root_not_a_sibling(bundles, tmp_path, monkeypatch):
    root = tmp_path / "X"
    monkeypatch.setenv("DLSR_CACHE", str(root))
    Detector.load(bundles["fp32"], backend="ort-cpu").close()
    assert (root / "selfcheck").is_dir() and not (tmp_path / "selfcheck").exists()


def test_a_read_only_cache_means_no_cache_and_one_warning(bundles, tmp_path, monkeypatch):
    if os.geteuid() == 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], check=False)
        if not os.path.ismount(ro):
            pytest.skip("cannot mount a read-only tmpfs")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o555)
    try:
        monkeypatch.setenv("DLSR_CACHE", str(ro / "cache"))
        from dlsr_deploy.runtime import backend

        backend._CACHE_PROBES.clear()
        with pytest.warns(RuntimeWarning, match="not usable"):
            with Detector.load(bundles["fp32"], backend="auto") as det:  # auto, OpenVINO's model cache too
                assert np.isfinite(det.predict(np.zeros((2, 32, 32, 3), np.uint8))["score"]).all()
    finally:
        if os.path.ismount(ro):
            subprocess.run(["umount", str(ro)], check=False)


def test_a_full_disk_verdict_cache_leaves_no_empty_key(tmp_path):
    with full_disk() as d:
        cache = VerdictCache("selfcheck", root=d / "c")
        assert cache.put({"a": 1}, {"passed": True}) is False
        assert _leftovers(d) == [] and not (d / "c" / ".verdict-key").exists()


def test_an_old_empty_key_is_replaced(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".verdict-key").write_bytes(b"")
    os.chmod(tmp_path / "c" / ".verdict-key", 0o600)
    cache = VerdictCache("selfcheck", root=tmp_path / "c")
    assert cache.put({"a": 1}, {"passed": True}) and cache.get({"a": 1}) == {"passed": True}


def test_dlsr_score_on_a_full_disk_fails_in_one_line_and_leaves_nothing(bundles, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(imgs / f"{i}.png")
    with full_disk() as d:
        r = subprocess.run(
            [str(BIN / "dlsr-score"), str(bundles["fp32"]), str(imgs), "--backend", "ort-cpu", "--quiet", "--out",
             str(d / "rows.csv")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 1 and "Traceback" not in r.stderr and "space" in r.stderr.lower()
        assert sorted(p.name for p in d.iterdir()) == ["filler"]


PEAK_MB = (
    "def peak_mb():\n"
    "    with open('/proc/self/status') as f:\n"
    "        return next(int(line.split()[1]) for line in f if line.startswith('VmHWM')) / 1024\n"
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc/self/status (VmHWM)")
def test_a_huge_png_is_refused_from_its_header_with_bounded_memory(bundles, tmp_path):
    p = tmp_path / "huge.png"
    Image.new("L", (12000, 12000), 128).save(p)  # ~140 KB on disk, 432 MB as RGB
    # the child's own peak (VmHWM): getrusage's ru_maxrss carries the forking parent's peak over, so
    # under a large pytest process before and after would both be the parent's and the test could not fail
    code = (
        PEAK_MB + "from dlsr_deploy.runtime import Detector\n"
        f"det = Detector.load({str(bundles['fp32'])!r}, backend='ort-cpu')\n"
        "before = peak_mb()\n"
        "try:\n"
        f"    det.predict([{str(p)!r}])\n"
        "except Exception as e:\n"
        "    print(type(e).__name__ + ': ' + str(e))\n"
        "print(int(peak_mb() - before))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    msg, grew = r.stdout.strip().splitlines()
    # the peak after load is what the loaded runtime costs on this machine; the refusal
    # must not decode the image (144 MB as L, 432 MB as RGB), so the peak barely moves
    assert msg.startswith("InputError") and "over the limit" in msg
    assert int(grew) < 100, f"peak RSS grew {grew} MB while refusing the image"


def test_large_images_under_the_limit_decode_like_before(tmp_path):
    """Pillow-side crop + resize gives the same pixels as the numpy path (to_square)."""
    from dlsr_deploy.preprocess import pil_to_rgb, read_image, to_square

    rng = np.random.default_rng(0)
    for mode, shape in (("RGB", (300, 500, 3)), ("L", (500, 300)), ("RGBA", (200, 240, 4))):
        p = tmp_path / f"{mode}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(p)
        with Image.open(p) as im:
            want = to_square(pil_to_rgb(im), 64)
        assert np.array_equal(read_image(p, 64), want)
