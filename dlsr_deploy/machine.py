"""Machine facts, in one place: CPU model and SIMD flags, library versions, GPU (stdlib only).

Every timing this project records names the machine it ran on (`describe()`), and every
cached verdict is bound to the facts its numerics depend on (`cpu_info()` + `versions()`):
the self-check, `auto`'s backend choice, `dlsr-eval`, `dlsr-bench` and the benchmark scripts
all read them here.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from typing import Dict, Iterable, Optional

# the libraries whose kernels decide a bundle's numbers and speed
NUMERIC_LIBRARIES = ("numpy", "onnxruntime", "openvino", "tensorrt")


def cpu_info() -> Dict[str, str]:
    """CPU model, a hash of all its flags and the SIMD ones (avx*, amx*, *vnni*, and ARM's
    asimd / dot-product / i8mm / sve features) read from /proc/cpuinfo, or on ARM64 from the
    auxiliary vector."""
    info = {"machine": platform.machine(), "cpu": platform.processor() or "?"}
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.readlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and "model" not in info:
            info["model"] = value.strip()
        elif key in ("flags", "features") and "simd" not in info:
            flags = sorted(value.split())
            info["flags_sha"] = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:12]
            info["simd"] = " ".join(f for f in flags if _is_simd(f))
    feats = auxv_features()  # ARM64: what the kernels are chosen from (under QEMU, /proc/cpuinfo is the host's)
    if feats:
        info["flags_sha"] = hashlib.sha256(" ".join(sorted(feats)).encode()).hexdigest()[:12]
        info["simd"] = " ".join(sorted(f for f in feats if _is_simd(f)))
    if "model" not in info:
        part = next((ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("cpu part")), None)
        if part:
            info["model"] = f"ARM CPU part {part}"
    return info


# Linux arch/arm64 uapi hwcap.h: the bits of AT_HWCAP / AT_HWCAP2 an ARM64 process is given. ONNX
# Runtime's MLAS picks its ARM64 kernels (dot-product int8, i8mm, FP16 arithmetic) from these.
HWCAP = {
    0: "fp",
    1: "asimd",
    7: "crc32",
    8: "atomics",
    9: "fphp",
    10: "asimdhp",
    12: "asimdrdm",
    20: "asimddp",
    22: "sve",
    23: "asimdfhm",
}
HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16"}


def hwcap_features(hwcap: int, hwcap2: int) -> set:
    """Feature names of the AT_HWCAP / AT_HWCAP2 words (the bits listed in HWCAP / HWCAP2)."""
    return {n for b, n in HWCAP.items() if hwcap >> b & 1} | {n for b, n in HWCAP2.items() if hwcap2 >> b & 1}


def auxv_features() -> Optional[set]:
    """The ARM64 features this process was given (AT_HWCAP / AT_HWCAP2), or None off Linux/ARM64."""
    if platform.machine().lower() not in ("aarch64", "arm64"):
        return None
    try:
        import ctypes

        aux = ctypes.CDLL(None).getauxval
        aux.restype, aux.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
        return hwcap_features(aux(16), aux(26))
    except (OSError, AttributeError):
        return None


def _is_simd(flag: str) -> bool:
    return flag.startswith(("avx", "amx", "sve", "asimd")) or "vnni" in flag or flag in ("i8mm", "bf16", "fphp")


def versions(modules: Iterable[str] = NUMERIC_LIBRARIES) -> Dict[str, Optional[str]]:
    """{module: version or None} without importing modules that are not installed."""
    import importlib.metadata as md

    dist = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")}
    out: Dict[str, Optional[str]] = {}
    for mod in modules:
        out[mod] = None
        for name in dist.get(mod, (mod,)):
            try:
                out[mod] = md.version(name)
                break
            except md.PackageNotFoundError:
                continue
    return out


def gpu_name() -> Optional[str]:
    """The first CUDA device's name through cuda-python, or None (no import of torch)."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore

        err, n = cudart.cudaGetDeviceCount()
        if int(err) != 0 or n < 1:
            return None
        err, prop = cudart.cudaGetDeviceProperties(0)
        return prop.name.decode(errors="replace").strip("\x00") if int(err) == 0 else None
    except Exception:
        return None


def describe() -> str:
    """One line naming the CPU and its SIMD flags, e.g. 'Intel Xeon [avx2 avx512f ... amx_int8]';
    every committed timing carries it."""
    cpu = cpu_info()
    return f"{cpu.get('model', cpu.get('machine', '?'))} [{cpu.get('simd', '')}]"


def summary() -> dict:
    """Platform, Python, CPU count, CPU model and SIMD flags, creation time: the header of every
    report that holds a timing."""
    cpu = cpu_info()
    info = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "simd": cpu.get("simd", ""),
    }
    if "model" in cpu:
        info["cpu"] = cpu["model"]
    return info
