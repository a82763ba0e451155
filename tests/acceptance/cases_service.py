"""The HTTP service's request handler: bodies, limits, slow clients."""

import io
import time

import numpy as np


def _service(env):
    """(call, enc, npy, header): the request handler of a service on the tour's bundle and body makers."""
    from PIL import Image

    from dlsr_deploy.scale.serve import ScoreService, ServiceLimits

    svc = ScoreService(str(env.bundle), backend="ort-cpu", limits=ServiceLimits(max_images=8, read_timeout_s=1.0))

    def call(body, length=None, delay=0.0):
        import asyncio

        async def reader():
            await asyncio.sleep(delay)
            return body

        return asyncio.run(svc.handle("POST", "/score", reader, str(len(body)) if length is None else length))

    def enc(a, fmt="PNG"):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format=fmt)
        return buf.getvalue()

    def npy(a):
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    def header(shape):
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
        return buf.getvalue()

    return call, enc, npy, header


def service(env):
    call, enc, npy, header = _service(env)
    import resource

    bomb = enc(np.full((12000, 12000), 128, np.uint8))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status, body = call(bomb)
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    yield (
        "security",
        f"POST /score: a {len(bomb) // 1024} KB PNG of 12000x12000 pixels",
        "413 from the header, no decode",
        status == 413 and grew < 100,
        f"{status} {body.get('error', '')[:80]}; peak RSS +{grew:.0f} MB",
    )


def service_bodies(env):
    call, enc, npy, header = _service(env)
    cases = [
        ("traceback", ".npy with more images than --max-batch", npy(np.zeros((9, 32, 32, 3), np.uint8)), None, 413),
        ("traceback", ".npy header claiming 3 x 9000 x 9000 x 3", header((3, 9000, 9000, 3)), None, 413),
        ("traceback", ".npy header claiming 10^6 images", header((10**6, 32, 32, 3)), None, 413),
        (
            "traceback",
            ".npy body shorter than its header says",
            npy(np.zeros((2, 32, 32, 3), np.uint8))[:300],
            None,
            400,
        ),
        ("traceback", ".npy of float NaN", npy(np.full((1, 8, 8, 3), np.nan)), None, 400),
        ("traceback", ".npy of object dtype", b"\x93NUMPY\x01\x00" + b"x" * 20, None, 400),
        ("traceback", "garbage bytes", b"garbage", None, 400),
        ("traceback", "empty body", b"", None, 400),
        ("security", "Content-Length larger than the body", enc(np.zeros((8, 8, 3), np.uint8)), "99999", 400),
        ("security", "Content-Length over --max-bytes", b"x", str(1 << 30), 413),
    ]
    for kind, name, data, length, want in cases:
        status, body = call(data, length)
        yield (
            kind,
            f"POST /score: {name}",
            f"JSON {want}",
            status == want and "error" in body,
            f"{status} {str(body)[:90]}",
        )


def service_slow(env):
    call, enc, npy, header = _service(env)
    t = time.perf_counter()
    status, body = call(enc(np.zeros((8, 8, 3), np.uint8)), delay=30.0)
    took = time.perf_counter() - t
    yield (
        "hang",
        "POST /score: a body that takes 30 s to arrive",
        "408 after the read timeout",
        status == 408 and took < 5,
        f"{status} after {took:.1f} s",
    )


GROUPS = [service, service_bodies, service_slow]
