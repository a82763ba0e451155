"""Scale-out on Ray (issue 12): batch scoring with Ray Data and the Ray Serve service, on a
local cluster of 2 CPUs."""

import io
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'dlsr-deploy[ray]'")
pq = pytest.importorskip("pyarrow.parquet")

from dlsr_deploy.errors import DataError  # noqa: E402
from dlsr_deploy.manifest import output_name  # noqa: E402
from dlsr_deploy.runtime import Detector  # noqa: E402
from dlsr_deploy.scale.batch import JobOptions, score_dataset  # noqa: E402

OPTS = dict(backend="ort-cpu", batch_size=16, shard_size=64, actors=1, cpus_per_actor=1)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """150 images in a pack, 48 PNG files, one corrupt PNG and one empty JPEG: 200 inputs."""
    from PIL import Image

    d = tmp_path_factory.mktemp("ray-inputs")
    pack = _images(150, 1)
    np.savez(d / "pack.npz", images=pack)
    files = d / "files"
    files.mkdir()
    loose = _images(48, 2)
    for i, im in enumerate(loose):
        Image.fromarray(im).save(files / f"{i:03d}.png")
    (files / "broken.png").write_bytes(b"\x89PNG not really")
    (files / "empty.jpg").write_bytes(b"")
    ids = [f"{d / 'pack.npz'}#{i}" for i in range(150)] + [str(files / f"{i:03d}.png") for i in range(48)]
    return {"sources": [str(d / "pack.npz"), str(files)], "images": np.concatenate([pack, loose]), "ids": ids}


def _table(out):
    return pq.read_table(sorted(out.glob("part-*.parquet"))).to_pydict()


def test_batch_job_matches_detector_with_one_row_per_input(cluster, bundles, inputs, tmp_path):
    out = tmp_path / "job"
    summary = score_dataset(bundles["fp32"], inputs["sources"], out, opts=JobOptions(**OPTS))
    t = _table(out)
    assert len(t["image"]) == 200 == summary["inputs"] and len(set(t["image"])) == 200
    errors = {i: e for i, e in zip(t["image"], t["error"]) if e}
    assert sorted(os.path.basename(i) for i in errors) == ["broken.png", "empty.jpg"]
    assert all(t["is_ood"][t["image"].index(i)] is None for i in errors)
    with Detector.load(bundles["fp32"], backend="ort-cpu") as det:
        ref = det.predict(inputs["images"])
        out_name = output_name(det.score_name)
    row = {i: k for k, i in enumerate(t["image"])}
    got = np.array([t[out_name][row[i]] for i in inputs["ids"]], dtype=np.float32)
    np.testing.assert_array_equal(got, ref["score"])  # bitwise: the same graphs on ORT CPU FP32
    assert [t["is_ood"][row[i]] for i in inputs["ids"]] == ref["is_ood"].tolist()
    assert summary["unreadable_now"] == 2 and json.loads((out / "_summary.json").read_text())["inputs"] == 200


def test_resume_skips_finished_shards_and_refuses_another_job(cluster, bundles, inputs, tmp_path):
    out = tmp_path / "job"
    first = score_dataset(bundles["fp32"], inputs["sources"], out, opts=JobOptions(**OPTS))
    assert first["shards"] == 4
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    (out / "part-00001.parquet").unlink()  # lost
    (out / "part-00003.parquet").write_bytes(b"PAR1 half-written")  # damaged
    with pytest.raises(DataError, match="already holds a batch job"):
        score_dataset(bundles["fp32"], inputs["sources"], out, opts=JobOptions(**OPTS))
    again = score_dataset(bundles["fp32"], inputs["sources"], out, opts=JobOptions(**OPTS, resume=True))
    assert again["shards_skipped"] == 2 and again["scored_now"] == 64 + 8
    for name in ("part-00000.parquet", "part-00002.parquet"):
        assert (out / name).stat().st_mtime_ns == stamps[name]  # not rewritten
    t = _table(out)
    assert sorted(t["image"]) == sorted(
        inputs["ids"] + [i for i in t["image"] if i.endswith(("broken.png", "empty.jpg"))]
    )
    with pytest.raises(DataError, match="differs in"):
        score_dataset(bundles["fp32"], inputs["sources"][:1], out, opts=JobOptions(**OPTS, resume=True))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        score_dataset(bundles["fp32"], inputs["sources"], tmp_path / "mine", opts=JobOptions(**OPTS))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def _scorer_pid():
    """The process of a live scoring actor: Ray titles it ray::MapWorker(MapBatches(Scorer))."""
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and b"MapBatches(Scorer)" in cmd and b"IDLE" not in cmd:
            return int(proc.name)
    return None


def test_actor_killed_mid_job_still_gives_every_row_exactly_once(cluster, bundles, tmp_path):
    pack = tmp_path / "many.npz"
    np.savez(pack, images=_images(3000, 3))
    out = tmp_path / "job"
    opts = JobOptions(**{**OPTS, "shard_size": 100})
    result, killed = {}, {}
    job = threading.Thread(target=lambda: result.update(score_dataset(bundles["fp32"], [str(pack)], out, opts=opts)))
    job.start()
    deadline = time.time() + 120
    while time.time() < deadline and not killed:
        pid = _scorer_pid()
        if pid and len(list(out.glob("part-*.parquet"))) >= 2:
            killed["shards_before"] = len(list(out.glob("part-*.parquet")))
            os.kill(pid, signal.SIGKILL)
            killed["pid"] = pid
        time.sleep(0.05)
    job.join(timeout=240)
    assert killed and killed["shards_before"] < 30, "the job ended before an actor could be killed"
    assert result["inputs"] == 3000
    t = _table(out)
    assert len(t["image"]) == 3000 and set(t["image"]) == {f"{pack}#{i}" for i in range(3000)}
    assert not any(t["error"])


# ---- the online service -------------------------------------------------------------------

PORT = 8431


def _post(body: bytes, path="/score", timeout=60):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=30) as r:
        body = r.read()
        return r.status, (json.loads(body) if path != "/healthz" else body.decode())


def _png(image):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.fixture(scope="module")
def service(cluster, bundles):
    from ray import serve

    from dlsr_deploy.scale.serve import ServiceLimits, build_app

    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    app = build_app(
        str(bundles["fp32"]),
        max_batch=16,
        batch_wait_ms=100,
        cpus_per_replica=1,
        backend="ort-cpu",
        limits=ServiceLimits(max_bytes=60_000, max_images=16),
    )
    serve.run(app, name="dlsr", route_prefix="/")
    yield bundles["fp32"]
    serve.shutdown()


def test_service_scores_png_and_npy_like_the_detector(service):
    images = _images(5, 7)
    with Detector.load(service, backend="ort-cpu") as det:
        ref = det.predict(images)
    status, one = _post(_png(images[0]))
    assert status == 200 and len(one["results"]) == 1
    assert one["precision"] == "fp32" and one["threshold"] == pytest.approx(float(det.threshold))
    assert one["results"][0]["score"] == pytest.approx(float(ref["score"][0]), rel=1e-5)
    status, many = _post(_npy(images))
    assert status == 200 and [r["is_ood"] for r in many["results"]] == ref["is_ood"].tolist()
    np.testing.assert_allclose([r["score"] for r in many["results"]], ref["score"], rtol=1e-5)
    assert _get("/healthz") == (200, "ok")
    status, info = _get("/info")
    assert status == 200 and info["max_batch"] == 16 and info["score_name"] == det.score_name


@pytest.mark.parametrize(
    "body, code, words",
    [
        (b"", 400, "empty"),
        (b"hello, not an image", 400, "cannot read image"),
        (_npy(np.zeros((2, 8, 8), np.float64)), 400, "3 RGB channels"),
        (_npy(np.full((1, 8, 8, 3), np.nan, np.float32)), 400, "NaN"),
        (_npy(np.zeros((0, 8, 8, 3), np.uint8)), 400, "empty"),
        (_npy(np.zeros((1, 8, 8, 3), np.int64)), 400, "dtype"),
        (b"\x89PNG" + bytes(70_000), 413, "limit"),
    ],
)
def test_service_answers_bad_requests_with_4xx(service, body, code, words):
    status, reply = _post(body)
    assert status == code and words in reply["error"]


def test_service_batches_concurrent_requests(service):
    bodies = [_png(im) for im in _images(48, 9)]
    codes = []

    def client(chunk):
        codes.extend(_post(b)[0] for b in chunk)

    threads = [threading.Thread(target=client, args=(bodies[i::16],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert codes == [200] * 48
    _, stats = _get("/stats")
    assert max(int(k) for k in stats["batch_sizes"]) > 1, stats


def test_service_unknown_path_and_method(service):
    with pytest.raises(urllib.error.HTTPError) as e:
        _get("/nope")
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        _get("/score")
    assert e.value.code == 405


def test_sources_list_globs_packs_and_parquet_and_decode_them(tmp_path):
    import pyarrow as pa

    from dlsr_deploy.scale.sources import decode_batch, list_inputs

    ims = _images(3, 4)
    np.savez(tmp_path / "p.npz", images=ims[:2])
    pngs = [_png(im) for im in ims]
    pq.write_table(pa.table({"id": ["a", "b", "c"], "image": [pngs[0], b"junk", pngs[2]]}), tmp_path / "t.parquet")
    pq.write_table(pa.table({"img": [{"bytes": pngs[1], "path": "x"}]}), tmp_path / "hf.parquet")
    items = list_inputs([str(tmp_path / "*.npz"), str(tmp_path / "t.parquet"), str(tmp_path / "hf.parquet")])
    assert items["id"].tolist() == [f"{tmp_path / 'p.npz'}#0", f"{tmp_path / 'p.npz'}#1", "a", "b", "c"] + [
        f"{tmp_path / 'hf.parquet'}#0"
    ]
    out = decode_batch({**items, "shard": np.zeros(6, int)}, size=32)
    assert [bool(e) for e in out["error"]] == [False, False, False, True, False, False]
    np.testing.assert_array_equal(out["image"][[0, 1, 2, 4, 5]], ims[[0, 1, 0, 2, 1]])
    with pytest.raises(DataError, match="matches no file"):
        list_inputs([str(tmp_path / "*.jpeg")])
    with pytest.raises(DataError, match="given twice"):
        list_inputs([str(tmp_path / "p.npz"), str(tmp_path / "p.npz")])
    pq.write_table(pa.table({"n": [1]}), tmp_path / "nobytes.parquet")
    with pytest.raises(DataError, match="encoded image bytes"):
        list_inputs([str(tmp_path / "nobytes.parquet")])


def test_cli_ray_scoring_and_usage_errors(cluster, bundles, inputs, tmp_path):
    from click.testing import CliRunner

    from dlsr_deploy.cli import score

    r = CliRunner().invoke(score, [str(bundles["fp32"]), *inputs["sources"], "--resume"])
    assert r.exit_code == 2 and "--resume needs --ray" in r.output
    r = CliRunner().invoke(score, [str(bundles["fp32"]), *inputs["sources"], "--ray"])
    assert r.exit_code == 2 and "--out FOLDER" in r.output
    out = tmp_path / "cli"
    args = [str(bundles["fp32"]), *inputs["sources"], "--ray", "--out", str(out), "--backend", "ort-cpu"]
    r = CliRunner().invoke(score, [*args, "--cpus-per-actor", "1", "--format", "csv", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "200 of 200 inputs scored now" in r.output and "2 unreadable" in r.output
    assert sum(len(p.read_text().splitlines()) - 1 for p in out.glob("part-*.csv")) == 200
    r = CliRunner().invoke(score, [*args, "--quiet"])
    assert r.exit_code == 1 and "--resume" in r.output
    # `--ray SOURCE`: an existing path after --ray is an input, not a cluster address
    two = [str(bundles["fp32"]), inputs["sources"][0], "--ray", inputs["sources"][1], "--out", str(tmp_path / "o2")]
    r = CliRunner().invoke(score, [*two, "--cpus-per-actor", "1"])
    assert r.exit_code == 0 and "200 of 200 inputs" in r.output, r.output
    # an actor the cluster has no room for is an error, not a job that waits forever
    r = CliRunner().invoke(score, [*two[:-1], str(tmp_path / "o3"), "--cpus-per-actor", "8"])
    assert r.exit_code == 1 and "GPU(s) in all" in r.output and "--cpus-per-actor" in r.output, r.output
    r = CliRunner().invoke(
        score, [str(bundles["fp32"]), inputs["sources"][1], "--ray", "--out", inputs["sources"][1] + "/o"]
    )
    assert r.exit_code == 1 and "inside the input folder" in r.output


def _metric_values() -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=30) as r:
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {
        (s.name, s.labels.get("path"), s.labels.get("status")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_service_metrics_move_by_exactly_the_requests_sent(service):
    before = _metric_values()
    for im in _images(4, 21):
        assert _post(_png(im))[0] == 200
    assert _post(b"\x89PNG" + bytes(70_000))[0] == 413
    assert _post(b"hello")[0] == 400
    after = _metric_values()

    def moved(name, path=None, status=None):
        return after.get((name, path, status), 0) - before.get((name, path, status), 0)

    assert [moved("dlsr_requests_total", "/score", s) for s in ("200", "413", "400")] == [4, 1, 1]
    assert moved("dlsr_images_scored_total") == 4 and moved("dlsr_request_seconds_count") == 6


def test_service_page_scores_an_uploaded_image_like_post_score(service, tmp_path):
    from browser import chromium
    from selenium.webdriver.support.ui import WebDriverWait

    body = _png(_images(1, 33)[0])
    (tmp_path / "upload.png").write_bytes(body)
    status, ref = _post(body)
    assert status == 200
    d = chromium(1000, 900)
    try:
        d.get(f"http://127.0.0.1:{PORT}/")
        assert "fp32" in d.find_element("id", "bundle").text
        d.find_element("id", "file").send_keys(str(tmp_path / "upload.png"))
        WebDriverWait(d, 60).until(lambda drv: drv.find_element("id", "decision").text.strip())
        decision = d.find_element("id", "decision").text
        shown = float(d.find_element("id", "score").text)
        (tmp_path / "notes.txt").write_text("not an image")  # the service's 400 is shown, not a stale result
        d.find_element("id", "file").send_keys(str(tmp_path / "notes.txt"))
        WebDriverWait(d, 60).until(lambda drv: drv.find_element("id", "error").is_displayed())
        error = d.find_element("id", "error").text
        assert error.startswith("HTTP 400: ") and "image" in error
        assert not d.find_element("id", "result").is_displayed()
    finally:
        d.quit()
    r0 = ref["results"][0]
    assert decision == ("OOD" if r0["is_ood"] else "in-distribution")
    assert shown == pytest.approx(r0["score"], rel=1e-5)
