"""Inputs, options and the Python API."""

import json
import os
import pickle
import shutil
import time

import numpy as np
from tour import api, clean_error, cli


def inputs(env):
    d = env.d
    tifffile = __import__("tifffile")
    from dlsr_deploy.preprocess import read_image

    tifffile.imwrite(d / "f.tif", np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))
    px = read_image(d / "f.tif")
    yield "silent", "a float32 TIFF in [0, 1]", "scaled, not black", px.max() == 255, f"max {px.max()}"
    tifffile.imwrite(d / "i.tif", (np.arange(64, dtype=np.int32).reshape(8, 8) * 1500))
    px = read_image(d / "i.tif")
    yield (
        "silent",
        "an int32 TIFF up to 94,500",
        "scaled, not saturated",
        (px == 255).mean() < 0.05,
        f"{(px == 255).mean():.0%} at 255",
    )
    from PIL import Image

    im = Image.fromarray(np.concatenate([np.zeros((8, 16, 3), np.uint8), np.full((8, 16, 3), 255, np.uint8)]))
    exif = Image.Exif()
    exif[0x0112] = 3
    im.save(d / "rot.jpg", exif=exif.tobytes(), quality=95)
    yield (
        "silent",
        "a JPEG with EXIF orientation 180",
        "upright",
        read_image(d / "rot.jpg")[0].mean() > 200,
        "top row mean",
    )


def input_links(env):
    d = env.d
    links = d / "links"
    shutil.copytree(env.imgs, links)
    os.symlink(links / "missing.png", links / "dangling.png")
    os.symlink(links, links / "loop")
    code, msg, tb = cli("dlsr-score", env.bundle, links, "--quiet", "--out", d / "links.json", timeout=120)
    rows = json.loads((d / "links.json").read_text())["results"] if code == 0 else []
    errs = {r["image"]: r["error"] for r in rows}
    yield (
        "silent",
        "a dangling symlink in an input folder",
        "a row with its error",
        "broken symbolic link" in errs.get(str(links / "dangling.png"), ""),
        f"{len(rows)} rows",
    )
    yield (
        "hang",
        "a symlink loop in an input folder",
        "listed once, a row with the reason",
        any("loop" in e for e in errs.values()),
        f"exit {code}",
    )


def input_names(env):
    d = env.d
    odd = os.fsdecode(b"\xff\xfebad-name.png")
    shutil.copy(env.imgs / "0.png", os.path.join(d, odd))
    code, msg, tb = cli("dlsr-score", env.bundle, os.path.join(d, odd), "--quiet", "--out", d / "odd.csv")
    yield (
        "traceback",
        "a non-UTF-8 file name with --out x.csv",
        "scored, the name escaped",
        code == 0 and "\\xff" in (d / "odd.csv").read_text(),
        f"exit {code} {msg[:80]}",
    )
    code, msg, tb = cli("dlsr-score", env.bundle, env.imgs, "--quiet", "--out", d / "order.json")
    rows = json.loads((d / "order.json").read_text())["results"] if code == 0 else []
    yield (
        "silent",
        "dlsr-score: rows in input order, unreadable ones in place with an error",
        "5 rows, 1 error",
        len(rows) == 5 and sum(bool(r["error"]) for r in rows) == 1,
        f"{len(rows)} rows",
    )
    np.savez(d / "g1.npz", images=np.load(env.ood_path)["images"][:3])
    code, msg, tb = cli("dlsr-score", env.bundle, str(d / "g*.npz"), "--quiet", "--out", d / "glob.json")
    n = len(json.loads((d / "glob.json").read_text())["results"]) if code == 0 else 0
    yield "silent", "dlsr-score with a glob (no --ray)", "3 rows", n == 3, f"exit {code}, {n} rows"


def options(env):
    d = env.d
    for flag, value, needle in (
        ("--headline", "bogus", "--headline: expected one of"),
        ("--target-tpr", "2", "--target-tpr: expected a value in (0, 1)"),
        ("--verify-ood", str(d / "nope.npz"), "--verify-ood: not found"),
    ):
        t = time.perf_counter()
        ok, got = clean_error(*cli("dlsr-export", "--model", env.run, "--out", d / "o", flag, value), needle)
        yield (
            "traceback",
            f"dlsr-export {flag} {value}",
            "refused in seconds, naming the flag",
            ok and time.perf_counter() - t < 15,
            got + f" ({time.perf_counter() - t:.1f} s)",
        )
    code, msg, tb = cli("dlsr-export", "--model", env.run, "--out", d / "o", "--n-verify", "0")
    yield "traceback", "dlsr-export --n-verify 0", "usage error, exit 2", code == 2 and not tb, f"exit {code}"
    code, msg, tb = cli("dlsr-score", env.bundle, env.imgs, "--batch-size", "0", "--quiet")
    yield "traceback", "dlsr-score --batch-size 0", "usage error, exit 2", code == 2 and not tb, f"exit {code}"
    yield (
        "traceback",
        "dlsr-score --scores bogus",
        "one line naming the scores",
        *clean_error(*cli("dlsr-score", env.bundle, env.imgs, "--scores", "bogus", "--quiet"), "scores"),
    )
    (d / "empty.npz").write_bytes(b"")
    yield (
        "traceback",
        "0-byte .npz",
        "one line naming the file",
        *clean_error(*cli("dlsr-score", env.bundle, d / "empty.npz", "--quiet"), "empty.npz"),
    )
    code, msg, tb = cli(
        "dlsr-eval", "--model", env.run, "--id", env.id_path, "--ood", f"x={env.ood_path}", "--ood", f"x={env.id_path}"
    )
    yield (
        "silent",
        "dlsr-eval --ood x=A --ood x=B",
        "error: names must be unique",
        *clean_error(code, msg, tb, "unique"),
    )
    for field, value, needle in (
        ("threshold.value", "high", "threshold.value"),
        ("files.denoiser.sha256", None, "sha256"),
        ("preprocessing.native_size", 64, "must match"),
    ):
        b = env.copy_bundle(f"bad-{field}")
        m = json.loads((b / "manifest.json").read_text())
        node, keys = m, field.split(".")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
        (b / "manifest.json").write_text(json.dumps(m))
        yield (
            "traceback",
            f"manifest {field} = {value!r}",
            "one line naming the field",
            *clean_error(*cli("dlsr-inspect", b), needle),
        )


def runtime_api(env):
    from dlsr_deploy.errors import InputError
    from dlsr_deploy.runtime import Detector

    one = np.load(env.id_path)["images"]
    with Detector.load(env.bundle, backend="ort-cpu") as det:
        n = len(det.score([one[0], one[1:5]])[det.score_name])
        clone = pickle.loads(pickle.dumps(det))
        same = np.array_equal(clone.score(one[:4], "all")["mfsim"], det.score(one[:4], "all")["mfsim"])
        clone.close()
        heads_only = det.graphs_for() == ["decision"]  # images -> headline in one graph (issue 28)
        bad = api(lambda: det.score(one[:2], ["bogus"]), InputError, "scores")
        zero = api(lambda: det.score(np.zeros((1, 0, 32, 3), np.uint8)), InputError, "zero size")
    yield "silent", "det.score([img, batch4])", "5 scores", n == 5, f"{n} scores"
    yield "traceback", "pickle.dumps(Detector)", "re-opens the bundle, same scores", same, "equal" if same else "differ"
    yield "silent", "predict() of a density headline", "decision.onnx only, no denoiser", heads_only, str(heads_only)
    yield "traceback", "det.score(scores=['bogus'])", "InputError naming the scores", *bad
    yield "silent", "zero-height image", "InputError", *zero
    yield (
        "traceback",
        "Detector(max_batch=-1)",
        "InputError",
        *api(lambda: Detector.load(env.bundle, backend="ort-cpu", max_batch=-1), InputError, "max_batch"),
    )
    from dlsr_deploy.export.calibrate import choose_headline

    r = np.random.default_rng(0)
    names = ["mfsim", "gauss_layer", "maha_lw"]
    head, how = choose_headline(
        "auto", names, {n: r.normal(size=300) for n in names}, {"idlike": {n: r.normal(size=200) for n in names}}
    )
    yield (
        "silent",
        "--headline auto given ID images as OOD",
        "warned; the default kept",
        how["near_chance"] and head == "gauss_layer",
        f"{head}, near_chance {how['near_chance']}",
    )
    deep = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    from PIL import Image

    from dlsr_deploy.preprocess import read_image

    Image.fromarray(deep).save(env.d / "deep.png")
    white = float((read_image(env.d / "deep.png")[..., 0] == 255).mean())
    yield "silent", "16-bit PNG", "scaled to 8 bits, not clipped", white < 0.01, f"{white:.1%} of pixels at 255"


GROUPS = [inputs, input_links, input_names, options, runtime_api]
