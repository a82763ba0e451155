"""Helpers shared by the benchmark scripts (imported as `common` from benchmarks/)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def machine() -> str:
    """CPU model and its SIMD flags, e.g. 'AMD EPYC [avx avx2 avx512f ... avx512_vnni]' (the same
    reading the self-check keys its verdicts on)."""
    from dlsr_deploy.runtime.selfcheck import cpu_info

    cpu = cpu_info()
    return f"{cpu.get('model', cpu.get('machine', '?'))} [{cpu.get('simd', '')}]"


def ort_session(model_or_path, threads=None):
    """An ORT CPU session as the runtime makes them (explicit threads, no spin-waiting)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    if threads:
        o.intra_op_num_threads = threads
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, o, providers=["CPUExecutionProvider"])
