"""The hostile-user tour of issue 10, as a script: every case, what is expected, what happened.

    python benchmarks/robustness.py            -> benchmarks/results/robustness.{md,json}

Builds a tiny run and bundle in a temporary folder (small LFDN, 64 px input: about a minute on
2 cores), then runs each case through the CLI (subprocess, as a user would) or the Python API.
A case passes when the outcome is the expected one: exit 1 with a one-line error naming the
problem (never a traceback), a refusal that leaves the user's files untouched, or a correct
result. The same cases are unit tests in tests/ (test_export, test_runtime, test_data, ...).
"""

import json
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))


def cli(*args):
    r = subprocess.run([str(BIN / args[0]), *map(str, args[1:])], capture_output=True, text=True)
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


def cases(d: Path, run: Path, bundle: Path, id_path: Path, ood_path: Path):
    from PIL import Image

    from dlsr_deploy.errors import BundleError, ConfigError, InputError
    from dlsr_deploy.runtime import Detector

    imgs = d / "imgs"
    imgs.mkdir()
    for i, im in enumerate(np.load(ood_path)["images"][:4]):
        Image.fromarray(im).save(imgs / f"{i}.png")
    victim = (imgs / "0.png").read_bytes()
    (imgs / "broken.jpg").write_bytes(b"junk")
    (d / "empty.npz").write_bytes(b"")
    three = d / "three"
    three.mkdir()
    for i in range(3):
        Image.fromarray(np.load(id_path)["images"][i]).save(three / f"{i}.png")

    # --- data loss
    code, msg, tb = cli("dlsr-export", "--model", run, "--out", run, "--force", "--no-verify", "--quiet")
    ok, got = clean_error(code, msg, tb, "model folder")
    yield (
        "data loss",
        "dlsr-export --out MODEL --force",
        "refused, model intact",
        ok and (run / "model.safetensors").exists(),
        got,
    )
    (d / "notes").mkdir()
    (d / "notes" / "keep.txt").write_text("x")
    code, msg, tb = cli("dlsr-export", "--model", run, "--out", d / "notes", "--force", "--no-verify", "--quiet")
    ok, got = clean_error(code, msg, tb, "no manifest.json")
    yield (
        "data loss",
        "dlsr-export --force over a non-bundle folder",
        "refused, files intact",
        ok and (d / "notes" / "keep.txt").exists(),
        got,
    )
    code, msg, tb = cli("dlsr-score", bundle, imgs, "--out", imgs / "0.png", "--quiet")
    ok, got = clean_error(code, msg, tb, "one of the inputs")
    yield (
        "data loss",
        "dlsr-score --out INPUT.png",
        "refused, input intact",
        ok and (imgs / "0.png").read_bytes() == victim,
        got,
    )
    (d / "link.csv").symlink_to(d / "target.csv")
    code, msg, tb = cli("dlsr-score", bundle, imgs, "--out", d / "link.csv", "--quiet")
    yield (
        "data loss",
        "dlsr-score --out SYMLINK",
        "written through, link kept",
        code == 0 and (d / "link.csv").is_symlink() and (d / "target.csv").exists(),
        f"exit {code}",
    )
    code, msg, tb = cli("dlsr-score", bundle, imgs, "--out", "/dev/null", "--quiet")
    yield (
        "data loss",
        "dlsr-score --out /dev/null",
        "written to the device, still a device",
        code == 0 and Path("/dev/null").is_char_device(),
        f"exit {code}",
    )
    code, msg, tb = cli("dlsr-score", bundle, imgs, "--out", "/proc/x.csv", "--quiet")
    ok, got = clean_error(code, msg, tb, "not writable")
    yield "data loss", "dlsr-score --out /proc/x.csv", "fails before scoring", ok, got

    # --- silently wrong or incomplete results
    code, msg, tb = cli("dlsr-eval", "--model", run, "--id", id_path, "--ood", f"x={ood_path}", "--ood", f"x={id_path}")
    yield (
        "silent",
        "dlsr-eval --ood x=A --ood x=B",
        "error: names must be unique",
        *clean_error(code, msg, tb, "must be unique"),
    )
    with Detector.load(bundle, backend="ort-cpu") as det:
        one = np.load(id_path)["images"]
        n = len(det.score([one[0], one[1:5]])["mfsim"])
    yield "silent", "det.score([img, batch4])", "5 scores", n == 5, f"{n} scores"
    deep = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(deep).save(d / "deep.png")
    from dlsr_deploy.preprocess import read_image

    white = float((read_image(d / "deep.png")[..., 0] == 255).mean())
    yield "silent", "16-bit PNG", "scaled to 8 bits, not clipped", white < 0.01, f"{white:.1%} of pixels at 255"
    yield (
        "silent",
        "zero-height image",
        "InputError",
        *api(
            lambda: Detector.load(bundle, backend="ort-cpu").score(np.zeros((1, 0, 32, 3), np.uint8)),
            InputError,
            "zero size",
        ),
    )
    edited = d / "edited"
    shutil.copytree(bundle, edited)
    m = json.loads((edited / "manifest.json").read_text())
    m["threshold"]["value"] = 1e9
    (edited / "manifest.json").write_text(json.dumps(m))
    code, msg, tb = cli("dlsr-inspect", edited)
    yield (
        "silent",
        "manifest threshold.value edited to 1e9",
        "refused (digest)",
        *clean_error(code, msg, tb, "modified after export"),
    )
    code, msg, tb = cli("dlsr-score", bundle, imgs, "--quiet", "--out", d / "s.json")
    rows = json.loads((d / "s.json").read_text())["results"] if code == 0 else []
    yield (
        "silent",
        "dlsr-score --quiet with an unreadable file",
        "a row with its error",
        any(r["error"] for r in rows),
        f"{len(rows)} rows, {sum(bool(r['error']) for r in rows)} with an error",
    )
    moved = d / "run-moved"
    shutil.copytree(run, moved)
    info = json.loads((moved / "run.json").read_text())
    info["data_sha256"] = ["0" * 64]
    (moved / "run.json").write_text(json.dumps(info))
    code, msg, tb = cli("dlsr-export", "--model", moved, "--out", d / "b-moved", "--no-verify", "--quiet")
    yield (
        "silent",
        "training data changed before dlsr-export",
        "error at step 1",
        *clean_error(code, msg, tb, "changed since training"),
    )

    # --- raw tracebacks
    code, msg, tb = cli("dlsr-score", bundle, d / "empty.npz", "--quiet")
    yield ("traceback", "0-byte .npz", "one line naming the file", *clean_error(code, msg, tb, "empty.npz"))
    code, msg, tb = cli("dlsr-score", bundle, imgs, "--batch-size", "0", "--quiet")
    yield (
        "traceback",
        "dlsr-score --batch-size 0",
        "usage error, exit 2",
        code == 2 and not tb,
        f"exit {code}: {msg[:120]}",
    )
    code, msg, tb = cli(
        "dlsr-train",
        "--data",
        three,
        "--out",
        d / "r3",
        "--preset",
        "small",
        "--input-size",
        "64",
        "--epochs",
        "1",
        "--quiet",
    )
    ok, got = clean_error(code, msg, tb, "--holdout")
    yield (
        "traceback",
        "dlsr-train on 3 images",
        "clear --holdout error, no run folder left",
        ok and not (d / "r3").exists(),
        got,
    )
    for field, value, needle in (
        ("threshold.value", "high", "threshold.value"),
        ("files.denoiser.sha256", None, "sha256"),
        ("preprocessing.native_size", 64, "must match"),
    ):
        b = d / f"bad-{field}"
        shutil.copytree(bundle, b)
        m = json.loads((b / "manifest.json").read_text())
        node = m
        keys = field.split(".")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
        (b / "manifest.json").write_text(json.dumps(m))
        code, msg, tb = cli("dlsr-inspect", b)
        yield (
            "traceback",
            f"manifest {field} = {value!r}",
            "one line naming the field",
            *clean_error(code, msg, tb, needle),
        )
    ck = d / "ck"
    shutil.copytree(run, ck)
    (ck / "checkpoints" / "latest.json").write_text("{broken")
    code, msg, tb = cli(
        "dlsr-train",
        "--data",
        id_path,
        "--out",
        ck,
        "--preset",
        "small",
        "--input-size",
        "64",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--holdout",
        "0.25",
        "--resume",
        "--quiet",
    )
    yield ("traceback", "corrupt latest.json on --resume", "one line", *clean_error(code, msg, tb, "latest.json"))
    yield (
        "traceback",
        "Detector(max_batch=-1)",
        "InputError",
        *api(lambda: Detector.load(bundle, backend="ort-cpu", max_batch=-1), InputError, "max_batch"),
    )
    with Detector.load(bundle, backend="ort-cpu") as det:
        clone = pickle.loads(pickle.dumps(det))
        same = np.array_equal(clone.score(one[:4])["mfsim"], det.score(one[:4])["mfsim"])
        clone.close()
    yield (
        "traceback",
        "pickle.dumps(Detector)",
        "re-opens the bundle, same scores",
        same,
        "equal scores" if same else "differ",
    )
    _ = (BundleError, ConfigError)


def main():
    from bundles import make_run

    from dlsr_deploy.export.exporter import export_bundle

    d = Path(tempfile.mkdtemp(prefix="dlsr-robust-"))
    try:
        run, id_path, ood_path = make_run(d / "tiny")
        bundle = d / "bundle"
        export_bundle(run, bundle, verify_ood=[str(ood_path)], n_verify=32, quiet=True)
        rows = [
            dict(zip(("kind", "case", "expected", "ok", "got"), c)) for c in cases(d, run, bundle, id_path, ood_path)
        ]
    finally:
        shutil.rmtree(d, ignore_errors=True)
    for r in rows:
        r["ok"] = bool(r["ok"])
    counts = {k: sum(1 for r in rows if r["kind"] == k and not r["ok"]) for k in ("data loss", "silent", "traceback")}
    md = [
        "# Robustness tour (`python benchmarks/robustness.py`)",
        "",
        f"{len(rows)} cases; failing: data loss {counts['data loss']}, silently wrong {counts['silent']}, "
        f"raw tracebacks {counts['traceback']}.",
        "",
        "| kind | case | expected | got | ok |",
        "|---|---|---|---|---|",
    ]
    mark = {True: "yes", False: "**NO**"}
    md += [
        f"| {r['kind']} | {r['case']} | {r['expected']} | {r['got'].replace('|', '/')} | {mark[r['ok']]} |"
        for r in rows
    ]
    OUT.mkdir(exist_ok=True)
    (OUT / "robustness.json").write_text(json.dumps({"failing": counts, "cases": rows}, indent=2) + "\n")
    (OUT / "robustness.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    sys.exit(1 if any(counts.values()) else 0)


if __name__ == "__main__":
    main()
