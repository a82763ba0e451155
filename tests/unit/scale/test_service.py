"""The HTTP service bounds every request (issue 21): pixels, images, bytes, time; JSON errors only.
These run the request handler directly (no Ray); tests/integration/test_ray.py runs it behind Ray Serve."""

import asyncio
import io
import time

import numpy as np
import pytest
from PIL import Image

from dlsr_deploy.scale.serve import ScoreService, ServiceLimits


@pytest.fixture(scope="module")
def service(bundles):
    svc = ScoreService(str(bundles["fp32"]), backend="ort-cpu", limits=ServiceLimits(max_images=4, read_timeout_s=0.5))
    yield svc
    svc.det.close()


def _call(svc, body: bytes, length=None, method="POST", path="/score", delay=0.0):
    async def reader():
        if delay:
            await asyncio.sleep(delay)
        return body

    return asyncio.run(svc.handle(method, path, reader, str(len(body)) if length is None else length))


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _huge_header() -> bytes:
    """A .npy header that claims 100,000 images of 9000 x 9000 pixels, and no data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": (3, 9000, 9000, 3)})
    return buf.getvalue()


def test_good_requests(service):
    status, body = _call(service, _png(np.full((40, 50, 3), 128, np.uint8)))
    assert (
        status == 200
        and len(body["results"]) == 1
        and set(body["results"][0]) == {"score", "normalized", "is_ood", "scores"}
    )
    status, body = _call(service, _npy(np.zeros((4, 32, 32, 3), np.uint8)))
    assert status == 200 and len(body["results"]) == 4


def test_a_decompression_bomb_is_refused_from_its_header(service):
    bomb = _png(np.zeros((6000, 6000), np.uint8))  # 36 M grey pixels in a few tens of KB
    assert len(bomb) < 200_000
    t = time.perf_counter()
    status, body = _call(service, bomb)
    assert status == 413 and "over the limit" in body["error"] and time.perf_counter() - t < 1.0


@pytest.mark.parametrize(
    "make,status,needle",
    [
        (lambda: _npy(np.zeros((5, 32, 32, 3), np.uint8)), 413, "5 images, over the limit of 4"),
        (lambda: _npy(np.zeros((1, 32, 32, 3), np.uint8))[:200], 400, "the body holds"),
        (lambda: _huge_header(), 413, "over the limit"),
        (lambda: _npy(np.zeros((1, 8, 8, 3), np.float64) + np.nan), 400, "NaN"),
        (lambda: b"\x93NUMPY garbage", 400, "not a readable .npy"),
        (lambda: b"not an image at all", 400, "cannot read image"),
        (lambda: b"", 400, "empty request body"),
    ],
)
def test_malformed_bodies_get_a_json_4xx_never_a_500(service, make, status, needle):
    got, body = _call(service, make())
    assert got == status and needle in body["error"], body


def test_lying_or_slow_clients_do_not_hold_the_replica(service):
    status, body = _call(service, _png(np.zeros((8, 8, 3), np.uint8)), length="100000")
    assert status == 400 and "Content-Length says" in body["error"]
    status, body = _call(service, b"x" * 10, length=str(64 << 20))
    assert status == 413  # refused from the header, before reading
    t = time.perf_counter()
    status, body = _call(service, _png(np.zeros((8, 8, 3), np.uint8)), delay=5.0)
    assert status == 408 and time.perf_counter() - t < 2.0


def test_routes(service):
    assert _call(service, b"", method="GET", path="/healthz")[0] == 200
    assert _call(service, b"", method="GET", path="/score")[0] == 405
    assert _call(service, b"", method="GET", path="/nope")[0] == 404
    status, info = _call(service, b"", method="GET", path="/info")
    assert status == 200 and info["limits"]["max_images"] == 4 and info["limits"]["max_pixels"] >= 4096 * 4096


def test_a_chunked_body_is_refused_as_it_passes_the_limit(service):
    """1 GB in 1 MB chunks, no Content-Length, to a 16 MB limit: 413 as soon as the count passes
    the limit (within a second of it), the rest never read, memory flat (issue 29)."""
    import resource

    sent, passed_at = [0], [None]
    limit = service.limits.max_bytes

    def stream():
        async def gen():
            for _ in range(1024):
                sent[0] += 1 << 20
                if sent[0] > limit and passed_at[0] is None:
                    passed_at[0] = time.perf_counter()
                yield b"\0" * (1 << 20)

        return gen()

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status, body = asyncio.run(service.handle("POST", "/score", stream, None))
    done = time.perf_counter()
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert status == 413 and "over the limit" in body["error"]
    assert sent[0] <= limit + (1 << 20) and done - passed_at[0] < 1.0 and grew_mb < 50


@pytest.mark.parametrize(
    "headers, status",
    [
        ([(b"host", b"localhost:8000")], 200),
        ([(b"host", b"127.0.0.1")], 200),
        ([(b"host", b"evil.example")], 421),
        ([], 421),
        ([(b"host", b"localhost"), (b"x-big", b"a" * (1 << 20))], 431),
        ([(b"host", b"localhost")] + [(b"x-%d" % i, b"1") for i in range(10000)], 431),
    ],
)
def test_request_heads_are_bounded_and_hosts_allow_listed(bundles, headers, status):
    from dlsr_deploy.scale.serve import default_allowed_hosts

    lim = ServiceLimits(allowed_hosts=default_allowed_hosts("127.0.0.1", 8000))
    svc = ScoreService(str(bundles["fp32"]), backend="ort-cpu", limits=lim)
    try:
        got, body = asyncio.run(svc.handle("GET", "/healthz", None, None, headers))
    finally:
        svc.det.close()
    assert got == status and (status == 200 or "error" in body)


def test_default_allowed_hosts_cover_loopback_and_the_bound_address():
    from dlsr_deploy.scale.serve import default_allowed_hosts

    hosts = default_allowed_hosts("10.1.2.3", 9000)
    assert {"localhost", "localhost:9000", "127.0.0.1:9000", "10.1.2.3", "10.1.2.3:9000", "[::1]"} <= set(hosts)
    assert "evil.example" not in hosts


def _metrics(svc) -> dict:
    """/metrics parsed with prometheus_client's own parser -> {(name, path, status): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, page = _call(svc, b"", method="GET", path="/metrics")
    assert status == 200 and page.media_type.startswith("text/plain; version=0.0.4")
    out = {}
    for fam in text_string_to_metric_families(page.text):
        for s in fam.samples:
            assert s.labels.get("bundle") == svc.det.manifest.name and s.labels["precision"] == "fp32"
            out[(s.name, s.labels.get("path"), s.labels.get("status"), s.labels.get("le"))] = s.value
    return out


def test_metrics_count_every_request_by_status(service):
    before = _metrics(service)
    for _ in range(3):
        assert _call(service, _png(np.full((32, 32, 3), 90, np.uint8)))[0] == 200
    assert _call(service, b"not an image")[0] == 400
    assert _call(service, _npy(np.zeros((5, 32, 32, 3), np.uint8)))[0] == 413  # over max_images=4
    assert _call(service, b"", method="GET", path="/nope")[0] == 404
    after = _metrics(service)

    def moved(name, path=None, status=None, le=None):
        key = (name, path, status, le)
        return after.get(key, 0) - before.get(key, 0)

    assert moved("dlsr_requests_total", "/score", "200") == 3
    assert moved("dlsr_requests_total", "/score", "400") == 1 and moved("dlsr_requests_total", "/score", "413") == 1
    assert moved("dlsr_requests_total", "other", "404") == 1
    assert moved("dlsr_requests_total", "/metrics", "200") == 1  # the first scrape, counted after it answered
    assert moved("dlsr_request_seconds_count") == 5 and moved("dlsr_images_scored_total") == 3
    assert moved("dlsr_batch_images_bucket", le="1") == 3 and moved("dlsr_batch_images_count") == 3
    names = ("dlsr_images_flagged_ood_total", "dlsr_images_scored_total")
    flagged, scored = (after[(n, None, None, None)] for n in names)
    assert after[("dlsr_flagged_ood_ratio", None, None, None)] == pytest.approx(flagged / scored)


def test_the_page_is_self_contained_and_shows_no_paths(service, bundles):
    status, page = _call(service, b"", method="GET", path="/")
    assert status == 200 and page.media_type.startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert service.det.manifest.name in page.text and str(bundles["fp32"]) not in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched but POST /score, same origin
    assert _call(service, b"x", method="POST", path="/")[0] == 405
    assert _call(service, b"x", method="POST", path="/metrics")[0] == 405
