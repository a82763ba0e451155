"""Users' files, manifests, caches and full disks, big images."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tour import _edit, api, clean_error, cli


def no_overwrite(env):
    d = env.d
    vic = d / "vic"
    vic.mkdir(exist_ok=True)
    shutil.copy(env.imgs / "0.png", vic / "id5.png")
    before = (vic / "id5.png").read_bytes()
    code, msg, tb = cli("dlsr-score", env.bundle, f"{vic}/*.png", "--quiet", "--out", vic / "id5.png")
    ok, got = clean_error(code, msg, tb, "is one of the inputs")
    yield (
        "data loss",
        "dlsr-score B 'vic/*.png' --out vic/id5.png",
        "refused, image intact",
        ok and (vic / "id5.png").read_bytes() == before,
        got,
    )
    b = env.copy_bundle("victim")
    for name in ("manifest.json", "denoiser.onnx"):
        was = (b / name).read_bytes()
        code, msg, tb = cli("dlsr-score", b, env.imgs, "--quiet", "--out", b / name)
        ok, got = clean_error(code, msg, tb, "inside the bundle")
        yield (
            "data loss",
            f"dlsr-score B ... --out B/{name}",
            "refused, bundle intact",
            ok and (b / name).read_bytes() == was,
            got,
        )
    if not (d / "fleet.pub").exists():
        cli("dlsr-keygen", d / "fleet")
    key = (d / "fleet.pub").read_bytes()
    code, msg, tb = cli(
        "dlsr-score", env.bundle, env.imgs, "--quiet", "--trusted-key", d / "fleet.pub", "--out", d / "fleet.pub"
    )
    ok, got = clean_error(code, msg, tb, "is the key")
    yield (
        "data loss",
        "dlsr-score --out onto the --trusted-key file",
        "refused, key intact",
        ok and (d / "fleet.pub").read_bytes() == key,
        got,
    )
    code, msg, tb = cli(
        "dlsr-check", b, "--on-target", "--backend", "ort-cpu", "--quiet", "--report", b / "manifest.json"
    )
    yield (
        "data loss",
        "dlsr-check B --report B/manifest.json",
        "refused",
        *clean_error(code, msg, tb, "inside the bundle"),
    )


def manifest_fields(env):
    from dlsr_deploy.errors import BundleError
    from dlsr_deploy.runtime import Detector

    def head(m):
        return m["scores"]["headline"]

    edits = [
        ("threshold.value = NaN", lambda m: m["threshold"].update(value=float("nan")), "threshold.value"),
        ("threshold.value = -inf", lambda m: m["threshold"].update(value=float("-inf")), "threshold.value"),
        ("threshold.score not the headline", lambda m: m["threshold"].update(score="mse"), "threshold.score"),
        ("threshold.value not its score's", lambda m: m["threshold"].update(value=1.0), "threshold.value"),
        ("threshold.scale = 0", lambda m: m["threshold"].update(scale=0), "threshold.scale"),
        ("backends = 'ort-cpu' (a string)", lambda m: m.update(backends="ort-cpu"), "'backends'"),
        (
            "self_check.tolerances of strings",
            lambda m: m["self_check"].update(
                tolerances=dict.fromkeys(("rank_corr", "auroc_change", "flip_rate", "z0_rel"), "x")
            ),
            "tolerances",
        ),
        ("self_check.chunk = -3", lambda m: m["self_check"].update(chunk=-3), "self_check.chunk"),
        ("name = '../../etc'", lambda m: m.update(name="../../etc"), "'name'"),
        ("threshold.all of NaN", lambda m: m["threshold"]["all"].update({head(m): float("nan")}), "threshold"),
    ]
    for i, (name, fn, needle) in enumerate(edits):
        b = env.copy_bundle(f"field{i}")
        _edit(b, fn)
        ok, got = api(lambda b=b: Detector.load(b, backend="ort-cpu").close(), BundleError, needle)
        code, msg, tb = cli("dlsr-inspect", b)
        ok2, _ = clean_error(code, msg, tb, needle)
        yield (
            "silent",
            f"manifest {name} (digest recomputed)",
            "Detector and dlsr-inspect refuse, naming it",
            (ok and ok2),
            got,
        )
    b = env.copy_bundle("nogolden-tour3")
    (b / "golden.npz").unlink()
    _edit(b, lambda m: m.pop("golden"))
    ok, got = api(lambda: Detector.load(b, backend="ort-cpu").close(), BundleError, "no golden set")
    yield "silent", "a bundle with no golden set", "refused by the self-check in one line", ok, got


@contextlib.contextmanager
def _tmpfs(kb: int):
    d = Path(tempfile.mkdtemp(prefix="dlsr-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(d)], capture_output=True)
    try:
        yield d if mounted.returncode == 0 else None
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(d)], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def _fill(d: Path) -> None:
    with contextlib.suppress(OSError), open(d / "filler", "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


def _score_env(env, cache, *extra):
    r = subprocess.run(
        [str(Path(sys.executable).parent / "dlsr-score"), str(env.bundle), str(env.imgs), *map(str, extra)],
        capture_output=True,
        text=True,
        env={**os.environ, "DLSR_CACHE": str(cache)},
        timeout=600,
    )
    return r.returncode, (r.stderr.strip().splitlines() or [""])[-1], "Traceback" in r.stderr, r


def _leftovers(d: Path):
    return [p.name for p in d.rglob("*") if p.is_file() and (p.stat().st_size == 0 or ".tmp" in p.name)]


def caches(env):
    ro = env.d / "ro-cache"
    ro.mkdir(exist_ok=True)
    os.chmod(ro, 0o555)
    code, msg, tb, r = _score_env(env, ro / "sub", "--quiet")
    ok = code == 0 and not tb and r.stderr.count("not usable") <= 2
    yield (
        "traceback",
        "dlsr-score (backend auto) with a read-only cache root",
        "scores, one warning",
        ok,
        (f"exit {code}: {msg[:100]}"),
    )
    os.chmod(ro, 0o755)
    with _tmpfs(64) as full:
        if full is None:
            yield "traceback", "dlsr-score with a full cache disk", "scores", False, "could not mount a tmpfs (root?)"
            return
        _fill(full)
        code, msg, tb, r = _score_env(env, full / "cache", "--quiet")
        left = _leftovers(full / "cache") if (full / "cache").exists() else []
        yield (
            "traceback",
            "dlsr-score (backend auto) with a full cache disk",
            "scores, no 0-byte or temp files",
            (code == 0 and not tb and not left),
            f"exit {code}; leftovers {left}",
        )
        code, msg, tb, r = _score_env(env, env.d / "cache", "--quiet", "--out", full / "rows.csv")
        left = [p.name for p in full.iterdir() if p.name not in ("filler", "cache")]  # cache: the case above
        yield (
            "data loss",
            "dlsr-score --out on a full disk",
            "one line, nothing half-written",
            (code == 1 and not tb and not left),
            f"exit {code}: {msg[:100]}; left {left}",
        )
    x = env.d / "under"
    code, msg, tb, r = _score_env(env, x, "--quiet", "--backend", "ort-cpu")
    beside = [p.name for p in env.d.iterdir() if p.name in ("selfcheck", "backend-choice", "openvino")]
    ok = code == 0 and (x / "selfcheck").is_dir() and not beside
    yield "silent", "DLSR_CACHE=X", "caches under X, nothing beside it", ok, f"exit {code}; beside X: {beside}"


def big_image(env):
    from PIL import Image

    p = env.d / "huge.png"
    Image.new("L", (12000, 12000), 128).save(p)
    # the child's own peak (VmHWM of its address space): getrusage's ru_maxrss carries the forking
    # parent's peak over, so a large pytest process made this case fail (1,364 MB) for its own size
    code = (
        "import resource, sys\n"
        "def peak_mb():\n"
        "    try:\n"
        "        with open('/proc/self/status') as f:\n"
        "            return next(int(line.split()[1]) for line in f if line.startswith('VmHWM')) // 1024\n"
        "    except OSError:\n"
        "        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
        "from dlsr_deploy.runtime import Detector\n"
        f"det = Detector.load({str(env.bundle)!r}, backend='ort-cpu')\n"
        "try:\n"
        f"    det.predict([{str(p)!r}])\n"
        "    print('scored')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, str(e).splitlines()[0][:100])\n"
        "print(peak_mb())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = r.stdout.strip().splitlines() or ["", "0"]
    peak = int(lines[-1]) if lines[-1].isdigit() else 99999
    ok = peak < 1024 and ("InputError" in lines[0] and "pixels" in lines[0] or lines[0] == "scored")
    yield (
        "hang",
        f"Detector.predict([a {p.stat().st_size // 1024} KB 12000x12000 PNG])",
        "refused, peak < 1 GB",
        ok,
        (f"{lines[0][:90]}; peak RSS {peak} MB"),
    )


GROUPS = [no_overwrite, manifest_fields, caches, big_image]
