"""Load test of `dlsr-serve` (Ray Serve, dynamic batching) on this machine (issue 12).

    python -m benchmarks serve_load export/c50k-fp32 --ingress proxy
    python -m benchmarks serve_load export/c50k-fp32 --ingress haproxy

C concurrent clients (C in 1, 8, 32) each send one PNG per request, back to back, for a fixed
duration against the service (one replica holding every core, --max-batch 32); reported:
throughput, p50/p95/p99 latency, errors and lost requests (no answer within the timeout). The
same images through an in-process `Detector` at batch 1 and 32 give the cost of the service
layer. A last run kills the replica's process mid-load and reports what the clients saw.
Writes benchmarks/results/serve_load_<ingress>.{json,md,png}.
"""

import argparse
import asyncio
import io
import json
import os
import signal
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import machine
from dlsr_deploy.io import atomic_write_text

OUT = Path(__file__).resolve().parent / "results"
PORT = 8477


def _pngs(images):
    from PIL import Image

    out = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


async def _client(session, bodies, k, until, rec, timeout):
    import aiohttp

    i = k
    while time.perf_counter() < until:
        t = time.perf_counter()
        try:
            async with session.post(
                f"http://127.0.0.1:{PORT}/score",
                data=bodies[i % len(bodies)],
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as r:
                await r.read()
                rec.append((t, time.perf_counter() - t, r.status))
        except asyncio.TimeoutError:
            rec.append((t, timeout, "timeout"))
        except aiohttp.ClientError as exc:
            rec.append((t, time.perf_counter() - t, type(exc).__name__))
            await asyncio.sleep(0.05)
        i += 1


async def _load(bodies, clients, seconds, timeout=30.0, kill_after=None):
    import aiohttp

    rec = []
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as session:
        until = time.perf_counter() + seconds
        start = time.perf_counter()
        tasks = [asyncio.create_task(_client(session, bodies, k, until, rec, timeout)) for k in range(clients)]
        killed = None
        if kill_after is not None:
            await asyncio.sleep(kill_after)
            killed = _kill_replica()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    return rec, wall, killed


def _replica_pid():
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and b"ServeReplica:dlsr" in cmd:
            return int(proc.name)
    return None


def _kill_replica():
    pid = _replica_pid()
    if pid is None:
        return None
    os.kill(pid, signal.SIGKILL)
    return {"pid": pid, "at": time.perf_counter()}


def _summary(rec, wall):
    ok = [lat for _, lat, st in rec if st == 200]
    errors = {}
    for _, _, st in rec:
        if st != 200:
            errors[str(st)] = errors.get(str(st), 0) + 1
    q = np.percentile(ok, [50, 95, 99]) * 1e3 if ok else [None] * 3
    return {
        "requests": len(rec),
        "ok": len(ok),
        "errors": errors,
        "lost": errors.get("timeout", 0),
        "throughput": len(ok) / wall,
        "p50_ms": q[0],
        "p95_ms": q[1],
        "p99_ms": q[2],
        "max_ms": max(ok) * 1e3 if ok else None,
    }


def _in_process(bundle, images, threads):
    from dlsr_deploy.runtime import Detector

    out = {}
    with Detector.load(bundle, backend="ort-cpu", threads=threads) as det:
        det.predict(images[:32])
        for b in (1, 32):
            times = []
            end = time.perf_counter() + 8
            i = 0
            while time.perf_counter() < end:
                x = images[(i * b) % 480 : (i * b) % 480 + b]
                t = time.perf_counter()
                det.predict(x)
                times.append(time.perf_counter() - t)
                i += 1
            out[f"batch{b}"] = {"images_per_s": b * len(times) / sum(times), "p50_ms": statistics.median(times) * 1e3}
    return out


def _start(bundle, max_batch, wait_ms, cpus, ingress):
    from dlsr_deploy.scale.serve import set_ingress

    set_ingress(ingress)
    import ray
    from ray import serve

    from dlsr_deploy.scale.serve import build_app

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    app = build_app(bundle, max_batch=max_batch, batch_wait_ms=wait_ms, cpus_per_replica=cpus, backend="ort-cpu")
    serve.run(app, name="dlsr", route_prefix="/")


def _kill_run(bodies, clients, seconds, kill_after):
    rec, wall, killed = asyncio.run(_load(bodies, clients, seconds, kill_after=kill_after))
    s = _summary(rec, wall)
    if killed:
        after = [(t, lat, st) for t, lat, st in rec if t + lat >= killed["at"]]
        first_ok = min((t + lat for t, lat, st in after if st == 200 and t >= killed["at"]), default=None)
        s["killed_pid"] = killed["pid"]
        s["failed_after_kill"] = sum(1 for _, _, st in after if st != 200)
        s["recovered_after_s"] = None if first_ok is None else first_ok - killed["at"]
        s["status_after_kill"] = sorted({str(st) for _, _, st in after})
    return s


def _plot(res, stem):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = [r["clients"] for r in res["runs"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for q in ("p50", "p95", "p99"):
        ax.plot(cs, [r[f"{q}_ms"] for r in res["runs"]], marker="o", label=q)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("latency (ms)")
    ax2 = ax.twinx()
    ax2.plot(cs, [r["throughput"] for r in res["runs"]], "k--", marker="s", label="images/s")
    ax2.set_ylabel("images/s")
    ax.legend(loc="upper left")
    ax2.legend(loc="lower right")
    ax.set_title(f"dlsr-serve on Ray Serve ({res['settings']['ingress']} ingress), one replica")
    fig.tight_layout()
    fig.savefig(OUT / f"{stem}.png", dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", default="../shared/data/cifar10_test.npz")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--batch-wait-ms", type=float, default=5)
    ap.add_argument("--ingress", choices=["proxy", "haproxy"], default="proxy")
    a = ap.parse_args()
    stem = f"serve_load_{a.ingress}" + (f"_wait{a.batch_wait_ms:g}ms" if a.batch_wait_ms != 5 else "")
    cpus = os.cpu_count()
    images = np.load(a.data)["images"][:512]
    bodies = _pngs(images)
    res = {
        "bundle": a.bundle,
        "cpus": cpus,
        "machine": machine(),
        "settings": {
            "ingress": a.ingress,
            "replicas": 1,
            "cpus_per_replica": cpus,
            "max_batch": a.max_batch,
            "batch_wait_ms": a.batch_wait_ms,
        },
        "seconds": a.seconds,
        "in_process": _in_process(a.bundle, images, cpus),
        "runs": [],
    }
    print(json.dumps(res["in_process"]), flush=True)
    _start(a.bundle, a.max_batch, a.batch_wait_ms, cpus, a.ingress)
    asyncio.run(_load(bodies, 8, 3))  # warm-up
    for c in (1, 8, 32):
        rec, wall, _ = asyncio.run(_load(bodies, c, a.seconds))
        res["runs"].append({"clients": c, **_summary(rec, wall)})
        print(json.dumps(res["runs"][-1]), flush=True)
    import urllib.request

    res["batch_sizes"] = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/stats").read())["batch_sizes"]
    res["kill"] = {"clients": 32, **_kill_run(bodies, 32, a.seconds + 10, kill_after=5)}
    print(json.dumps(res["kill"]), flush=True)
    top = res["runs"][-1]
    ref = res["in_process"]["batch32"]["images_per_s"]
    res["targets"] = {
        "throughput_vs_in_process_b32": top["throughput"] / ref,
        "p99_over_p50": top["p99_ms"] / top["p50_ms"],
        "errors_without_kill": sum(sum(r["errors"].values()) for r in res["runs"]),
    }
    OUT.mkdir(exist_ok=True)
    atomic_write_text(OUT / f"{stem}.json", json.dumps(res, indent=2, default=float) + "\n")
    _plot(res, stem)
    atomic_write_text(OUT / f"{stem}.md", _markdown(res, a) + "\n")
    print(_markdown(res, a))


def _markdown(res, a):
    ip = res["in_process"]
    t = res["targets"]
    k = res["kill"]
    lines = [
        f"# `dlsr-serve --ingress {a.ingress}` load test (`python -m benchmarks serve_load --ingress {a.ingress}`)",
        "",
        f"Bundle `{res['bundle']}` on ORT CPU FP32, one replica with {res['cpus']} threads, `--max-batch "
        f"{a.max_batch} --batch-wait-ms {a.batch_wait_ms:g}`; clients in the same machine (aiohttp), one 32x32 PNG "
        f"per request, {res['seconds']:g} s per level. Machine: {res['cpus']} CPUs, {res['machine']}.",
        "",
        "| clients | images/s | p50 | p95 | p99 | errors | lost |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['clients']} | {r['throughput']:.1f} | {r['p50_ms']:.1f} ms | {r['p95_ms']:.1f} ms | "
            f"{r['p99_ms']:.1f} ms | {sum(r['errors'].values())} | {r['lost']} |"
        )
    lines += [
        f"| in-process `Detector`, batch 1 | {ip['batch1']['images_per_s']:.1f} | {ip['batch1']['p50_ms']:.1f} ms | "
        "- | - | - | - |",
        f"| in-process `Detector`, batch 32 | {ip['batch32']['images_per_s']:.1f} | {ip['batch32']['p50_ms']:.1f} ms "
        "(per batch) | - | - | - | - |",
        "",
        f"At 32 clients: {t['throughput_vs_in_process_b32']:.1%} of the in-process batch-32 throughput, p99/p50 = "
        f"{t['p99_over_p50']:.2f}, {t['errors_without_kill']} errors over all runs without a kill. Batch sizes the "
        f"replica ran (requests per batch: count): {res['batch_sizes']}.",
        "",
        f"Replica killed (SIGKILL) 5 s into a {res['seconds'] + 10:g} s run at 32 clients: {k['ok']} answered, "
        f"{k.get('failed_after_kill')} failed after the kill with status {k.get('status_after_kill')}, "
        f"{k['lost']} lost (no answer within 30 s); first answer after the kill "
        + (f"{k['recovered_after_s']:.1f} s later." if k.get("recovered_after_s") is not None else "never came."),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
