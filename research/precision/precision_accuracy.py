"""A low-precision bundle against the FP32 bundle of the same run, on full sets (issue 28's accuracy
targets): AUROC and FPR@95TPR with 95 % paired-bootstrap intervals on every OOD set and the shift
probes, decisions flipped, held-out ID images flagged — the export's accuracy guard
(`dlsr_deploy.precision_guard`) applied to the whole shared sets instead of the export's 256 images.

    python -m research.precision.precision_accuracy FP32_BUNDLE LOW_BUNDLE --id ID.npz --ood name=OOD.npz ...
        [--fp32-backend ort-cpu] [--low-backend auto] [--n-probe 1000] [--stem precision_accuracy]
        -> research/precision/results/<stem>.{json,md}

The ID set must be images neither bundle was fitted or calibrated on (CIFAR-10 test for the default).
"""

import argparse
import json
import time

import numpy as np

from benchmarks.harness import results_dir, write_results
from dlsr_deploy.machine import describe
from dlsr_deploy.precision_guard import guard
from dlsr_deploy.probes import PROBES, make_probes
from dlsr_deploy.runtime import Detector

RESULTS = results_dir(__file__)


def _scores(bundle: str, backend: str, sets: dict) -> tuple:
    with Detector.load(bundle, backend=backend) as det:
        out = {k: det.score(v, [det.score_name])[det.score_name].astype(np.float64) for k, v in sets.items()}
        return out, det.backend_name, det.manifest.precision, det.threshold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fp32")
    ap.add_argument("low")
    ap.add_argument("--id", required=True)
    ap.add_argument("--ood", action="append", default=[], help="name=path.npz")
    ap.add_argument("--fp32-backend", default="ort-cpu")
    ap.add_argument("--low-backend", default="auto")
    ap.add_argument("--n-probe", type=int, default=1000)
    ap.add_argument("--stem", default="precision_accuracy")
    a = ap.parse_args()
    sets = {"id": np.load(a.id)["images"]}
    for spec in a.ood:
        name, path = spec.split("=", 1)
        sets[name] = np.load(path)["images"]
    shift = [p for p, s in PROBES.items() if s.kind == "shift"]
    probes = {f"probe:{k}": v for k, v in make_probes(sets["id"], names=shift, n=a.n_probe).items()}
    sets.update(probes)
    t0 = time.time()
    ref, be32, p32, _ = _scores(a.fp32, a.fp32_backend, sets)
    low, be16, p16, _ = _scores(a.low, a.low_backend, sets)
    real = [k for k in sets if k != "id" and not k.startswith("probe:")]
    res = guard(ref, low, real, list(probes), n_boot=1000)
    res.update(
        machine=describe(),
        fp32={"bundle": a.fp32, "backend": be32, "precision": p32},
        low={"bundle": a.low, "backend": be16, "precision": p16},
        sets={**res["sets"], "sizes": {k: int(len(v)) for k, v in sets.items()}},
        seconds=round(time.time() - t0, 1),
    )
    res = json.loads(json.dumps(res, default=float))  # numpy scalars -> JSON numbers
    write_results(RESULTS, a.stem, res, lambda r: _markdown(r, a))


def _markdown(res: dict, a) -> str:
    lines = [
        f"# {res['low']['precision']} vs FP32 on full sets",
        "",
        f"Machine: {res['machine']}. FP32: `{a.fp32}` on {res['fp32']['backend']}; {res['low']['precision']}: "
        f"`{a.low}` on {res['low']['backend']}. ID: `{a.id}` ({res['sets']['sizes']['id']} images); 1000 paired "
        "bootstrap replicates. Command: `python -m research.precision.precision_accuracy` (see its docstring).",
        "",
        "| set | AUROC FP32 [95 % lower end] | AUROC low precision | FPR@95 FP32 [upper end] | FPR@95 low |",
        "|---|---|---|---|---|",
    ]
    for s, r in res["sets"].items():
        if s == "sizes":
            continue
        lines.append(
            f"| {s} ({res['sets']['sizes'][s]}) | {100 * r['auroc_fp32']:.2f} [{100 * r['auroc_fp32_lo']:.2f}] | "
            f"{100 * r['auroc']:.2f} | {100 * r['fpr95_fp32']:.2f} [{100 * r['fpr95_fp32_hi']:.2f}] | "
            f"{100 * r['fpr95']:.2f} |"
        )
    pm = res["probe_mean"]
    lines += [
        f"| probe mean ({len([k for k in res['sets']['sizes'] if k.startswith('probe:')])} shift probes) | "
        f"{100 * pm['auroc_fp32']:.2f} [{100 * pm['auroc_fp32_lo']:.2f}] | {100 * pm['auroc']:.2f} | | |",
        "",
        f"Decisions flipped vs FP32 (ID + real OOD, each at its own threshold): {100 * res['flips']:.2f} %. "
        f"ID images flagged (threshold from the other half): FP32 {100 * res['id_flagged']['fp32']:.2f} %, "
        f"low {100 * res['id_flagged']['cand']:.2f} %.",
        "",
        f"Guard: **{'passed' if res['passed'] else 'failed'}**"
        + (f" ({'; '.join(res['failures'])})" if res["failures"] else "")
        + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
