import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlsr_deploy.errors import BackendUnavailable, InputError
from dlsr_deploy.manifest import read_manifest
from dlsr_deploy.runtime import Detector


def _ref_scores(bundle, images):
    """PyTorch eager FP32 scores of the same images (the export's reference)."""
    from dlsr_deploy.model.reference import EagerReference

    m = read_manifest(bundle)
    ref = EagerReference.from_run(
        m.source_run, m.score_config, with_lr=any(n.startswith("lr_") for n in m.score_names), combos=m.combinations
    )
    return ref.outputs(images)


def test_ort_cpu_scores_match_eager(bundles, tiny_run):
    _, id_path, ood_path = tiny_run
    unseen = np.load(id_path.parent / "id_unseen.npz")["images"][:20]
    images = np.concatenate([unseen, np.load(ood_path)["images"][:12]])
    for prec, rtol in (("fp32", 1e-5), ("fp16", None)):
        with Detector.load(bundles[prec], backend="ort-cpu") as det:
            got = det.score(images, "all")
        ref = _ref_scores(bundles[prec], images)
        assert set(got) == set(read_manifest(bundles[prec]).score_names)
        for name in got:
            if rtol and name.startswith(("sum_", "max_")):  # combinations: robust-standardised units (IQRs)
                assert np.max(np.abs(got[name] - ref[f"score_{name}"])) <= 1e-3, name
                continue
            r, g = ref[f"score_{name}"], got[name]
            if rtol:
                # LR is a difference of two MSEs (~40x larger than LR here): its FP32 error is
                # relative to the MSE it is computed from, not to the small difference
                base = name[len("lr_") :] if name.startswith("lr_") else name
                scale = np.abs(ref[f"score_{base}"]).mean()
                assert np.max(np.abs(g - r)) <= rtol * scale + 1e-6, name
            else:
                from dlsr_deploy.parity import spearman

                # density heads whiten z0, so they amplify the FP16 backbone's z0 error; on this tiny
                # run (72 training vectors for 512 dims) their covariance is poorly conditioned. The
                # real bundles' parity (768 images, strict tolerances) is checked at export.
                # LR is a difference of two close reconstruction scores, so the FP16 error is
                # relative to each of them, not to the (small) spread of the difference
                # on the tiny run's unseen ID images MSE spans 484..492 while FP16 moves each score by
                # up to 0.03, so neighbouring ranks swap: rank agreement is what is asked, not identity
                floor = 0.998 if name in ("mfsim", "mse") else 0.995 if name.startswith("lr_") else 0.99
                assert spearman(r, g) >= floor, name


def test_batch_splitting_is_invisible(bundles, tiny_run):
    _, id_path, _ = tiny_run
    images = np.load(id_path)["images"][:64]
    with Detector.load(bundles["fp32"], backend="ort-cpu") as det:
        one = np.concatenate([det.score(images[i : i + 1], ["mfsim"])["mfsim"] for i in range(len(images))])
        for bs in (7, 64):
            batched = np.concatenate(
                [det.score(images[i : i + bs], ["mfsim"])["mfsim"] for i in range(0, len(images), bs)]
            )
            np.testing.assert_allclose(batched, one, rtol=1e-5, atol=1e-6)
    with Detector.load(bundles["fp32"], backend="ort-cpu", max_batch=5) as det:  # split inside
        np.testing.assert_allclose(det.score(images, ["mfsim"])["mfsim"], one, rtol=1e-5, atol=1e-6)


def test_predict_threshold_and_normalisation(bundles, tiny_run):
    _, id_path, ood_path = tiny_run
    with Detector.load(bundles["fp32"], backend="ort-cpu") as det:
        out = det.predict(np.load(ood_path)["images"])
        thr = det.threshold
        np.testing.assert_array_equal(out["is_ood"], out["score"] > thr)
        at = (thr - det.center) / det.scale
        assert at == pytest.approx(1.0)
        assert out["is_ood"].mean() > 0.5  # random noise images are OOD for a model of one scene
        single = det.predict(np.load(ood_path)["images"][0])  # one HWC image
        assert single["score"].shape == (1,)


@pytest.mark.parametrize(
    "bad,msg",
    [
        (np.zeros((2, 32, 32), np.uint8), "channels last"),
        (np.zeros((2, 3, 32, 32), np.uint8), "channel-first"),
        (np.zeros((2, 2, 32, 32, 3), np.uint8), "rank 4"),
        (np.zeros((0, 32, 32, 3), np.uint8), "empty"),
        (np.zeros((2, 32, 32, 3), np.int32), "dtype uint8"),
        (np.full((1, 32, 32, 3), np.nan, np.float32), "NaN"),
        (np.full((1, 32, 32, 3), 7.0, np.float32), r"\[0, 1\]"),
        ("not an array", "numpy array"),
        ([], "empty"),
    ],
)
def test_bad_inputs_raise_input_error(bundles, bad, msg):
    with Detector.load(bundles["fp32"], backend="ort-cpu") as det:
        with pytest.raises(InputError, match=msg):
            det.score(bad)


def test_other_sizes_float_and_files(bundles, tmp_path):
    from PIL import Image

    r = np.random.default_rng(3)
    img64 = r.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(img64).save(tmp_path / "a.png")
    with Detector.load(bundles["fp32"], backend="ort-cpu") as det:
        a = det.score(img64[None], ["mfsim"])["mfsim"]
        b = det.score([str(tmp_path / "a.png")], ["mfsim"])["mfsim"]
        c = det.score([Image.fromarray(img64)], ["mfsim"])["mfsim"]
        np.testing.assert_allclose(a, b, rtol=1e-6)
        np.testing.assert_allclose(a, c, rtol=1e-6)
        small = r.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
        np.testing.assert_allclose(
            det.score(small / 255.0, ["mfsim"])["mfsim"], det.score(small, ["mfsim"])["mfsim"], rtol=1e-6
        )
    with Detector.load(bundles["fp32"], backend="ort-cpu", resize=False) as det:
        with pytest.raises(InputError, match="native size"):
            det.score(img64[None])
    det.close()
    with pytest.raises(InputError, match="closed"):
        det.score(img64[None])


def test_backend_selection_and_strict_providers(bundles):
    with Detector.load(bundles["fp32"], backend="auto") as det:  # no GPU on CI: the faster CPU backend
        choice = det.backend_choice
        if "openvino" in det.manifest.backends and len(choice["seconds"]) == 2:
            assert choice["choice"] == min(choice["seconds"], key=choice["seconds"].get) and not choice["cached"]
        assert det.backend_name == choice["choice"] in ("ort-cpu", "openvino")
    with Detector.load(bundles["fp32"], backend="auto") as again:  # measured once per machine
        assert again.backend_name == det.backend_name and (again.backend_choice["cached"] or not choice["seconds"])
    with pytest.raises(BackendUnavailable, match="ort-cuda"):
        Detector.load(bundles["fp32"], backend="ort-cuda", strict_providers=True)
    with pytest.raises(BackendUnavailable):
        Detector.load(bundles["fp32"], backend="nope")


def test_cpu_sessions_do_not_spin_against_each_other(bundles):
    """backbone and denoiser sessions run back to back; a spinning idle pool would take
    the cores from the working one (measured in benchmarks/results/ort_threads.*)."""
    with Detector.load(bundles["fp32"], backend="ort-cpu") as det:
        for s in (det.backend.session("backbone"), det.backend.session("heads"), det.backend.session("denoiser")):
            assert s.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_runtime_never_imports_torch(bundles, tiny_run):
    """The runtime path (load + predict + the dlsr-score command's module) runs with torch absent from sys.modules."""
    _, _, ood = tiny_run
    code = f"""
import sys, numpy as np
from dlsr_deploy.runtime import Detector
from dlsr_deploy.runtime import ort, scored
from dlsr_deploy.cli import score_job
from dlsr_deploy import preprocess
det = Detector.load({str(bundles["fp16"])!r}, backend="ort-cpu")
out = det.predict(np.load({str(ood)!r})["images"][:4])
assert out["score"].shape == (4,)
bad = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
assert not bad, bad
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_dlsr_score_cli(bundles, tiny_run, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from dlsr_deploy.cli import score

    _, _, ood = tiny_run
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(np.load(ood)["images"][:5]):
        Image.fromarray(im).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"junk")
    r = CliRunner().invoke(
        score,
        [str(bundles["fp32"]), str(folder), "--backend", "ort-cpu", "--out", str(tmp_path / "s.json"), "--quiet"]
        + ["--scores", "all"],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "s.json").read_text())["results"]
    assert len(rows) == 6 and {"score_mfsim", "normalized", "is_ood", "error"} <= set(rows[0])
    bad = [r for r in rows if r["error"]]  # the unreadable file gets a row, even with --quiet
    assert len(bad) == 1 and bad[0]["image"].endswith("broken.jpg") and bad[0]["score_mfsim"] is None
    r = CliRunner().invoke(score, [str(bundles["fp32"]), str(ood), "--backend", "ort-cpu", "--quiet"])
    assert r.exit_code == 0 and r.output.count("\n") >= 41 and "images scored" in r.output
    header = r.output.splitlines()[0].split(",")  # by default only the headline (the decision) is computed
    headline = read_manifest(bundles["fp32"]).headline  # the small-data default on the tiny run
    assert header == ["image", f"score_{headline}", "normalized", "is_ood", "error"]


def test_detector_pickles_by_reopening_its_bundle(bundles, tiny_run):
    import pickle

    _, id_path, _ = tiny_run
    images = np.load(id_path)["images"][:4]
    with Detector.load(bundles["fp32"], backend="ort-cpu", max_batch=3) as det:
        clone = pickle.loads(pickle.dumps(det))
        np.testing.assert_array_equal(clone.score(images, ["mfsim"])["mfsim"], det.score(images, ["mfsim"])["mfsim"])
        assert clone.max_batch == 3 and clone.backend_name == "ort-cpu"
        clone.close()
    with pytest.raises(InputError, match="max_batch"):
        Detector.load(bundles["fp32"], backend="ort-cpu", max_batch=0)
    with pytest.raises(BackendUnavailable, match="cuda_graphs"):
        Detector.load(bundles["fp32"], backend="ort-cpu", cuda_graphs=True)


def test_dlsr_score_never_destroys_an_input_and_writes_through(bundles, tiny_run, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from dlsr_deploy.cli import score

    _, _, ood = tiny_run
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.load(ood)["images"][0]).save(folder / "victim.png")
    before = (folder / "victim.png").read_bytes()

    def run(*a):
        return CliRunner().invoke(score, [str(bundles["fp32"]), str(folder), "--backend", "ort-cpu", "--quiet", *a])

    r = run("--out", str(folder / "victim.png"))
    assert r.exit_code == 1 and "one of the inputs" in r.output and (folder / "victim.png").read_bytes() == before
    r = run("--out", str(tmp_path / "missing-dir" / "s.csv"))
    assert r.exit_code == 1 and "does not exist or is not writable" in r.output
    real = tmp_path / "real.JSON"
    (tmp_path / "link.json").symlink_to(real)
    r = run("--out", str(tmp_path / "link.json"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "link.json").is_symlink() and json.loads(real.read_text())[
        "results"
    ]  # written through, suffix case-insensitive
    r = run("--out", "/dev/null")
    assert r.exit_code == 0 and Path("/dev/null").is_char_device()


def test_auto_on_cpu_keeps_the_backend_that_measures_faster(bundles, monkeypatch):
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.runtime import autoselect

    class Slow:
        def __init__(self, delay):
            self.delay, self.closed = delay, False

        def run(self, images, graphs=None):
            import time

            time.sleep(self.delay)

        def close(self):
            self.closed = True

    m = read_manifest(bundles["fp32"])
    opened = []

    def open_backend(name):
        opened.append(name)
        return Slow(0.02 if name == "openvino" else 0.001), 4

    m.data["backends"] = ["ort-cpu", "openvino"]
    first, kept = autoselect.choose_cpu_backend(m, open_backend)
    assert first["choice"] == "ort-cpu" and set(first["seconds"]) == {"ort-cpu", "openvino"} and not first["cached"]
    assert kept is None  # the winner was not the last one measured: closed, the Detector opens it
    again, _ = autoselect.choose_cpu_backend(m, open_backend)
    assert again["choice"] == "ort-cpu" and again["cached"] and opened == ["ort-cpu", "openvino"]
    m.data["backends"] = ["ort-cpu"]  # a bundle that does not list OpenVINO: nothing to measure
    assert autoselect.choose_cpu_backend(m, open_backend) == (
        {"choice": "ort-cpu", "seconds": {}, "cached": False},
        None,
    )
