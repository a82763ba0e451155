"""The cases of benchmarks/robustness.py, by group; each yields (kind, case, expected, ok, got)."""

import io
import json
import os
import pickle
import shutil
import time

import numpy as np
from robustness import _edit, api, clean_error, cli


def _rehash_golden(bundle):
    from dlsr_deploy.io import sha256_file

    g = bundle / "golden.npz"
    _edit(bundle, lambda d: d["golden"].update(sha256=sha256_file(g), bytes=g.stat().st_size))


def _rewrite_golden(bundle, change) -> None:
    """golden.npz's arrays through change(dict) -> dict, written back with the manifest's hash
    recomputed (what an attacker who can edit files does)."""
    with np.load(bundle / "golden.npz") as g:
        arrays = change({k: g[k] for k in g.files})
    np.savez(bundle / "golden.npz", **arrays)
    _rehash_golden(bundle)


def signing(env):
    d = env.d
    cli("dlsr-keygen", d / "fleet")
    cli("dlsr-keygen", d / "other")
    out = d / "signed"
    code, msg, tb = cli(
        "dlsr-export", "--model", env.run, "--out", out, "--no-verify", "--quiet", "--sign", d / "fleet.key"
    )
    signed = code == 0 and "signature" in json.loads((out / "manifest.json").read_text())
    yield "security", "dlsr-export --sign KEY (CLI)", "the manifest is signed", signed, f"exit {code}"
    (d / "garbage.key").write_text("not a key")
    t = time.perf_counter()
    code, msg, tb = cli("dlsr-export", "--model", env.run, "--out", d / "g", "--quiet", "--sign", d / "garbage.key")
    ok, got = clean_error(code, msg, tb, "not a PEM private key")
    yield "security", "dlsr-export --sign GARBAGE", "refused before any work", ok and time.perf_counter() - t < 20, got
    args = ["dlsr-score", out, env.imgs, "--backend", "ort-cpu", "--quiet", "--out", d / "s.csv", "--trusted-key"]
    code, msg, tb = cli(*args, d / "fleet.pub")
    yield "security", "dlsr-score --trusted-key OWN", "scored", code == 0, f"exit {code}: {msg[:100]}"
    yield (
        "security",
        "dlsr-score --trusted-key FOREIGN",
        "refused",
        *clean_error(*cli(*args, d / "other.pub"), "not among"),
    )
    yield (
        "security",
        "unsigned bundle, trusted key given",
        "refused",
        *clean_error(
            *cli("dlsr-score", env.bundle, env.imgs, "--quiet", "--trusted-key", d / "fleet.pub"), "not signed"
        ),
    )


def signing_more(env):
    d, out = env.d, env.d / "signed"
    args = ["dlsr-score", out, env.imgs, "--backend", "ort-cpu", "--quiet", "--out", d / "s.csv", "--trusted-key"]
    crlf = d / "crlf.pub"
    crlf.write_bytes((d / "fleet.pub").read_bytes().replace(b"\n", b"\r\n"))
    code, msg, tb = cli(*args, crlf)
    yield (
        "security",
        "the trusted key saved with CRLF line endings",
        "the same key: accepted",
        code == 0,
        f"exit {code}",
    )
    from dlsr_deploy.errors import ConfigError
    from dlsr_deploy.runtime import Detector

    yield (
        "security",
        "Detector.load(trusted_keys=[])",
        "ConfigError, not 'no check'",
        *api(lambda: Detector.load(env.bundle, trusted_keys=[]), ConfigError, "the list is empty"),
    )
    forged = d / "forged"
    shutil.copytree(out, forged)
    _edit(forged, lambda m: m["threshold"].update(value=1e9))
    yield (
        "security",
        "signed bundle, threshold edited, digest recomputed",
        "refused (signature)",
        *clean_error(
            *cli("dlsr-score", forged, env.imgs, "--quiet", "--trusted-key", d / "fleet.pub"),
            "signature does not match",
        ),
    )


def signing_graph(env):
    from dlsr_deploy.runtime import Detector

    d, out = env.d, env.d / "signed"
    tampered = d / "tampered"
    shutil.copytree(out, tampered)
    blob = bytearray((tampered / "heads.onnx").read_bytes())
    blob[-5] ^= 0xFF
    (tampered / "heads.onnx").write_bytes(bytes(blob))
    from dlsr_deploy.errors import BundleError

    yield (
        "security",
        "signed bundle, a graph changed, loaded with verify=False",
        "refused",
        *api(lambda: Detector.load(tampered, verify=False, trusted_keys=[d / "fleet.pub"]), BundleError, "heads.onnx"),
    )


def self_check(env):
    from dlsr_deploy.errors import BundleError, ParityError
    from dlsr_deploy.runtime import Detector

    b = env.copy_bundle("drift")
    key = "bundle/score_gauss_layer"
    _rewrite_golden(b, lambda a: {**a, key: a[key][::-1].copy()})  # outputs that drifted
    yield (
        "security",
        "a bundle that fails its self-check",
        "ParityError",
        *api(lambda: Detector.load(b, backend="ort-cpu"), ParityError, "fails its self-check"),
    )
    from dlsr_deploy.runtime.verdicts import VerdictCache

    entries = sorted(VerdictCache("selfcheck").folder.glob("*.json"))
    for forged in (True, "false"):
        for e in entries:
            data = json.loads(e.read_text())
            data["value"].update(passed=forged, failures=[])
            e.write_text(json.dumps(data))
        yield (
            "security",
            f"cached verdict edited to passed = {forged!r}",
            "checked again: still refused",
            *api(lambda: Detector.load(b, backend="ort-cpu"), ParityError, "fails its self-check"),
        )
    g2 = env.copy_bundle("nogolden")
    _rewrite_golden(g2, lambda a: {k: v for k, v in a.items() if not k.startswith("bundle/")})
    yield (
        "security",
        "golden.npz without its bundle/* arrays, hashes recomputed",
        "BundleError, not a pass",
        *api(lambda: Detector.load(g2, backend="ort-cpu"), BundleError, "the golden set lacks"),
    )
    g3 = env.copy_bundle("badgolden")
    (g3 / "golden.npz").write_bytes(b"PK\x03\x04 not a zip")
    _rehash_golden(g3)
    yield (
        "traceback",
        "malformed golden.npz whose hashes match",
        "BundleError",
        *api(lambda: Detector.load(g3, backend="ort-cpu"), BundleError, "not a readable golden set"),
    )


def _service(env):
    """(call, enc, npy, header): the request handler of a service on the tour's bundle and body makers."""
    from PIL import Image

    from dlsr_deploy.scale.serve import ScoreService, ServiceLimits

    svc = ScoreService(str(env.bundle), backend="ort-cpu", limits=ServiceLimits(max_images=8, read_timeout_s=1.0))

    def call(body, length=None, delay=0.0):
        import asyncio

        async def reader():
            await asyncio.sleep(delay)
            return body

        return asyncio.run(svc.handle("POST", "/score", reader, str(len(body)) if length is None else length))

    def enc(a, fmt="PNG"):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format=fmt)
        return buf.getvalue()

    def npy(a):
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    def header(shape):
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
        return buf.getvalue()

    return call, enc, npy, header


def service(env):
    call, enc, npy, header = _service(env)
    import resource

    bomb = enc(np.full((12000, 12000), 128, np.uint8))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status, body = call(bomb)
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    yield (
        "security",
        f"POST /score: a {len(bomb) // 1024} KB PNG of 12000x12000 pixels",
        "413 from the header, no decode",
        status == 413 and grew < 100,
        f"{status} {body.get('error', '')[:80]}; peak RSS +{grew:.0f} MB",
    )


def service_bodies(env):
    call, enc, npy, header = _service(env)
    cases = [
        ("traceback", ".npy with more images than --max-batch", npy(np.zeros((9, 32, 32, 3), np.uint8)), None, 413),
        ("traceback", ".npy header claiming 3 x 9000 x 9000 x 3", header((3, 9000, 9000, 3)), None, 413),
        ("traceback", ".npy header claiming 10^6 images", header((10**6, 32, 32, 3)), None, 413),
        (
            "traceback",
            ".npy body shorter than its header says",
            npy(np.zeros((2, 32, 32, 3), np.uint8))[:300],
            None,
            400,
        ),
        ("traceback", ".npy of float NaN", npy(np.full((1, 8, 8, 3), np.nan)), None, 400),
        ("traceback", ".npy of object dtype", b"\x93NUMPY\x01\x00" + b"x" * 20, None, 400),
        ("traceback", "garbage bytes", b"garbage", None, 400),
        ("traceback", "empty body", b"", None, 400),
        ("security", "Content-Length larger than the body", enc(np.zeros((8, 8, 3), np.uint8)), "99999", 400),
        ("security", "Content-Length over --max-bytes", b"x", str(1 << 30), 413),
    ]
    for kind, name, data, length, want in cases:
        status, body = call(data, length)
        yield (
            kind,
            f"POST /score: {name}",
            f"JSON {want}",
            status == want and "error" in body,
            f"{status} {str(body)[:90]}",
        )


def service_slow(env):
    call, enc, npy, header = _service(env)
    t = time.perf_counter()
    status, body = call(enc(np.zeros((8, 8, 3), np.uint8)), delay=30.0)
    took = time.perf_counter() - t
    yield (
        "hang",
        "POST /score: a body that takes 30 s to arrive",
        "408 after the read timeout",
        status == 408 and took < 5,
        f"{status} after {took:.1f} s",
    )


def export_safety(env):
    d, run = env.d, env.run
    yield (
        "data loss",
        "dlsr-export --out MODEL --force",
        "refused, model intact",
        *_and(
            clean_error(
                *cli("dlsr-export", "--model", run, "--out", run, "--force", "--no-verify", "--quiet"), "model folder"
            ),
            (run / "model.safetensors").exists(),
        ),
    )
    notes = d / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("x")
    yield (
        "data loss",
        "dlsr-export --force over a non-bundle folder",
        "refused, files intact",
        *_and(
            clean_error(
                *cli("dlsr-export", "--model", run, "--out", notes, "--force", "--no-verify", "--quiet"),
                "not a bundle written by dlsr-export",
            ),
            (notes / "keep.txt").exists(),
        ),
    )
    proj = d / "project"
    proj.mkdir()
    (proj / "manifest.json").write_text('{"name": "my web app"}')
    (proj / "app.py").write_text("x")
    yield (
        "data loss",
        "dlsr-export --force over a project folder with a manifest.json",
        "refused, files intact",
        *_and(
            clean_error(
                *cli("dlsr-export", "--model", run, "--out", proj, "--force", "--no-verify", "--quiet"),
                "not a bundle written by dlsr-export",
            ),
            (proj / "app.py").exists(),
        ),
    )


def export_replace(env):
    d, run = env.d, env.run
    mine = env.copy_bundle("withnotes")
    (mine / "NOTES.md").write_text("mine")
    code, msg, tb = cli("dlsr-export", "--model", run, "--out", mine, "--force", "--no-verify", "--quiet")
    yield (
        "data loss",
        "dlsr-export --force over a bundle holding the user's NOTES.md",
        "replaced, NOTES.md kept",
        code == 0 and (mine / "NOTES.md").exists(),
        f"exit {code}",
    )
    code, msg, tb = cli(
        "dlsr-export",
        "--model",
        run,
        "--out",
        d / "strict",
        "--n-verify",
        "16",
        "--rank-corr",
        "1",
        "--flip-rate",
        "0",
        "--z0-rel",
        "0",
        "--quiet",
    )
    kept = (d / "strict.failed" / "manifest.json").exists() and not (d / "strict").exists()
    yield (
        "silent",
        "an export that fails parity",
        "exit 1; kept at OUT.failed, nothing at --out",
        code == 1 and kept and not tb,
        f"exit {code}: {msg[:90]}",
    )
    code, msg, tb = cli("dlsr-inspect", d / "strict.failed")
    yield (
        "silent",
        "dlsr-inspect on the failed bundle",
        "exit 1 naming the failure",
        *clean_error(code, msg, tb, "FAILED"),
    )
    yield (
        "silent",
        "dlsr-score on the failed bundle",
        "refused",
        *clean_error(*cli("dlsr-score", d / "strict.failed", env.imgs, "--quiet"), "failed its parity check"),
    )


def _and(pair, extra):
    return pair[0] and extra, pair[1]


def training(env):
    d = env.d
    code, msg, tb = env.train()
    before = (d / "r" / "model.safetensors").read_bytes() if code == 0 else b""
    (d / "r" / "mine.txt").write_text("keep")
    ok, got = clean_error(*env.train(), "already holds a trained run")
    yield (
        "data loss",
        "dlsr-train --out EXISTING_RUN (no --resume)",
        "refused, model unchanged",
        ok and (d / "r" / "model.safetensors").read_bytes() == before,
        got,
    )
    yield (
        "silent",
        "dlsr-train --resume with other --data",
        "refused naming the data",
        *clean_error(*env.train("--resume", data=env.ood_path), "data_sha256"),
    )
    yield (
        "silent",
        "dlsr-train --resume with another --input-size",
        "refused naming the field",
        *clean_error(*env.train("--resume", "--input-size", "96"), "config.feature.input_size"),
    )
    code, msg, tb = env.train("--force")
    yield (
        "data loss",
        "dlsr-train --force",
        "run replaced, the user's file kept",
        code == 0 and (d / "r" / "mine.txt").exists(),
        f"exit {code}",
    )


def training_data(env):
    d = env.d
    shutil.copy(env.id_path, d / "copy.npz")
    twice = env.train(data=[env.id_path, f"{env.id_path.parent}/./{env.id_path.name}"], out=d / "r2")
    yield "silent", "the same pack twice (two spellings)", "refused", *clean_error(*twice, "given twice")
    same = env.train(data=[env.id_path, d / "copy.npz"], out=d / "r3")
    yield "silent", "two packs with the same images", "refused", *clean_error(*same, "hold the same images")


def training_errors(env):
    d = env.d
    three = d / "three"
    three.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.load(env.id_path)["images"][i]).save(three / f"{i}.png")
    # the default --holdout 0.1 (the tour's other runs hold out 0.25, which leaves 1 of 3)
    ok, got = clean_error(*env.train("--holdout", "0.1", data=three, out=d / "r4"), "holdout")
    yield (
        "traceback",
        "dlsr-train on 3 images",
        "clear holdout error, no run left",
        ok and not (d / "r4" / "model.safetensors").exists(),
        got,
    )
    shutil.copytree(env.run, d / "ck")
    (d / "ck" / "checkpoints" / "latest.json").write_text("{broken")
    yield (
        "traceback",
        "corrupt latest.json on --resume",
        "one line",
        *clean_error(*env.train("--resume", out=d / "ck", data=env.id_path), "resume"),
    )
    blob = env.id_path.read_bytes()
    (d / "trunc.npz").write_bytes(blob[: len(blob) // 2])
    for name, args in (
        ("dlsr-train", ["--data", d / "trunc.npz", "--out", d / "r5"]),
        ("dlsr-eval", ["--model", env.run, "--id", d / "trunc.npz", "--ood", env.ood_path]),
        ("dlsr-score", [env.bundle, d / "trunc.npz"]),
    ):
        yield (
            "traceback",
            f"{name} on a truncated .npz",
            "one line naming the file",
            *clean_error(*cli(name, *args), "not a readable .npz"),
        )


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


def ray_resume(env):
    pytest_free = __import__("dlsr_deploy.scale.batch", fromlist=["shard_is_whole"])
    rows = lambda ids: [{"image": i, "score_x": 0.0, "is_ood": False, "error": ""} for i in ids]  # noqa: E731
    p = env.d / "part-00000.parquet"
    pytest_free.write_shard(p, rows(["c", "d"]), ["image", "score_x", "is_ood", "error"], "parquet")
    whole = pytest_free.shard_is_whole(p, "parquet", ["a", "b"])
    yield "silent", "--ray --resume: a shard holding another shard's ids", "scored again", not whole, f"whole={whole}"
    from dlsr_deploy.errors import DataError
    from dlsr_deploy.scale.batch import JobOptions, score_dataset

    inside = env.imgs / "out"
    yield (
        "data loss",
        "--ray --out inside an input folder",
        "refused before Ray starts",
        *api(
            lambda: score_dataset(env.bundle, [str(env.imgs)], inside, opts=JobOptions()), DataError, "inside the input"
        ),
    )


def _listening(pids):
    import psutil

    out = set()
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            out.add((c.laddr.ip, c.laddr.port))
    return out


def serve_ray(env):
    import subprocess

    import psutil

    port = 8765
    serve_bin = str(__import__("robustness").BIN / "dlsr-serve")
    args = [serve_bin, str(env.bundle), "--port", str(port), "--backend", "ort-cpu", "--read-timeout", "3"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        up = _wait_http(port, 180)
        kids = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)} | {proc.pid}
        ray_pids = kids | {
            p.pid for p in psutil.process_iter(["cmdline"]) if "ray" in " ".join(p.info["cmdline"] or [])
        }
        ports = _listening(ray_pids)
        service = {ip for ip, p in ports if p == port}
        others = sorted({ip for ip, p in ports if p != port})
        yield (
            "security",
            "dlsr-serve --host 127.0.0.1: what listens where",
            "the service on loopback only; Ray's own ports named (README, --help)",
            up and service == {"127.0.0.1"},
            f"service on {sorted(service)}; Ray's ports on {others}",
        )
        yield _slow_client(port)
        from robustness_verified import chunked_client

        # the first large body in a replica also grows Ray's own transfer buffers once (README); the
        # second shows what stays per refused request
        first, second = chunked_client(port, max_growth_mb=150), chunked_client(port)
        yield (*second[:3], first[3] and second[3], f"first: {first[4]}; second: {second[4]}")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run([str(__import__("robustness").BIN / "ray"), "stop", "--force"], capture_output=True)


def _slow_client(port):
    import socket

    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"POST /score HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 1000\r\n\r\nabc" % port)
    t = time.perf_counter()
    try:
        answer = s.recv(4096).decode(errors="replace")
    except OSError as exc:
        answer = f"closed ({exc.__class__.__name__})"
    took = time.perf_counter() - t
    s.close()
    return (
        "hang",
        "a client that sends headers and 3 of 1000 bytes, then nothing",
        "408 or closed within seconds",
        took < 30 and ("408" in answer or answer == "" or "closed" in answer),
        f"after {took:.1f} s: {answer[:60]!r}",
    )


def _wait_http(port, seconds):
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            time.sleep(1)
    return False


GROUPS = [
    signing,
    signing_more,
    signing_graph,
    self_check,
    service,
    service_bodies,
    service_slow,
    export_safety,
    export_replace,
    training,
    training_data,
    training_errors,
    inputs,
    input_links,
    input_names,
    options,
    runtime_api,
    ray_resume,
    serve_ray,
]
