"""The confusing cases and later findings."""

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from cases_files import _fill, _tmpfs
from tour import api, cli


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
    # the property is that the body stops being read long before its end (1,024 MB), not a latency:
    # on a loaded 2-core machine the close came 0.4-1.1 s (144-231 MB) past the limit
    stopped = sent < 512 << 20 and took < 10.0
    ok = (b" 413 " in answer[:20] or answer.startswith(b"closed")) and stopped and grew[0][1] < max_growth_mb
    return (
        "security",
        "a real 1 GB chunked POST to dlsr-serve --max-bytes 16 MB",
        "413 (or the connection closed) before half of the 1 GB is sent (and within 10 s of passing the limit); "
        "replica private memory +<50 MB after (+<150 MB for a replica's first large body)",
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


GROUPS = [confusing, confusing_inputs, more_findings]
