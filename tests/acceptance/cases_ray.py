"""Ray Data resume and a real dlsr-serve on loopback."""

import time

from tour import api


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
    serve_bin = str(__import__("tour").BIN / "dlsr-serve")
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
        from cases_findings import chunked_client

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
        subprocess.run([str(__import__("tour").BIN / "ray"), "stop", "--force"], capture_output=True)


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


GROUPS = [ray_resume, serve_ray]
