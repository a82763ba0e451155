"""Bench output: stdout table, JSON (raw timings), Markdown and a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np

from dlsr_deploy.bench.result import BenchResult


def _f(x, fmt="{:.1f}"):
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else fmt.format(x)


def _span(xs) -> str:
    return f" ({min(xs):.2f}-{max(xs):.2f})" if len(xs) > 1 else ""


def _bound(r) -> str:
    """% of the compute bound of the precision the row runs in (and of FP32's, for bf16 / int8 rows)."""
    fp32 = r.extra.get("fp32_bound_share")
    if fp32 is None:
        return _f(r.bound_share, "{:.0%}")
    return f"{_f(r.bound_share, '{:.0%}')} of {r.precision}, {_f(fp32, '{:.0%}')} of FP32"


def table(res: BenchResult) -> str:
    lines = [
        "| bundle | backend | path | precision | K | batch | p50 ms | p90 ms | p99 ms | images/s | x eager FP32 (per "
        "round) | % of compute bound | input / backbone / denoiser (or heads) ms | CV | AUROC (headline) | "
        "max score err vs eager | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res.rows:
        aur = ", ".join(f"{k} {100 * v:.2f}" for k, v in r.auroc.items())
        stages = (
            " / ".join(_f(r.stages_ms.get(k), "{:.1f}") for k in ("input", "backbone"))
            + " / "
            + (_f(r.stages_ms.get("denoiser", r.stages_ms.get("heads")), "{:.1f}"))
        )
        if "decision" in r.stages_ms:  # one graph, images -> headline
            stages = f"{_f(r.stages_ms.get('input'), '{:.1f}')} / {_f(r.stages_ms['decision'], '{:.1f}')} (one graph)"
        status = r.status + (f" ({r.reason})" if r.reason else "") + (" ⚠" if r.warning else "")
        if r.extra.get("compile_seconds"):
            status += f" (compiled {r.extra.get('compiled_graphs', 0)} graphs in {r.extra['compile_seconds']:.0f} s)"
        lines.append(
            f"| {r.bundle} | {r.backend} | {r.path} | {r.precision} | {r.steps} | {r.batch} | {_f(r.p50_ms)} | "
            f"{_f(r.p90_ms)} | {_f(r.p99_ms)} | {_f(r.images_per_s)} | "
            f"{_f(r.speedup_vs_eager, '{:.2f}')}{_span(r.speedup_rounds)} | {_bound(r)} | "
            f"{stages} | {_f(r.cv, '{:.0%}')} | {aur} | {_f(r.max_score_err, '{:.1e}')} | {status} |"
        )
    return "\n".join(lines)


def markdown(res: BenchResult, command: str = "") -> str:
    h = res.header
    cb = res.compute_bound
    out = ["# dlsr-bench", ""]
    if command:
        out += [f"Command: `{command}`", ""]
    out += [
        f"Machine: {h.get('cpu', '?')} [{h.get('simd', '?')}], {h.get('cpu_count')} cores, {h.get('platform')}; "
        f"GPU: {h.get('gpu', 'none')}",
        f"Versions: torch {h.get('torch')} ({h.get('torch_threads')} threads), onnxruntime "
        f"{h.get('onnxruntime')}, OpenVINO {h.get('openvino')}, TensorRT {h.get('tensorrt')}, numpy {h.get('numpy')}; "
        "load average at start "
        f"{h.get('load_avg_at_start')}",
        f"Created: {h.get('created')}. Absolute times compare only within this run; ratios are measured in the "
        "same run, "
        "backends timed in interleaved rounds (per-round ratios in brackets).",
        "Stages: input = input checks in numpy (runtime backends; their cast, resize and normalisation run inside "
        "backbone.onnx) "
        "or cast + resize + normalisation (eager); backbone = backbone + pooling + z-score; denoiser = the K DDIM "
        "steps + "
        "scoring (the score reductions are inside the denoiser graph).",
        "",
        f"Compute bound: measured SGEMM {cb['gemm']['gflops']:.0f} GFLOP/s (best of "
        f"{len(cb['gemm'].get('windows_gflops', [0]))} windows, {cb['gemm']['library']}); "
        + "; ".join(
            f"{name} {_f((b.get('flops_per_image') or float('nan')) / 1e9, '{:.2f}')} GFLOP/image (conv + matmul, "
            f"every score; headline "
            f"{_f((b.get('flops_per_image_headline') or float('nan')) / 1e9, '{:.2f}')}) -> "
            f"{_f(b.get('bound_images_per_s'))} / {_f(b.get('bound_headline_images_per_s'))} images/s at most"
            for name, b in cb.get("per_bundle", {"pipeline": cb}).items()
        )
        + "."
        + (
            "".join(
                f" {t} GEMM {cb[k]['gflops']:.0f} G(FL)OP/s ({cb[k]['library']}): the bound of {t} rows."
                for t, k in (("bf16", "gemm_bf16"), ("int8", "gemm_int8"))
                if cb.get(k)
            )
        ),
        "",
        table(res),
        "",
    ]
    if res.unavailable:
        out += (
            ["Not run:", ""]
            + [
                f"- {u['backend']}" + (f" on {u['bundle']}" if u.get("bundle") else "") + f": {u['reason']}"
                for u in res.unavailable
            ]
            + [""]
        )
    warns = [f"- {r.bundle} {r.backend} batch {r.batch}: {r.warning}" for r in res.rows if r.warning]
    if warns:
        out += ["Warnings:", ""] + warns + [""]
    return "\n".join(out)


def plot(res: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlsr_deploy.io import atomic_write

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = {}
    for r in res.rows:
        if r.status == "failed":
            continue
        groups.setdefault((r.bundle, r.backend, r.path, r.precision, r.steps), []).append(r)
    for (bundle, be, scoring_path, prec, k), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.batch)
        label = f"{bundle}: {be} {scoring_path} {prec} K={k}"
        axes[0].plot([r.batch for r in rs], [r.p50_ms / r.batch for r in rs], "o-", label=label)
        r32 = min(rs, key=lambda r: abs(r.batch - 32))
        if r32.auroc:
            axes[1].scatter([r32.p50_ms / r32.batch], [100 * np.mean(list(r32.auroc.values()))], label=label)
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("batch")
    axes[0].set_ylabel("p50 latency per image (ms)")
    axes[0].set_title("latency per image vs batch")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("p50 ms per image at batch 32")
    axes[1].set_ylabel("mean AUROC of the headline (%)")
    axes[1].set_title("accuracy vs latency")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def write(res: BenchResult, out_dir: Path, stem: str, command: str = "") -> List[Path]:
    from dlsr_deploy.io import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    d = res.to_dict()
    d["command"] = command
    atomic_write_text(paths[0], json.dumps(d, indent=2) + "\n")
    atomic_write_text(paths[1], markdown(res, command) + "\n")
    plot(res, paths[2])
    return paths


def load(path: Path) -> BenchResult:
    """A BenchResult back from its JSON file."""
    from dataclasses import fields

    from dlsr_deploy.bench.result import Row

    d = json.loads(Path(path).read_text())
    names = {f.name for f in fields(Row)}
    rows = [Row(**{k: v for k, v in r.items() if k in names}) for r in d["rows"]]
    return BenchResult(d["header"], rows, d["unavailable"], d["compute_bound"])


def main(argv=None) -> None:
    """python -m dlsr_deploy.bench.report STEM.json ...: rewrite STEM.md and STEM.png from the JSON."""
    import sys

    paths = argv if argv is not None else sys.argv[1:]
    if not paths:
        raise SystemExit("usage: python -m dlsr_deploy.bench.report RESULT.json [...]")
    for p in map(Path, paths):
        d = json.loads(p.read_text())
        print(", ".join(str(x) for x in write(load(p), p.parent, p.stem, d.get("command", ""))))


if __name__ == "__main__":
    main()
