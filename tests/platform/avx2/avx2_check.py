"""Bundles exported on this AVX-512 machine, scored on an x86-64 CPU with AVX2 and no AVX-512 (QEMU user
emulation of a Haswell: its CPUID has no AVX-512 or VNNI, so ONNX Runtime's kernels take their AVX2 paths,
and an AVX-512 instruction would stop the run). The scores of the bundle's golden images are compared with
the export machine's (golden.npz, bundle/...) and with PyTorch eager's (eager/...).

    python tests/platform/avx2/avx2_check.py check export/accurate-fp32 export/default-fp32 ... [--n 8]
        -> tests/platform/avx2/results/avx2.{json,md}

Needs apt's qemu-user-static (qemu-x86_64-static, with AVX2 in its TCG: QEMU >= 7.2). Not part of CI: one
bundle takes about 2 minutes on 8 images under emulation. Timings under emulation mean nothing and are not
reported.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FLAGS = ("AVX2", "FMA3", "AVX512F", "AVX512_SKX", "AVX512VNNI")


def probe(bundle: str, n: int) -> dict:
    """Run inside the emulated (or the native) CPU: the bundle's scores of its first n golden images."""
    from numpy._core._multiarray_umath import __cpu_features__ as cpu

    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.runtime import Detector

    g = np.load(Path(bundle) / "golden.npz")
    m = read_manifest(Path(bundle))
    backend = "ort-cpu" if "ort-cpu" in m.backends else m.backends[0]  # an OpenVINO-only 8-bit bundle
    det = Detector.load(bundle, backend=backend, self_check="never")
    out = det.predict(g["images"][:n], scores="all")
    out = {k: v for k, v in out.items() if f"bundle/score_{k}" in g.files}  # the scores (not score / is_ood)
    head, thr = m.headline, m.threshold.value
    res = {"cpu": {k: bool(cpu.get(k)) for k in FLAGS}, "n": n, "backend": backend, "headline": head}
    res["scores"] = len(out)
    for ref in ("bundle", "eager"):
        rel = {}
        for name, got in out.items():
            want = g[f"{ref}/score_{name}"][:n].astype(np.float64)
            got = np.asarray(got, np.float64)
            rel[name] = float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))  # of its scale
        worst = max(rel, key=rel.get)
        flips = int(np.sum((np.asarray(out[head]) > thr) != (g[f"{ref}/score_{head}"][:n] > thr)))
        res[ref] = {"max_rel_err": rel[worst], "worst_score": worst, "headline_err": rel[head], "headline_flips": flips}
    return res


def run(bundle: str, n: int, emulate: bool) -> dict:
    cmd = [sys.executable, __file__, "probe", bundle, "--n", str(n)]
    if emulate:
        cmd = ["qemu-x86_64-static", "-cpu", "Haswell", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def markdown(res: dict) -> str:
    lines = [
        "# Bundles scored on an x86-64 CPU without AVX-512 (`python tests/platform/avx2/avx2_check.py check`)",
        "",
        f"Emulated: QEMU user mode, `-cpu Haswell` (CPUID as numpy reads it: {res['emulated_cpu']}). Export "
        f"machine: {res['native_cpu']}. The first {res['n']} golden images of each bundle, every score, "
        "on ONNX Runtime CPU (OpenVINO for a bundle made for it only); relative error against the export "
        "machine's bundle outputs and PyTorch eager's (max |difference| over the images / max |score|, per "
        "score; the worst score is named).",
        "",
        "| bundle | precision | backend | scores | vs export machine: max error (score) | headline error | headline "
        "flips | vs eager: max error | headline error | headline flips |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in res["bundles"]:
        e = b["emulated"]
        if "error" in e:
            lines.append(f"| {b['name']} | {b['precision']} | - | - | error: {e['error']} |" + " - |" * 5)
            continue
        x, v = e["bundle"], e["eager"]
        lines.append(
            f"| {b['name']} | {b['precision']} | {e['backend']} | {e['scores']} | {x['max_rel_err']:.1e} "
            f"({x['worst_score']}) | {x['headline_err']:.1e} | {x['headline_flips']} of {e['n']} | "
            f"{v['max_rel_err']:.1e} | {v['headline_err']:.1e} | {v['headline_flips']} of {e['n']} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["check", "probe"], help="check: run every bundle natively and emulated")
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--stem", default="avx2")
    a = ap.parse_args()
    if a.mode == "probe":
        print(json.dumps(probe(a.bundles[0], a.n)))
        return
    from dlsr_deploy.io import atomic_write_text
    from dlsr_deploy.manifest import read_manifest

    rows, cpus = [], {}
    for b in a.bundles:
        print(f"== {b}", file=sys.stderr)
        native, emulated = run(b, a.n, False), run(b, a.n, True)
        cpus = {"native_cpu": native.get("cpu"), "emulated_cpu": emulated.get("cpu", cpus.get("emulated_cpu"))}
        rows.append({"name": b.removeprefix("export/"), "precision": read_manifest(Path(b)).precision, "native": native,
                     "emulated": emulated})  # fmt: skip
    res = {"n": a.n, **cpus, "bundles": rows}
    atomic_write_text(HERE / "results" / f"{a.stem}.json", json.dumps(res, indent=2) + "\n")
    atomic_write_text(HERE / "results" / f"{a.stem}.md", markdown(res) + "\n")
    print(markdown(res))
    failed = [r["name"] for r in rows if "error" in r["emulated"] or "error" in r["native"]]
    if failed:  # a bundle not compared is not a pass
        raise SystemExit(f"error: not compared (see the table): {failed}")


if __name__ == "__main__":
    main()
