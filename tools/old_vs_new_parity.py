"""Every committed number unchanged by a refactor (issue 20): export the same run with an old
checkout and with this one, and compare the parity records score by score.

    git worktree add /tmp/old 148d739
    (cd /tmp/old && PYTHONPATH=/tmp/old python /path/to/tools/old_vs_new_parity.py export RUN /tmp/id_old)
    (cd /tmp && python /path/to/tools/old_vs_new_parity.py export RUN /tmp/id_new)
    python -m tools.old_vs_new_parity compare /tmp/id_old.parity.json /tmp/id_new.parity.json

`export` uses whichever dlsr_deploy is importable (run it outside this repository for the old one)
and writes OUT.parity.json; FP32, K = 2, headline gauss_layer, the density heads both versions
know, Tiny ImageNet + DTD as verify-OOD sets. `compare` writes tools/results/old_vs_new_parity.md.
"""

import dataclasses
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
        density=("maha_lw", "gauss_layer"),
        verify_ood=ood,
        quiet=True,
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
    if len(sys.argv) != 4 or sys.argv[1] not in ("export", "compare"):
        sys.exit(__doc__)
    (export if sys.argv[1] == "export" else compare)(sys.argv[2], sys.argv[3])
