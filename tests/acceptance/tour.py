"""The hostile-user tours (issues 10, 21 and 29) as an acceptance suite: the shared environment and
helpers of the cases in cases_*.py (test_acceptance.py runs them).

The environment is a tiny run and bundle in a temporary folder (small LFDN, 64 px input: about a
minute on 2 cores); each case runs through the CLI (subprocess, as a user would), the Python API,
the HTTP service's request handler, or a real `dlsr-serve` on loopback. A case passes when the
outcome is the expected one: exit 1 with a one-line error naming the problem (never a traceback),
a refusal that leaves the user's files untouched, a JSON 4xx, or a correct result. Kinds:
security, data loss, silent (a wrong or incomplete result with exit 0), traceback (a raw error
instead of a readable one), hang.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent

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
        export_bundle(self.run, self.bundle, verify_ood=[str(self.ood_path)], n_verify=32)
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
