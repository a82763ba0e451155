"""Loading a bundle: opened once, switches, concurrency, trusted keys."""

import os
import pickle
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
from tour import _edit, api, clean_error, cli


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


GROUPS = [open_once, switches, concurrent_loads, service_head, trusted_everywhere]
