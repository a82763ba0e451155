"""The third tour's cases (issue 29) for benchmarks/robustness.py: use exactly what was verified,
no command writes over what it reads, every manifest field checked, caches and disks that fail
cleanly, bounded memory for any image, and the confusing-but-safe findings. Each group yields
(kind, case, expected, ok, got)."""

import contextlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from robustness import _edit, api, clean_error, cli


def _scores(det, x):
    return det.score(x, "all")


def open_once(env):
    from dlsr_deploy.errors import BundleError
    from dlsr_deploy.runtime import Detector

    x = np.load(env.ood_path)["images"][:6]
    b = env.copy_bundle("held")
    with Detector.load(b, backend="ort-cpu", self_check="never") as det:
        det.predict(x)  # the denoiser is not opened yet: a density headline
        other = env.copy_bundle("other")
        os.replace(other / "heads.onnx", b / "denoiser.onnx")  # replaced by rename: a new file at the path
        ref = Detector.load(env.bundle, backend="ort-cpu", self_check="never")
        same = all(np.array_equal(v, ref.score(x, "all")[k]) for k, v in _scores(det, x).items())
        ref.close()
    yield (
        "security",
        "denoiser.onnx replaced after predict(), then score(x, 'all')",
        "the verified graph runs",
        same,
        ("identical to the untouched bundle" if same else "DIFFERENT scores"),
    )
    b = env.copy_bundle("held2")
    with Detector.load(b, backend="ort-cpu", self_check="never") as det:
        with open(b / "denoiser.onnx", "r+b") as f:  # overwritten in place: the held file itself changes
            f.seek(200)
            f.write(b"\x00" * 64)
        ok, got = api(lambda: _scores(det, x), BundleError, "changed after the bundle was loaded")
    yield "security", "denoiser.onnx overwritten in place after load", "refused in one line, never run", ok, got


def switches(env):
    from dlsr_deploy.errors import BundleError
    from dlsr_deploy.export.publish import publish
    from dlsr_deploy.runtime import Detector

    x = np.load(env.ood_path)["images"][:6]
    a, c = env.copy_bundle("blue"), env.copy_bundle("green")
    _edit(c, lambda d: d["threshold"].update(value=d["threshold"]["value"] * 2))  # another bundle
    _edit(c, lambda d: d["threshold"]["all"].update({d["scores"]["headline"]: d["threshold"]["value"]}))
    link = env.d / "current"
    link.symlink_to(a)
    with Detector.load(link, backend="ort-cpu", self_check="never") as det:
        thr = det.threshold
        tmp = env.d / "current.new"
        tmp.symlink_to(c)
        os.replace(tmp, link)  # blue/green switch
        same = det.threshold == thr and np.array_equal(_scores(det, x)["mse"], _ref_mse(env, x))
    yield (
        "silent",
        "a `current` symlink switched after load",
        "the loaded Detector keeps its own bundle",
        same,
        ("own threshold and scores" if same else "MIXED"),
    )
    d = env.copy_bundle("forced")
    with Detector.load(d, backend="ort-cpu", self_check="never") as det:
        new = env.copy_bundle("forced-new")
        _edit(new, lambda m: m["threshold"].update(center=1.5))
        publish(new, d)  # what dlsr-export --force does once the new bundle is complete
        same = det.center != 1.5 and np.array_equal(_scores(det, x)["mse"], _ref_mse(env, x))
        pickled = pickle.dumps(det)
    yield (
        "silent",
        "dlsr-export --force into a loaded bundle's folder",
        "the Detector keeps scoring its own",
        same,
        ("own scores" if same else "MIXED"),
    )
    ok, got = api(lambda: pickle.loads(pickled), BundleError, "not the bundle this Detector was loaded from")
    yield (
        "silent",
        "a pickled Detector re-opened after the folder was re-exported",
        "refused, not the new bundle",
        ok,
        got,
    )


def _ref_mse(env, x):
    from dlsr_deploy.runtime import Detector

    with Detector.load(env.bundle, backend="ort-cpu", self_check="never") as ref:
        return ref.score(x, "all")["mse"]


def concurrent_loads(env):
    from dlsr_deploy.export.publish import publish
    from dlsr_deploy.manifest import read_manifest

    folder, a, b = env.copy_bundle("swap"), env.copy_bundle("swap-a"), env.copy_bundle("swap-b")
    _edit(b, lambda m: m["threshold"].update(center=2.5))
    digests = {read_manifest(p).data["digest"] for p in (a, b)}
    stop, errors, mixed, n = threading.Event(), [], [], [0]

    def republish():
        i = 0
        while not stop.is_set():
            src = env.d / f"swap-src-{i}"
            shutil.copytree((a, b)[i % 2], src)
            publish(src, folder)
            i += 1

    t = threading.Thread(target=republish)
    t.start()
    try:
        while n[0] < 300:
            n[0] += 1
            try:
                m = read_manifest(folder, hold=True)
                blobs = [m.read_bytes(r) for r in m.files] + [m.read_bytes("golden")]
                if m.data["digest"] not in digests or not blobs:
                    mixed.append(m.data["digest"])
                m.close()
            except Exception as exc:  # noqa: BLE001 - any error here is a failed case
                errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        stop.set()
        t.join()
    ok = not mixed and not errors
    got = f"{n[0]} loads: {len(mixed)} mixed, {len(errors)} errors {errors[:1]}"
    yield "silent", "300 verified loads while the folder is re-published in a loop", "0 mixed, 0 errors", ok, got


def service_head(env):
    import asyncio
    import resource

    from dlsr_deploy.scale.serve import ScoreService, ServiceLimits, default_allowed_hosts

    lim = ServiceLimits(max_images=8, read_timeout_s=30.0, allowed_hosts=default_allowed_hosts("127.0.0.1", 8000))
    svc = ScoreService(str(env.bundle), backend="ort-cpu", limits=lim)
    sent = [0]

    def chunked():
        async def gen():
            block = b"\0" * (1 << 20)
            for _ in range(1024):  # 1 GB, 1 MB a chunk, no Content-Length
                sent[0] += len(block)
                yield block

        return gen()

    host = [(b"host", b"127.0.0.1:8000")]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status, body = asyncio.run(svc.handle("POST", "/score", chunked, None, host))
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    ok = status == 413 and sent[0] <= lim.max_bytes + (2 << 20) and grew < 50
    got = f"{status} after {sent[0] >> 20} MB read; peak RSS +{grew:.0f} MB"
    yield "security", "POST /score: a 1 GB chunked body to a 16 MB limit", "413 on passing it, RSS +<50 MB", ok, got
    cases = [
        ("a 1 MB header", host + [(b"x-big", b"a" * (1 << 20))], 431),
        ("10,000 headers", host + [(b"x-%d" % i, b"1") for i in range(10000)], 431),
        ("Host: evil.example (DNS rebinding)", [(b"host", b"evil.example:8000")], 421),
        ("no Host header", [], 421),
    ]
    for name, headers, want in cases:
        status, body = asyncio.run(svc.handle("GET", "/info", None, None, headers))
        yield "security", f"GET /info with {name}", f"JSON {want}", status == want and "error" in body, f"{status}"
    svc.det.close()


def trusted_everywhere(env):
    d = env.d
    if not (d / "fleet.pub").exists():
        cli("dlsr-keygen", d / "fleet")
    pub = d / "fleet.pub"
    for args in (
        ("dlsr-inspect", env.bundle),
        ("dlsr-check", env.bundle, "--on-target", "--backend", "ort-cpu", "--quiet"),
        ("dlsr-build", env.bundle),
        ("dlsr-serve", env.bundle, "--port", "8991"),
    ):
        yield (
            "security",
            f"{args[0]} --trusted-key on an unsigned bundle",
            "refused",
            *clean_error(*cli(*args, "--trusted-key", pub, timeout=120), "not signed"),
        )
    env_keys = {**os.environ, "DLSR_TRUSTED_KEYS": str(pub)}
    r = subprocess.run(
        [str(Path(sys.executable).parent / "dlsr-score"), str(env.bundle), str(env.imgs), "--quiet"],
        capture_output=True,
        text=True,
        env=env_keys,
        timeout=300,
    )
    yield (
        "security",
        "$DLSR_TRUSTED_KEYS set, unsigned bundle, no flag",
        "refused",
        *clean_error(r.returncode, (r.stderr.strip().splitlines() or [""])[-1], "Traceback" in r.stderr, "not signed"),
    )


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
    code = (
        "import resource, sys\n"
        "from dlsr_deploy.runtime import Detector\n"
        f"det = Detector.load({str(env.bundle)!r}, backend='ort-cpu')\n"
        "try:\n"
        f"    det.predict([{str(p)!r}])\n"
        "    print('scored')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, str(e).splitlines()[0][:100])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
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


def confusing(env):
    import warnings

    from dlsr_deploy.errors import ConfigError
    from dlsr_deploy.runtime import Detector
    from dlsr_deploy.signing import load_signing_key

    d = env.d
    for stem in ("fleet", "other"):
        if not (d / f"{stem}.pub").exists():
            cli("dlsr-keygen", d / stem)
    signed = d / "signed"  # made by the signing group, signed by fleet.key
    both = d / "both.pub"
    both.write_bytes((d / "other.pub").read_bytes() + (d / "fleet.pub").read_bytes())
    ok, got = True, "loaded"
    try:
        Detector.load(signed, backend="ort-cpu", trusted_keys=[both]).close()
        Detector.load(signed, backend="ort-cpu", trusted_keys=(k for k in [d / "fleet.pub"])).close()
    except Exception as exc:  # noqa: BLE001
        ok, got = False, f"{type(exc).__name__}: {exc}"
    yield "silent", "a .pub holding two keys (signer second); trusted_keys as a generator", "both honoured", ok, got
    loose = d / "loose.key"
    loose.write_bytes((d / "fleet.key").read_bytes())
    os.chmod(loose, 0o644)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        load_signing_key(loose)
    yield (
        "security",
        "a signing key readable by other users",
        "used with a warning",
        any("other users" in str(x.message) for x in w),
        f"{len(w)} warning(s)",
    )
    enc = d / "enc.key"
    enc.write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")
    os.chmod(enc, 0o600)
    yield (
        "traceback",
        "an encrypted signing key, no password",
        "one line naming $DLSR_SIGN_PASSWORD",
        *api(lambda: load_signing_key(enc), ConfigError, "DLSR_SIGN_PASSWORD"),
    )
    r = subprocess.run(
        [str(Path(sys.executable).parent / "dlsr-export"), "--model", str(env.run), "--out", str(d / "piped"),
         "--no-verify", "--quiet", "--sign", "/dev/stdin"],
        input=(d / "fleet.key").read_bytes(), capture_output=True, timeout=900,
    )  # fmt: skip
    yield (
        "traceback",
        "dlsr-export --sign /dev/stdin",
        "signed (the pipe read once)",
        (r.returncode == 0),
        f"exit {r.returncode}: {(r.stderr.decode().strip().splitlines() or [''])[-1][:90]}",
    )


def confusing_inputs(env):
    from dlsr_deploy.runtime import Detector

    d = env.d
    code, msg, tb = cli("dlsr-score", env.bundle, env.imgs, "--quiet", "--scores", "")
    yield "silent", "dlsr-score --scores ''", "an error, not the headline", code == 2 and "--scores" in msg, msg[:100]
    out = d / "mse.csv"
    cli("dlsr-score", env.bundle, env.imgs, "--quiet", "--scores", "mse", "--out", out)
    header = out.read_text().splitlines()[0] if out.exists() else ""
    head = Detector.load(env.bundle, backend="ort-cpu", self_check="never")
    name = head.score_name
    head.close()
    yield (
        "silent",
        "dlsr-score --scores mse: whose normalized / is_ood?",
        "the headline's column is in the row",
        (f"score_{name}" in header),
        header[:100],
    )
    np.savez(d / "float.npz", images=np.full((2, 32, 32, 3), 0.5, np.float32))
    np.savez(d / "u16.npz", images=np.full((2, 32, 32, 3), 40000, np.uint16))
    code, msg, tb = cli("dlsr-score", env.bundle, d / "float.npz", d / "u16.npz", "--quiet", "--out", d / "p.csv")
    yield "silent", ".npz packs of float and 16-bit images", "scored like the README says", code == 0, msg[:100]
    odd = d / "odd"
    odd.mkdir(exist_ok=True)
    shutil.copy(env.imgs / "0.png", odd / "noext")
    (odd / "notes.txt").write_text("x")
    code, msg, tb = cli("dlsr-score", env.bundle, odd, "--quiet", "--out", d / "odd.csv")
    rows = (d / "odd.csv").read_text().splitlines()[1:] if (d / "odd.csv").exists() else []
    yield (
        "silent",
        "a folder with an extension-less image and a .txt",
        "a row for the image, the .txt counted",
        (code == 0 and len(rows) == 1 and "noext" in rows[0]),
        f"exit {code}; {len(rows)} row(s)",
    )


def _rss(tag: str) -> tuple:
    """(resident, of which private) bytes of the processes whose command line holds `tag`; the rest
    of the resident pages are shared (Ray's object store is shared memory mapped into each worker)."""
    import psutil

    procs = [p for p in psutil.process_iter(["cmdline"]) if tag in " ".join(p.info["cmdline"] or [])]
    mem = [p.memory_info() for p in procs]
    return sum(m.rss for m in mem), sum(m.rss - m.shared for m in mem)


def chunked_client(port: int, limit: int = 16 << 20, max_growth_mb: float = 50):
    """A real 1 GB chunked POST to dlsr-serve (through Ray Serve's proxy): when the answer comes,
    how much was sent, and how the replica's and the proxy's memory moved."""
    import select
    import socket
    import time

    before = _rss("ServeReplica"), _rss("ProxyActor")
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"POST /score HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nTransfer-Encoding: chunked\r\n\r\n" % port)
    block = b"%x\r\n" % (1 << 20) + b"\0" * (1 << 20) + b"\r\n"
    sent, answer, passed = 0, b"", None
    try:
        for _ in range(1024):
            s.sendall(block)
            sent += 1 << 20
            passed = passed or (time.perf_counter() if sent > limit else None)
            if select.select([s], [], [], 0)[0]:
                answer = s.recv(4096)
                break
        if not answer:
            s.settimeout(30)
            answer = s.recv(4096)
    except OSError as exc:
        answer = answer or f"closed ({exc.__class__.__name__})".encode()
    took = time.perf_counter() - (passed or time.perf_counter())
    s.close()
    time.sleep(3.0)  # what stays resident, not the transient peak of the refused request's messages
    after = _rss("ServeReplica"), _rss("ProxyActor")
    grew = [[(x - y) / 2**20 for x, y in zip(a, b)] for a, b in zip(after, before)]  # [[rss, private]] x2
    ok = (b" 413 " in answer[:20] or answer.startswith(b"closed")) and took < 1.0 and grew[0][1] < max_growth_mb
    return (
        "security",
        "a real 1 GB chunked POST to dlsr-serve --max-bytes 16 MB",
        "413 (or the connection closed) within 1 s of passing the limit; replica private memory +<50 MB "
        "after (+<150 MB for a replica's first large body)",
        ok,
        f"{answer[:12]!r} after {sent >> 20} MB, {took:.2f} s past the limit; replica private +{grew[0][1]:.0f} MB "
        f"(resident +{grew[0][0]:.0f} MB), proxy private +{grew[1][1]:.0f} MB (resident +{grew[1][0]:.0f} MB)",
    )


def more_findings(env):
    """The last findings of the tour: a full-disk export, relative key paths in a pickled Detector, a
    Parquet row whose id is null."""
    from dlsr_deploy.runtime import Detector

    d = env.d
    with _tmpfs(65536) as full:
        if full is None:
            yield "traceback", "dlsr-export onto a full disk", "one line", False, "could not mount a tmpfs (root?)"
        else:
            shutil.copytree(env.bundle, full / "b")
            _fill(full)
            before = {p.name: p.stat().st_size for p in (full / "b").iterdir()}
            code, msg, tb = cli("dlsr-export", "--model", env.run, "--out", full / "b", "--force", "--quiet")
            same = {p.name: p.stat().st_size for p in (full / "b").iterdir()} == before
            left = [p.name for p in full.iterdir() if p.name not in ("b", "filler")]
            yield (
                "traceback",
                "dlsr-export --force onto a full disk",
                "one line, old bundle kept, no partial",
                (code == 1 and not tb and same and not left),
                f"exit {code}: {msg[:90]}; left {left}",
            )
    here = os.getcwd()
    try:
        os.chdir(d)
        det = Detector.load(d / "signed", backend="ort-cpu", trusted_keys=["fleet.pub"])
        blob = pickle.dumps(det)
        det.close()
        os.chdir(env.imgs)
        ok, got = True, "re-opened"
        try:
            pickle.loads(blob).close()
        except Exception as exc:  # noqa: BLE001
            ok, got = False, f"{type(exc).__name__}: {exc}"
    finally:
        os.chdir(here)
    yield "traceback", "a Detector with a relative key path, unpickled in another directory", "re-opens", ok, got
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
    pq.write_table(pa.table({"id": ["a", None], "image": [buf.getvalue()] * 2}), d / "nullid.parquet")
    code, msg, tb = cli("dlsr-score", env.bundle, d / "nullid.parquet", "--quiet", "--out", d / "nullid.csv")
    rows = (d / "nullid.csv").read_text().splitlines()[1:] if (d / "nullid.csv").exists() else []
    yield (
        "silent",
        "a Parquet row whose id is null",
        "named table#ROW, never 'None'",
        (code == 0 and len(rows) == 2 and not any(r.startswith("None,") for r in rows)),
        f"exit {code}; ids {[r.split(',')[0][-20:] for r in rows]}",
    )


GROUPS = [
    open_once,
    switches,
    concurrent_loads,
    service_head,
    trusted_everywhere,
    no_overwrite,
    manifest_fields,
    caches,
    big_image,
    confusing,
    confusing_inputs,
    more_findings,
]
