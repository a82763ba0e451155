"""dlsr-score, dlsr-serve, dlsr-bench: running bundles (no torch in score and serve)."""

from __future__ import annotations

from pathlib import Path

import click

from dlsr_deploy.cli.common import (
    CONTEXT,
    backend_option,
    command_line,
    friendly,
    keys_from,
    parse_ood,
    parse_scores,
    scores_option,
    trusted_key_option,
)


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@backend_option()
@scores_option()
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write per-input results here: JSON when the name ends in .json (any case), else CSV; '-' or none = CSV on stdout. A regular file is replaced atomically, a symlink is written through, a device or pipe is written to; an input is never overwritten, and an unwritable destination fails before any scoring. With --ray: a new (or empty) folder for the shard files, or the folder of the job to --resume.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write an HTML page here (one self-contained file): the share over the threshold, the scores against the bundle's ID calibration scores, and the most OOD images first.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Images decoded and scored per call (memory stays bounded by it).")
@click.option("--strict-providers", is_flag=True, help="Fail instead of falling back to CPU when the requested ONNX Runtime provider is not used.")
@click.option("--no-resize", is_flag=True, help="Refuse images whose size differs from the bundle's instead of resizing them.")
@trusted_key_option()
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]", help="Score on a Ray cluster (pip install 'dlsr-deploy[ray]'): a local one when no ADDRESS follows, else 'auto' or ray://HOST:10001; --out names a folder of shard files.")
@click.option("--resume", is_flag=True, help="With --ray: continue the job in --out, skipping shards already written whole (each shard's ids are checked against the input list).")
@click.option("--shard-size", type=click.IntRange(min=1), default=1024, show_default=True, help="With --ray: inputs per output shard (the unit of --resume).")
@click.option("--actors", type=click.IntRange(min=1), default=None, help="With --ray: scoring actors (default: the cluster's CPUs // --cpus-per-actor).")
@click.option("--cpus-per-actor", type=click.FloatRange(min=0.5), default=2.0, show_default=True, help="With --ray: ONNX Runtime threads per actor (ORT ignores OMP_NUM_THREADS).")
@click.option("--gpus-per-actor", type=click.FloatRange(min=0.0), default=0.0, show_default=True, help="With --ray: GPUs per actor, for --backend trt / ort-cuda.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True, help="With --ray: shard file format.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--verbose", is_flag=True, help="Debug messages too (the dlsr_deploy logger at DEBUG).")
@friendly
def score(bundle, inputs, backend, scores, out, report, batch_size, strict_providers, no_resize, trusted_keys, ray_address, resume, shard_size, actors, cpus_per_actor, gpus_per_actor, fmt, quiet):
    """Score images with an exported bundle, without torch. INPUTS are image files, folders
    (recursive), globs, .npz packs, .parquet tables of image bytes, CIFAR folders or SVHN .mat
    files (the same rules as every command). Writes one row per input, in input order: the
    requested scores (default: the headline), the normalised score (1.0 = threshold) and the ID/OOD
    decision (higher score = more OOD); an unreadable input gets a row with its error.

    With --ray the same rows come from a Ray Data pipeline (decode in tasks, an actor pool that
    opens the bundle once per actor) into Parquet/CSV shards, exactly once even when a worker
    dies; --resume continues an interrupted job."""
    keys = keys_from(trusted_keys)
    if out is not None:  # never over the bundle, an input or a key (before any work)
        from dlsr_deploy.paths import refuse_overwrite

        refuse_overwrite(out, "out", inputs if ray_address is None else (), [bundle], list(trusted_keys))
    if report is not None:
        from dlsr_deploy.paths import refuse_overwrite

        refuse_overwrite(report, "report", inputs, [bundle], list(trusted_keys))
        if ray_address is not None:
            raise click.UsageError("--report is for a single-process run (not --ray)")
        if out is not None and Path(out).resolve() == Path(report).resolve():
            raise click.UsageError("--report and --out name the same file; give the report its own .html name")
    wanted = parse_scores(scores)
    if ray_address is None:
        if resume:
            raise click.UsageError("--resume needs --ray (a single-process run has no shards to resume)")
        from dlsr_deploy.cli.score_job import score_inputs

        score_inputs(bundle, inputs, backend=backend, out=out, batch_size=batch_size, strict=strict_providers, resize=not no_resize, trusted_keys=keys, scores=wanted, report=report)
        return
    if ray_address != "local" and Path(ray_address).exists():  # `--ray images/`: an input, not an address
        inputs, ray_address = (*inputs, ray_address), "local"
    if out is None or str(out) == "-":
        raise click.UsageError("--ray writes shard files: give --out FOLDER")
    from dlsr_deploy.scale.batch import JobOptions, score_dataset

    opts = JobOptions(backend=backend, batch_size=batch_size, shard_size=shard_size, actors=actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, fmt=fmt, resume=resume, trusted_keys=keys, scores=wanted)
    summary = score_dataset(bundle, inputs, out, address=ray_address, opts=opts)
    click.echo(summary["line"], err=True)  # the one line a job ends with, --quiet or not


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="Serve replicas (each opens the bundle once).")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True, help="Most images one replica batches into one backend call (@serve.batch); also the most images one request may carry (more: 413).")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0.0), default=5.0, show_default=True, help="How long a replica waits for a batch to fill. 5 keeps one client's latency low; with --ingress haproxy, 20 reached 91 % of in-process batch-32 throughput at 32 clients on 2 cores (README).")
@click.option("--cpus-per-replica", type=click.FloatRange(min=0.5), default=1.0, show_default=True, help="Ray CPUs per replica; also its ONNX Runtime threads unless --threads is given.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads per replica.")
@backend_option()
@scores_option()
@click.option("--max-bytes", type=click.IntRange(min=1), default=16 << 20, show_default=True, help="Largest request body; larger ones get 413 (checked on Content-Length before the body is read, and on the bytes read).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None, help="Largest decoded image, in pixels, checked from the image header before decoding (413). Default: 4096 x 4096, or 256 x the bundle's native size squared if larger.")
@click.option("--read-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds a client has to send its whole body (408 after that): a slow or lying client cannot hold a connection.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface the HTTP service listens on. Ray's own ports (GCS, raylet, workers, agents) listen on every interface whatever --host says (measured with Ray 2.60, README 'Trust'); Ray's token authentication, on by default, guards them: firewall them on an untrusted network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="HTTP port.")
@click.option("--ingress", type=click.Choice(["proxy", "haproxy"]), default="proxy", show_default=True, help="HTTP ingress: Serve's Python proxy on --host, or Ray's HAProxy ingress (about 1.8x the throughput at 32 clients here; it binds the replicas' HTTP ports on every interface). Set before Ray starts; on an existing cluster set RAY_SERVE_ENABLE_HA_PROXY there.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS", help="Join this Ray cluster ('auto', ray://HOST:10001) instead of starting a local one.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, help="Host header values the service answers (repeatable; others get 421, which stops DNS rebinding). Default: localhost, 127.0.0.1, ::1 and --host, each with or without the port.")
@click.option("--max-header-bytes", type=click.IntRange(min=256), default=16384, show_default=True, help="Largest request head (all header names and values together); larger gets 431.")
@trusted_key_option()
@friendly
def serve(bundle, replicas, max_batch, batch_wait_ms, cpus_per_replica, threads, backend, scores, max_bytes, max_pixels, read_timeout, host, port, ingress, ray_address, allowed_hosts, max_header_bytes, trusted_keys):
    """Serve a bundle over HTTP on Ray Serve, with dynamic batching. POST /score takes one
    PNG/JPEG (or a .npy batch of at most --max-batch images) and answers JSON with score,
    normalized and is_ood (and the --scores asked for); GET / is a page to try an image on (drop
    it, see the score on a gauge with the threshold and the decision), GET /metrics is Prometheus
    text (requests by status, latency and batch-size histograms, images scored and flagged);
    GET /healthz, /info and /stats. Every
    error is a JSON 4xx/5xx with a one-line reason. Runs until Ctrl-C."""
    from dlsr_deploy.scale.serve import ServiceLimits, default_allowed_hosts, run_service

    hosts = tuple(allowed_hosts) or default_allowed_hosts(host, port)
    limits = ServiceLimits(max_bytes=max_bytes, max_pixels=max_pixels, max_images=max_batch, read_timeout_s=read_timeout, max_header_bytes=max_header_bytes, allowed_hosts=hosts)
    run_service(bundle, replicas=replicas, max_batch=max_batch, batch_wait_ms=batch_wait_ms, cpus_per_replica=cpus_per_replica, threads=threads, backend=backend, limits=limits, scores=parse_scores(scores), host=host, port=port, address=ray_address, ingress=ingress, trusted_keys=keys_from(trusted_keys))


@click.command(context_settings=CONTEXT)
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--data", required=True, help="ID images (timing uses these; AUROC uses them as the ID side).")
@click.option("--ood", multiple=True, help="OOD set for the AUROC column, as PATH or NAME=PATH (repeatable).")
@click.option("--n-eval", type=click.IntRange(min=2), default=500, show_default=True, help="Images per set for the accuracy columns (evenly spaced over each set).")
@click.option("--batch", "batch_sizes", type=click.IntRange(min=1), multiple=True, default=(1, 8, 32, 128), show_default=True, help="Batch sizes (repeatable).")
@click.option("--backend", "backends", multiple=True, help="Runtime backends to time (default: every available one); eager FP32 always runs.")
@click.option("--paths", default="headline,all", show_default=True, help="Scoring paths to time, comma-separated: 'headline' (the graphs the decision needs) and/or 'all' (every score).")
@click.option("--warmup", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Warm-up seconds per configuration.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="Interleaved timing rounds: each round times every backend in turn for 1/ROUNDS of the warm-up and duration.")
@click.option("--min-duration", type=click.FloatRange(min=0), default=3.0, show_default=True, help="Minimum measured seconds per configuration.")
@click.option("--min-iters", type=click.IntRange(min=1), default=5, show_default=True, help="Minimum measured calls per configuration.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads for torch and ONNX Runtime (default: library default).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-results"), show_default=True, help="Report folder (created; in the working directory unless a path is given).")
@click.option("--stem", default="bench", show_default=True, help="Output names: STEM.json (raw timings), STEM.md, STEM.png.")
@click.option("--peers", is_flag=True, help="Also time what a user gets without this toolkit: torch.compile of the eager pipeline (compile time reported apart) and a plain torch.onnx.export of the eager modules on ONNX Runtime / OpenVINO with their default settings.")
@click.option("--quiet", is_flag=True, help="No progress bar or table.")
@click.option("--verbose", is_flag=True, help="Debug messages too (the dlsr_deploy logger at DEBUG).")
@friendly
def bench(bundles, data, ood, n_eval, batch_sizes, backends, paths, warmup, rounds, min_duration, min_iters, threads, out_dir, stem, peers, quiet):
    """Latency and throughput of PyTorch eager FP32 (baseline), ONNX Runtime, OpenVINO and
    TensorRT on the same images in one process, per scoring path (headline only / every score),
    with AUROC (of each bundle's headline score) and the score error vs eager in the same row.
    Several BUNDLES (e.g. K=1,2,3 or FP32/FP16) give an accuracy-vs-latency sweep. Unavailable
    backends are listed with the reason."""
    from dlsr_deploy.bench import report
    from dlsr_deploy.bench.harness import BenchRequest, run_bench
    from dlsr_deploy.bench.timing import TimingSettings

    wanted = [p.strip() for p in paths.split(",") if p.strip()]
    if not wanted or any(p not in ("headline", "all") for p in wanted):
        raise click.BadParameter(f"expected 'headline' and/or 'all', got {paths!r}", param_hint="--paths")
    timing = TimingSettings(warmup_s=warmup, min_duration=min_duration, min_iters=min_iters, rounds=rounds)
    req = BenchRequest(bundles=list(bundles), data=data, ood=parse_ood(ood), n_eval=n_eval, batch_sizes=tuple(batch_sizes),
                       backends=list(backends) or None, paths=tuple(wanted), timing=timing, threads=threads, peers=peers)
    res = run_bench(req)
    written = report.write(res, out_dir, stem, command_line())
    if not quiet:
        click.echo(report.markdown(res, command_line()))
        click.echo("wrote " + ", ".join(str(p) for p in written))
