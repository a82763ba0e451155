"""The one module that touches CUDA memory: device buffers, pinned host buffers and a
stream, through cuda-python (`cuda.bindings.runtime`). pycuda is not used: it needs a CUDA
toolkit and compiler at install time; cuda-python ships wheels and is what TensorRT's
own samples use."""

from __future__ import annotations

import ctypes
from typing import Tuple

import numpy as np

from dlsr_deploy.errors import BackendUnavailable, missing_extra


def cudart():
    """The cuda-python runtime module (a clear error when cuda-python is missing)."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt  # cuda-python < 12.6 layout
        except ImportError:
            raise missing_extra("cuda-python", "trt") from None
    return rt


def check(result, what: str):
    """cuda-python calls return (err, *values); raise on error, return the values."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        rt = cudart()
        name = rt.cudaGetErrorName(err)[1]
        raise BackendUnavailable(f"CUDA error in {what}: {name.decode() if isinstance(name, bytes) else name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def device_info(device: int = 0) -> Tuple[str, str]:
    """(GPU name, compute capability 'major.minor')."""
    rt = cudart()
    n = check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if n < 1:
        raise BackendUnavailable("no CUDA device found")
    prop = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return name.strip("\x00").strip(), f"{prop.major}.{prop.minor}"


class Stream:
    """A CUDA stream owned by one backend."""

    def __init__(self):
        self.rt = cudart()
        self.handle = check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def synchronize(self):
        """Wait until all work queued on the stream has finished."""
        check(self.rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    @property
    def ptr(self) -> int:
        """The stream handle as an integer (for TensorRT's execute_async_v3)."""
        return int(self.handle)

    def close(self):
        """Free the memory."""
        if self.handle is not None:
            check(self.rt.cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


class Buffer:
    """A device allocation with a pinned host mirror of the same size."""

    def __init__(self, nbytes: int, dtype: np.dtype):
        self.rt = cudart()
        self.nbytes = int(nbytes)
        self.dtype = np.dtype(dtype)
        self.device = check(self.rt.cudaMalloc(self.nbytes), "cudaMalloc")
        self.host_ptr = check(self.rt.cudaMallocHost(self.nbytes), "cudaMallocHost")
        raw = (ctypes.c_byte * self.nbytes).from_address(int(self.host_ptr))
        self.host = np.frombuffer(raw, dtype=self.dtype)

    def to_device(self, arr: np.ndarray, stream: Stream) -> None:
        """Copy a host array into the device buffer through pinned memory (async on `stream`)."""
        flat = np.ascontiguousarray(arr, dtype=self.dtype).ravel()
        if flat.nbytes > self.nbytes:
            raise ValueError(f"buffer of {self.nbytes} bytes is too small for {flat.nbytes}")
        self.host[: flat.size] = flat
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(
            self.rt.cudaMemcpyAsync(self.device, self.host_ptr, flat.nbytes, kind, stream.handle), "cudaMemcpyAsync H2D"
        )

    def from_device(self, shape, stream: Stream) -> np.ndarray:
        """Copy `shape` elements back to a new host array (waits for the stream)."""
        n = int(np.prod(shape)) * self.dtype.itemsize
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self.rt.cudaMemcpyAsync(self.host_ptr, self.device, n, kind, stream.handle), "cudaMemcpyAsync D2H")
        stream.synchronize()
        return self.host[: int(np.prod(shape))].reshape(shape).copy()

    def close(self):
        """Free the memory."""
        if self.device is not None:
            self.rt.cudaFree(self.device)
            self.rt.cudaFreeHost(self.host_ptr)
            self.device = None
