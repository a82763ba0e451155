"""Open once, verify what you open, keep it (issue 29): a loaded Detector runs the files it
verified whatever happens to the folder later; bundles are published by an atomic exchange of
folders, so 1,000 loads during re-publication see one bundle or the other, never a mix."""

import os
import pickle
import shutil
import threading

import numpy as np
import pytest

from dlsr_deploy.errors import BundleError
from dlsr_deploy.export.publish import exchange, publish
from dlsr_deploy.manifest import read_manifest
from dlsr_deploy.runtime import Detector


@pytest.fixture
def x(tiny_run):
    return np.load(tiny_run[2])["images"][:4]


def _all(det, x):
    return det.score(x, "all")


def test_a_replaced_graph_is_never_run(bundles, tmp_path, x):
    b = tmp_path / "b"
    shutil.copytree(bundles["fp32"], b)
    with Detector.load(bundles["fp32"], backend="ort-cpu", self_check="never") as ref:
        want = _all(ref, x)
    with Detector.load(b, backend="ort-cpu", self_check="never") as det:
        det.predict(x)  # density headline: the denoiser is not opened yet
        os.replace(b / "heads.onnx", b / "denoiser.onnx")  # another graph at the path (a new inode)
        got = _all(det, x)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_an_in_place_edit_of_a_held_graph_is_refused(bundles, tmp_path, x):
    b = tmp_path / "b"
    shutil.copytree(bundles["fp32"], b)
    with Detector.load(b, backend="ort-cpu", self_check="never") as det:
        with open(b / "denoiser.onnx", "r+b") as f:
            f.seek(100)
            f.write(b"\xff" * 32)
        with pytest.raises(BundleError, match="changed after the bundle was loaded"):
            _all(det, x)


def test_symlink_switch_and_forced_republish_keep_the_loaded_bundle(bundles, tmp_path, x):
    link = tmp_path / "current"
    link.symlink_to(bundles["fp32"])
    with Detector.load(link, backend="ort-cpu", self_check="never") as det:
        want, digest = _all(det, x), det.manifest.data["digest"]
        tmp = tmp_path / "next"
        tmp.symlink_to(bundles["fp16"])
        os.replace(tmp, link)  # blue/green: `current` now points at the other bundle
        assert all(np.array_equal(v, want[k]) for k, v in _all(det, x).items())
        blob = pickle.dumps(det)
    with pickle.loads(blob) as copy:  # the link was resolved at load: a copy re-opens the same bundle
        assert copy.manifest.data["digest"] == digest != read_manifest(link).data["digest"]
    folder = tmp_path / "folder"
    shutil.copytree(bundles["fp32"], folder)
    with Detector.load(folder, backend="ort-cpu", self_check="never") as det:
        new = tmp_path / ".folder.partial"
        shutil.copytree(bundles["fp16"], new)
        publish(new, folder)  # what dlsr-export --force does
        assert all(np.array_equal(v, want[k]) for k, v in _all(det, x).items())
        blob = pickle.dumps(det)
    with pytest.raises(BundleError, match="not the bundle this Detector was loaded from"):
        pickle.loads(blob)  # a copy never silently becomes the new bundle


def test_publish_swaps_whole_folders_and_keeps_the_users_files(bundles, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(bundles["fp32"], out)
    (out / "NOTES.txt").write_text("mine")
    new = tmp_path / ".out.partial"
    shutil.copytree(bundles["fp16"], new)
    publish(new, out)
    assert read_manifest(out).precision == "fp16" and (out / "NOTES.txt").read_text() == "mine"
    assert not new.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_exchange_is_atomic_and_reports_unsupported(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("a")
    (b / "f").write_text("b")
    if not exchange(a, b):
        pytest.skip("this file system has no renameat2(RENAME_EXCHANGE)")
    assert (a / "f").read_text() == "b" and (b / "f").read_text() == "a"


def _digests_scores(bundles, x):
    out = {}
    for p in bundles.values():
        with Detector.load(p, backend="ort-cpu", self_check="never", threads=1) as det:
            out[det.manifest.data["digest"]] = det.predict(x)["score"]
    return out


@pytest.mark.slow
def test_1000_loads_during_forced_republication_never_mix(bundles, tmp_path, x):
    """The issue's acceptance: 1,000 Detector loads while the folder is re-published (what
    `dlsr-export --force` does once its new bundle is complete) give 0 mixed results and 0 raw
    exceptions: every load scores exactly as the bundle its manifest names."""
    want = _digests_scores(bundles, x)
    folder = tmp_path / "live"
    shutil.copytree(bundles["fp32"], folder)
    stop, published = threading.Event(), [0]

    def republish():
        i = 0
        while not stop.is_set():
            src = tmp_path / f".live.partial-{i}"
            shutil.copytree((bundles["fp16"], bundles["fp32"])[i % 2], src)
            publish(src, folder)
            published[0] += 1
            i += 1

    t = threading.Thread(target=republish, daemon=True)
    t.start()
    mixed, errors = [], []
    try:
        for _ in range(1000):
            try:
                with Detector.load(folder, backend="ort-cpu", self_check="never", threads=1) as det:
                    got = det.predict(x)["score"]
                    if not np.array_equal(got, want.get(det.manifest.data["digest"])):
                        mixed.append(det.manifest.precision)
            except Exception as exc:  # any exception is a failure of the guarantee
                errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        stop.set()
        t.join()
    assert published[0] > 10, "the folder was hardly re-published during the loads"
    assert not mixed and not errors, (mixed[:3], errors[:3])
