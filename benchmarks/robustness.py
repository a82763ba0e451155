"""The hostile-user tours (issues 10, 21 and 29), as a script: every case, what is expected, what happened.

    python benchmarks/robustness.py [--no-ray]     -> benchmarks/results/robustness.{md,json}

Builds a tiny run and bundle in a temporary folder (small LFDN, 64 px input: about a minute on
2 cores), then runs each case through the CLI (subprocess, as a user would), the Python API or
the HTTP service's request handler (and, unless --no-ray, a real `dlsr-serve` on loopback). A
case passes when the outcome is the expected one: exit 1 with a one-line error naming the problem
(never a traceback), a refusal that leaves the user's files untouched, a JSON 4xx, or a correct
result. Kinds: security, data loss, silent (a wrong or incomplete result with exit 0), traceback
(a raw error instead of a readable one), hang. Most cases are unit tests too (tests/test_trust.py,
test_inputs.py, test_service.py, test_export.py, ...).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

KINDS = ("security", "data loss", "silent", "traceback", "hang")


def cli(*args, timeout=600):
    r = subprocess.run([str(BIN / args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=timeout)
    err = r.stderr.strip().splitlines()
    return r.returncode, (err[-1] if err else ""), "Traceback" in r.stderr


def clean_error(code, msg, tb, needle):
    return code == 1 and not tb and needle in msg, f"exit {code}: {msg[:150]}" + (" (TRACEBACK)" if tb else "")


def api(fn, exc_type, needle):
    try:
        fn()
    except exc_type as exc:
        return needle in str(exc), f"{type(exc).__name__}: {str(exc)[:150]}"
    except Exception as exc:  # a raw, unexpected exception is a failed case
        return False, f"UNEXPECTED {type(exc).__name__}: {exc}"
    return False, "no error"


def _edit(bundle, fn):
    """Edit a bundle's manifest through fn(data), digest recomputed (a careless edit; an attacker without the key)."""
    from dlsr_deploy.manifest import content_digest

    data = json.loads((bundle / "manifest.json").read_text())
    fn(data)
    data["digest"] = content_digest(data)
    (bundle / "manifest.json").write_text(json.dumps(data))


class Env:
    """The tour's files: a tiny run, its bundle, image sets, a scratch folder."""

    def __init__(self, d: Path):
        from bundles import make_run

        from dlsr_deploy.export.exporter import export_bundle

        self.d = d
        self.run, self.id_path, self.ood_path = make_run(d / "tiny")
        self.bundle = d / "bundle"
        export_bundle(self.run, self.bundle, verify_ood=[str(self.ood_path)], n_verify=32, quiet=True)
        self.imgs = d / "imgs"
        self.imgs.mkdir()
        from PIL import Image

        for i, im in enumerate(np.load(self.ood_path)["images"][:4]):
            Image.fromarray(im).save(self.imgs / f"{i}.png")
        (self.imgs / "broken.jpg").write_bytes(b"junk")

    def copy_bundle(self, name: str) -> Path:
        b = self.d / name
        shutil.copytree(self.bundle, b)
        return b

    def train(self, *extra, data=None, out=None):
        """dlsr-train on a tiny model (small LFDN, 64 px, 1 epoch); data: a source or a list of them."""
        sources = data if isinstance(data, list) else [data or self.id_path]
        args = ["dlsr-train", *[a for s in sources for a in ("--data", s)], "--out", out or (self.d / "r")]
        small = ["--preset", "small", "--backbone", "efficientnet-lite0", "--input-size", "64", "--epochs", "1"]
        small += ["--batch-size", "32", "--holdout", "0.25"]
        return cli(*args, *small, "--quiet", *extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-ray", action="store_true", help="skip the cases that start a real dlsr-serve on Ray")
    a = ap.parse_args()
    from robustness_cases import GROUPS
    from robustness_verified import GROUPS as VERIFIED  # the third tour (issue 29)

    d = Path(tempfile.mkdtemp(prefix="dlsr-robust-"))
    # a cache root of its own: the verdict cases edit cached verdicts, which must be this tour's
    # (never the user's), and the first-load self-checks must run here, not come from a cache
    os.environ["DLSR_CACHE"] = str(d / "cache")
    try:
        env = Env(d)
        rows = []
        for group in GROUPS + VERIFIED:
            if a.no_ray and group.__name__.endswith("_ray"):
                continue
            for c in group(env):
                rows.append(dict(zip(("kind", "case", "expected", "ok", "got"), c), ok=bool(c[3])))
                print(("ok   " if c[3] else "FAIL ") + f"{c[0]}: {c[1]}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    write(rows)
    sys.exit(1 if any(not r["ok"] for r in rows) else 0)


def write(rows):
    from common import write_results

    from dlsr_deploy.machine import describe

    counts = {k: sum(1 for r in rows if r["kind"] == k and not r["ok"]) for k in KINDS}
    res = {
        "machine": describe(),
        "cases": rows,
        "failing": counts,
        "per_kind": {k: sum(1 for r in rows if r["kind"] == k) for k in KINDS},
    }

    def md(res):
        mark = {True: "yes", False: "**NO**"}
        lines = [
            "# Robustness tour (`python benchmarks/robustness.py`)",
            "",
            f"{len(rows)} cases ({', '.join(f'{k} {n}' for k, n in res['per_kind'].items())}); failing: "
            + ", ".join(f"{k} {n}" for k, n in counts.items())
            + ".",
            "",
            "| kind | case | expected | got | ok |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['kind']} | {r['case']} | {r['expected']} | {r['got'].replace('|', '/')} | {mark[r['ok']]} |"
            for r in res["cases"]
        ]
        return "\n".join(lines)

    write_results("robustness", res, md)


if __name__ == "__main__":
    main()
