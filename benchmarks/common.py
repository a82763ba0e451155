"""Helpers shared by the benchmark scripts (imported as `common` from benchmarks/)."""

import platform
from pathlib import Path

SIMD = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def machine() -> str:
    """CPU model and the SIMD flags that matter for the numbers, e.g. 'AMD EPYC [avx2 fma ...]'."""
    model, flags = platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return f"{model} [{' '.join(f for f in SIMD if f in flags)}]"


def ort_session(model_or_path, threads=None):
    """An ORT CPU session as the runtime makes them (explicit threads, no spin-waiting)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    if threads:
        o.intra_op_num_threads = threads
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, o, providers=["CPUExecutionProvider"])
