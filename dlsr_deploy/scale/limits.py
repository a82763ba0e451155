"""What one request may cost the service, checked before it costs anything: the request head
(431) and its Host (421), the body's bytes, image count and decoded pixels (413, from headers
before decoding), a .npy header against its body (400). Used by `scale/serve.py`."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.errors import InputError

NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may cost a replica.

    max_bytes: body size (413, checked on Content-Length before reading and counted as the body
    streams in, chunked or not: the request is refused as soon as the count passes it);
    max_pixels: decoded pixels of one image, read from its header before decoding (413; None =
    4096 x 4096, or 256 x native size squared if larger); max_images: images in one request (413;
    the service sets it to --max-batch); read_timeout_s: seconds to receive the whole body (408);
    max_header_bytes / max_headers: the request head's size and header count (431);
    allowed_hosts: Host header values answered (others 421: no DNS rebinding); None = any."""

    max_bytes: int = 16 << 20
    max_pixels: Optional[int] = None
    max_images: int = 32
    read_timeout_s: float = 10.0
    max_header_bytes: int = 16384
    max_headers: int = 100
    allowed_hosts: Optional[Tuple[str, ...]] = None

    def pixels_for(self, native: int) -> int:
        """The decoded-pixel limit for a bundle of this native size."""
        return int(self.max_pixels or max(4096 * 4096, 256 * native * native))


class RequestError(InputError):
    """A bad request, with the HTTP status it gets."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def default_allowed_hosts(host: str, port: int) -> Tuple[str, ...]:
    """localhost, the loopback addresses and the bound address, with and without the port; for a
    wildcard bind (0.0.0.0, ::) also this machine's name and its addresses."""
    import socket

    names = {"localhost", "127.0.0.1", "[::1]", host if ":" not in host else f"[{host}]"}
    if host in ("0.0.0.0", "::", ""):
        name = socket.gethostname()
        names |= {name, socket.getfqdn()}
        try:
            names |= {a[4][0] if ":" not in a[4][0] else f"[{a[4][0]}]" for a in socket.getaddrinfo(name, None)}
        except OSError:
            pass
    return tuple(sorted(n.lower() for n in names) + sorted(f"{n.lower()}:{port}" for n in names))


def check_head(headers: Sequence[Tuple[bytes, bytes]], limits: ServiceLimits) -> None:
    """The request head against the limits: header count and bytes (431), the Host (421)."""
    size = sum(len(k) + len(v) + 4 for k, v in headers)
    if len(headers) > limits.max_headers or size > limits.max_header_bytes:
        raise RequestError(
            f"request head too large ({len(headers)} headers, {size} bytes; the limits are {limits.max_headers} "
            f"headers and {limits.max_header_bytes} bytes)",
            431,
        )
    if limits.allowed_hosts is not None and "*" not in limits.allowed_hosts:
        host = next((v for k, v in headers if k.lower() == b"host"), b"").decode("latin-1").strip().lower()
        if host not in limits.allowed_hosts:
            raise RequestError(
                f"Host {host!r} is not served here (allowed: {', '.join(limits.allowed_hosts[:6])}...; "
                "dlsr-serve --allowed-host adds one)",
                421,
            )


def _npy_header(body: bytes):
    """(shape, dtype) of a .npy body from its header alone, or RequestError."""
    f = io.BytesIO(body)
    try:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except Exception as exc:
        raise RequestError(f"not a readable .npy array ({exc.__class__.__name__}: {exc})") from None
    return tuple(int(x) for x in shape), dtype, f.tell()


def parse_body(body: bytes, limits: Optional[ServiceLimits] = None, native: int = 32) -> np.ndarray:
    """Request body -> uint8 [N, H, W, 3] (RequestError with the status and reason otherwise). A
    .npy header is checked (image count, pixels, dtype, size against the body) before its data is
    read; an image's pixel count is checked from its header before it is decoded."""
    from dlsr_deploy.preprocess import as_images, decode_image

    limits = limits or ServiceLimits()
    if not body:
        raise RequestError("empty request body (expected PNG/JPEG bytes or a .npy array)")
    if not body.startswith(NPY_MAGIC):
        try:
            return decode_image(body, None, "request body", max_pixels=limits.pixels_for(native))[None]
        except InputError as exc:
            raise RequestError(str(exc), 413 if "over the limit" in str(exc) else 400) from None
    shape, dtype, offset = _npy_header(body)
    n = shape[0] if len(shape) == 4 else 1
    pixels = int(np.prod(shape[-3:-1])) if len(shape) >= 3 else 0
    if len(shape) not in (3, 4):
        raise RequestError(f"npy body: expected [N, H, W, 3] or [H, W, 3], got shape {list(shape)}")
    if n > limits.max_images:
        raise RequestError(f"npy body: {n} images, over the limit of {limits.max_images} per request", 413)
    if pixels > limits.pixels_for(native):
        raise RequestError(f"npy body: {shape[-3]}x{shape[-2]} pixels per image, over the limit", 413)
    if len(body) - offset != int(np.prod(shape)) * dtype.itemsize:
        raise RequestError(
            f"npy body: the header says {list(shape)} {dtype}, the body holds {len(body) - offset} bytes"
        )
    try:
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise RequestError(f"not a readable .npy array ({exc})") from None
    return as_images(arr, "npy body")
