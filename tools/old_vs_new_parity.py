"""Every committed number unchanged by a refactor (issue 20): export the same run with an old
checkout and with this one, and compare the parity records score by score.

    git worktree add /tmp/old 148d739
    (cd /tmp/old && PYTHONPATH=/tmp/old python /path/to/tools/old_vs_new_parity.py export RUN /tmp/id_old)
    (cd /tmp && python /path/to/tools/old_vs_new_parity.py export RUN /tmp/id_new)
    python -m tools.old_vs_new_parity compare /tmp/id_old.parity.json /tmp/id_new.parity.json

`train OUT` trains a small seeded run with whichever package is importable and `compare-runs OLD NEW`
compares two such runs file by file: the training pipeline's parity (issue 30), before exporting
each with `export` and comparing the parity records.

`export` uses whichever dlsr_deploy is importable (run it outside this repository for the old one)
and writes OUT.parity.json; FP32, K = 2, headline gauss_layer, the bundle heads both versions
know, Tiny ImageNet + DTD as verify-OOD sets. `compare` writes tools/results/old_vs_new_parity.md.
"""

import dataclasses
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def train(out: str) -> None:
    """A small run (EfficientNet-Lite0 @ 64, small LFDN, 2 epochs, the first 3,000 CIFAR-10 training
    images, native size 32) with whichever dlsr_deploy is importable: seeded, so two versions that
    train alike write identical files (compared by `compare_runs`)."""
    import inspect

    from dlsr_deploy.config import FeatureConfig, TrainConfig
    from dlsr_deploy.pipeline import run_train

    kw = dict(preset="small", tcfg=TrainConfig(epochs=2, batch_size=64), limit=3000, force=True, native_size=32)
    if "quiet" in inspect.signature(run_train).parameters:  # before the one logger (issue 30)
        kw["quiet"] = True
    fcfg = FeatureConfig(backbone="efficientnet-lite0", input_size=64, native_size=32)
    run_train(str(DATA / "cifar10_train.npz"), Path(out), fcfg, **kw)


def compare_runs(old: str, new: str) -> None:
    """The two runs' files: model weights, density heads and z0 byte for byte, run.json's fields ->
    tools/results/old_vs_new_runs.md."""
    import hashlib

    import numpy as np

    lines = [f"# The same seeded run trained by an old checkout and by this one (`compare-runs {old} {new}`)", ""]
    for name in ("model.safetensors", "model_first_epoch.safetensors", "config.json", "train_z0.npy", "holdout_z0.npy"):
        a, b = (hashlib.sha256((Path(d) / name).read_bytes()).hexdigest() for d in (old, new))
        lines.append(f"- {name}: {'identical' if a == b else 'DIFFERENT'} (sha256 {a[:12]} / {b[:12]})")
    with np.load(Path(old) / "density.npz") as a, np.load(Path(new) / "density.npz") as b:
        same = sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
        lines.append(f"- density.npz: {'identical arrays' if same else 'DIFFERENT'} ({len(a.files)} / {len(b.files)})")
    ja, jb = (json.loads((Path(d) / "run.json").read_text()) for d in (old, new))
    skip = {"feature_seconds", "train_seconds", "density_seconds", "total_seconds", "feature_parity", "data"}
    diff = sorted(k for k in set(ja) | set(jb) if k not in skip and ja.get(k) != jb.get(k))
    lines.append(f"- run.json: fields that differ (timings and paths aside): {diff or 'none'}")
    text = "\n".join(lines) + "\n"
    out = Path(__file__).resolve().parent / "results" / "old_vs_new_runs.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(text)


def export(run: str, out: str) -> None:
    import dlsr_deploy
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.export.exporter import export_bundle

    try:
        from dlsr_deploy.export.request import ExportRequest
    except ImportError:  # before the request module existed
        from dlsr_deploy.export.exporter import ExportRequest
    fields = {f.name for f in dataclasses.fields(ExportRequest)}
    kw = {"steps": 2} if "steps" in fields else {"score_cfg": ScoreConfig(steps=2)}
    ood = [str(DATA / "tinyimagenet_val_32.npz"), str(DATA / "dtd_subset10.npz")]
    m = export_bundle(
        run,
        Path(out),
        **kw,
        headline="gauss_layer",
        density=("maha_ridge", "maha_lw", "gauss_layer", "gauss_layer_dn"),
        verify_ood=ood,
        force=True,
    )
    p = m["parity"]
    keep = ("auroc_eager", "auroc_export", "max_abs", "flips", "spearman")
    res = {
        "code": dlsr_deploy.__file__,
        "threshold": m["threshold"],
        "z0": p["tensors"]["z0"],
        "scores": {k: {f: v[f] for f in keep} for k, v in p["scores"].items()},
    }
    # runs under the old checkout's package too: written to a temporary file and renamed by hand
    tmp = Path(out + ".parity.json.tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str))
    tmp.replace(out + ".parity.json")


def compare(old: str, new: str) -> None:
    a, b = json.loads(Path(old).read_text()), json.loads(Path(new).read_text())
    lines = [
        "# Parity of the same run exported by an old checkout and by this one (`tools/old_vs_new_parity.py`)",
        "",
        f"Old: `{a['code']}`; new: `{b['code']}`. Threshold ({a['threshold']['score']}): "
        f"{a['threshold']['value']!r} -> {b['threshold']['value']!r}; z0 max relative L2 vs eager "
        f"{a['z0']['max_rel_l2']:.2e} -> {b['z0']['max_rel_l2']:.2e}.",
        "",
        "| score | AUROC eager (old / new) | AUROC export (old / new) | flips (old / new) | rank corr (old / new) "
        "| max abs error (old / new) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def cell(x: dict, y: dict, f: str, fmt: str) -> str:
        return f"{fmt.format(x[f]) if f in x else '-'} / {fmt.format(y[f]) if f in y else '-'}"

    for k in sorted(set(a["scores"]) | set(b["scores"])):
        x, y = a["scores"].get(k, {}), b["scores"].get(k, {})
        lines.append(
            f"| {k} | {cell(x, y, 'auroc_eager', '{:.6f}')} | {cell(x, y, 'auroc_export', '{:.6f}')} "
            f"| {cell(x, y, 'flips', '{}')} | {cell(x, y, 'spearman', '{:.6f}')} | {cell(x, y, 'max_abs', '{:.2e}')} |"
        )
    out = Path(__file__).resolve().parent / "results" / "old_vs_new_parity.md"
    from dlsr_deploy.io import atomic_write_text

    atomic_write_text(out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    STEPS = {"train": (train, 1), "compare-runs": (compare_runs, 2), "export": (export, 2), "compare": (compare, 2)}
    if len(sys.argv) < 2 or sys.argv[1] not in STEPS or len(sys.argv) != 2 + STEPS[sys.argv[1]][1]:
        sys.exit(__doc__)
    STEPS[sys.argv[1]][0](*sys.argv[2:])
