"""Batch scoring on Ray Data: many images, one row each, exactly once, resumable by shard.

    from dlsr_deploy.scale import score_dataset
    summary = score_dataset("export/c50k-fp32", ["data/lake/**/*.jpg"], "scores/")

The pipeline: the driver lists the inputs (ids only) and cuts them into shards of
`shard_size` → Ray tasks decode and validate the images → an actor pool
(`ray.data.ActorPoolStrategy`) scores them; each actor opens the bundle once, with ONNX
Runtime's threads set to the actor's CPUs → the driver gathers the rows of each shard and
writes `part-NNNNN.parquet` (or .csv) atomically when the shard is complete.

Exactly once: Ray restarts a dead actor and retries its batches; the driver keys rows by input
id, so a retried batch cannot add a row twice, and a shard is written only when every one of
its ids has a row. A job stopped as a whole is re-run with `resume=True`: shards already
written (and whole) are skipped. `_job.json` ties the folder to the bundle and the input list,
so a resume with other inputs or another bundle is refused instead of mixing results.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from dlsr_deploy.errors import DataError
from dlsr_deploy.log import progress

JOB_FILE = "_job.json"
SUMMARY_FILE = "_summary.json"
FORMATS = ("parquet", "csv")


@dataclass
class JobOptions:
    """How the job runs. actors: pool size (default: the cluster's CPUs // cpus_per_actor);
    cpus_per_actor: ONNX Runtime threads per actor (and its Ray CPU reservation);
    gpus_per_actor: > 0 for TensorRT / ORT-CUDA actors."""

    backend: str = "auto"
    batch_size: int = 32
    shard_size: int = 1024
    actors: Optional[int] = None
    cpus_per_actor: float = 2.0
    gpus_per_actor: float = 0.0
    fmt: str = "parquet"
    resume: bool = False
    trusted_keys: Optional[List[str]] = None
    scores: Optional[object] = None  # None = the headline; "all"; or a list of score names


class Scorer:
    """One Ray actor: opens the bundle once and scores decoded batches (rows with an error
    are passed through with empty scores)."""

    def __init__(self, bundle: str, backend: str, threads: int, trusted_keys=None, scores=None):
        from dlsr_deploy.runtime import Detector

        self.det = Detector.load(bundle, backend=backend, threads=threads, trusted_keys=trusted_keys)
        self.scores = self.det.row_scores(scores)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Decoded rows -> id, shard, the requested scores, normalized, is_ood, error."""
        from dlsr_deploy.runtime.scored import ScoredImages

        ok = np.array([e == "" for e in batch["error"]], dtype=bool)
        res = self.det.predict(batch["image"][ok], self.scores) if ok.any() else {}
        cols = ScoredImages.of(self.det, batch["id"], res, self.scores, ok, batch["error"]).columns_dict()
        return {"id": batch["id"], "shard": batch["shard"], **cols, "error": batch["error"]}


def _job_record(bundle_digest: str, items: Dict[str, np.ndarray], opts: JobOptions) -> dict:
    import hashlib

    h = hashlib.sha256()
    for i in items["id"]:
        h.update(str(i).encode() + b"\0")
    return {
        "bundle_digest": bundle_digest,
        "inputs": int(len(items["id"])),
        "inputs_sha256": h.hexdigest(),
        "shard_size": opts.shard_size,
        "format": opts.fmt,
    }


def _shard_path(out: Path, k: int, fmt: str) -> Path:
    return out / f"part-{k:05d}.{fmt}"


def _ids_in(path: Path, fmt: str) -> Optional[List[str]]:
    """The input ids a written shard holds (None when it cannot be read)."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return [str(v) for v in pq.read_table(path, columns=["image"]).column(0).to_pylist()]
        import pyarrow.csv as pcsv

        opts = pcsv.ConvertOptions(column_types={"image": "string"}, include_columns=["image"])
        return [str(v) for v in pcsv.read_csv(path, convert_options=opts).column(0).to_pylist()]
    except Exception:
        return None


def shard_is_whole(path: Path, fmt: str, expected: List[str]) -> bool:
    """A written shard counts as done only when it holds exactly its own ids, each once."""
    if not path.exists():
        return False
    got = _ids_in(path, fmt)
    return got is not None and len(got) == len(expected) and set(got) == set(expected)


def prepare_folder(out: Path, record: dict, expected: List[List[str]], resume: bool) -> List[int]:
    """Check --out and return the shards still to score. A new or empty folder starts a job; a
    folder of this job continues it with resume=True; anything else is refused (nothing of
    the user's is ever deleted: only our own part files and their temporary files)."""
    from dlsr_deploy.io import atomic_write_text

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"out: {out}: expected a folder for the shards, got a file", param="out")
    job = out / JOB_FILE
    if out.is_dir() and any(out.iterdir()):
        if not job.exists():
            raise DataError(
                f"out: {out}: the folder is not empty and holds no batch job; choose a new folder", param="out"
            )
        try:
            old = json.loads(job.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{job}: unreadable job record ({exc}); choose a new folder") from None
        if not resume:
            raise DataError(
                f"out: {out} already holds a batch job; continue it with `resume` or choose a new folder", param="out"
            )
        diff = [k for k in record if old.get(k) != record[k]]
        if diff:
            raise DataError(
                f"out: {out}: the job there differs in {diff} (bundle, inputs or shard size changed); "
                "choose a new folder",
                param="out",
            )
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob(".part-*"):  # temporary files of an interrupted run
        tmp.unlink()
    atomic_write_text(job, json.dumps(record, indent=2) + "\n")
    fmt = record["format"]
    return [k for k, ids in enumerate(expected) if not shard_is_whole(_shard_path(out, k, fmt), fmt, ids)]


def write_shard(path: Path, rows: List[dict], columns: List[str], fmt: str) -> None:
    """One shard, written to a temporary file and renamed (never half-written)."""
    import pyarrow as pa

    from dlsr_deploy.io import atomic_write

    table = pa.table({c: [r[c] for r in rows] for c in columns})
    if fmt == "parquet":
        import pyarrow.parquet as pq

        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    else:
        import pyarrow.csv as pcsv

        atomic_write(path, lambda tmp: pcsv.write_csv(table, tmp))


class ShardCollector:
    """Driver side: rows keyed by id per shard; a shard is written once all of its ids came."""

    def __init__(self, out: Path, todo: List[int], expected: Dict[int, set], columns: List[str], fmt: str):
        self.out, self.fmt, self.columns = out, fmt, columns
        self.score_cols = [c for c in columns if c not in ("image", "normalized", "is_ood", "error")]
        self.expected = expected
        self.rows: Dict[int, Dict[str, dict]] = {k: {} for k in todo}
        self.written: List[int] = []
        self.duplicates = 0
        self.flagged = 0
        self.errors = 0

    def add(self, batch: Dict[str, np.ndarray]) -> None:
        """Take a scored batch; write each shard it completes."""
        from dlsr_deploy.runtime.scored import ScoredImages

        scored = ScoredImages.from_columns(batch, self.score_cols)
        for i in range(len(batch["id"])):
            k = int(batch["shard"][i])
            rows = self.rows.get(k)
            if rows is None or str(batch["id"][i]) not in self.expected[k]:
                raise DataError(f"row for {batch['id'][i]!r} in shard {k}, which is not being scored")
            row = scored.row(i)
            if row["image"] in rows:
                self.duplicates += 1  # a retried batch: the row is already there
                continue
            rows[row["image"]] = row
            self.flagged += bool(row["is_ood"])
            self.errors += bool(row["error"])
            if len(rows) == len(self.expected[k]):
                write_shard(_shard_path(self.out, k, self.fmt), list(rows.values()), self.columns, self.fmt)
                self.written.append(k)
                del self.rows[k]

    def missing(self) -> List[str]:
        """Ids of the shards being scored that have no row yet."""
        return [i for k, rows in self.rows.items() for i in sorted(self.expected[k] - set(rows))]


def _scores_of(m, scores) -> List[str]:
    """The score names a job writes (what Detector.row_scores would give: the headline always)."""
    if scores is None or scores == "headline":
        return [m.threshold.score]
    if scores == "all":
        return list(m.score_names)
    if isinstance(scores, str):
        scores = [scores]
    if scores and m.threshold.score not in scores:
        return _scores_of(m, [*scores, m.threshold.score])
    wanted = [scores] if isinstance(scores, str) else list(scores)
    unknown = [x for x in wanted if x not in m.score_names]
    if unknown or not wanted:
        raise DataError(
            f"scores: expected 'headline', 'all' or names among {m.score_names}, got {wanted}", param="scores"
        )
    return list(dict.fromkeys(wanted))


def _init_ray(address: Optional[str]):
    import ray

    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": progress()}
        ray.init(address=None if address in (None, "", "local") else address, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress()
    return ray


def score_dataset(
    bundle, sources: Sequence[str], out, address: Optional[str] = None, opts: Optional[JobOptions] = None
):
    """Score every input of `sources` with the bundle on a Ray cluster into shard files under
    `out`; returns the job summary (also written to out/_summary.json)."""
    from dlsr_deploy.io import atomic_write_text
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.scale.sources import list_inputs

    opts = opts or JobOptions()
    if opts.fmt not in FORMATS:
        raise DataError(f"format: expected one of {list(FORMATS)}, got {opts.fmt!r}")
    if opts.shard_size < 1 or opts.batch_size < 1:
        raise DataError(f"shard_size and batch_size must be positive, got {opts.shard_size}, {opts.batch_size}")
    m = read_manifest(Path(bundle), trusted_keys=opts.trusted_keys)
    out = Path(out)
    for src in sources:  # shards written into an input folder would become inputs of the next run
        p = Path(src).resolve()
        if p.is_dir() and (p == out.resolve() or p in out.resolve().parents):
            raise DataError(f"out: {out} lies inside the input folder {src}; choose a folder outside it", param="out")
    items = list_inputs(sources)
    n = len(items["id"])
    shard = np.arange(n) // opts.shard_size
    n_shards = int(shard[-1]) + 1
    per_shard = [[str(i) for i in items["id"][shard == k]] for k in range(n_shards)]
    todo = prepare_folder(out, _job_record(m.data["digest"], items, opts), per_shard, opts.resume)
    columns = ["image", *[m.output_name(x) for x in _scores_of(m, opts.scores)], "normalized", "is_ood", "error"]
    expected = {k: set(per_shard[k]) for k in todo}
    collector = ShardCollector(out, todo, expected, columns, opts.fmt)
    ray = _init_ray(address) if todo else None
    t0 = time.perf_counter()  # from here: actors start, open the bundle, score; cluster start excluded
    if todo:
        _run_pipeline(ray, bundle, m, items, shard, todo, collector, opts)
    missing = collector.missing()
    if missing:
        raise DataError(f"{len(missing)} input(s) got no row (first: {missing[:3]}); continue the job with `resume`")
    sec = time.perf_counter() - t0
    scored = sum(len(expected[k]) for k in todo)
    summary = {
        "bundle": str(bundle),
        "inputs": n,
        "shards": n_shards,
        "shards_skipped": n_shards - len(todo),
        "scored_now": scored,
        "flagged_ood_now": collector.flagged,
        "unreadable_now": collector.errors,
        "duplicate_rows_dropped": collector.duplicates,
        "seconds": sec,
        "images_per_s": scored / sec if sec > 0 else None,
        "options": asdict(opts),
        "out": str(out),
    }
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    summary["line"] = summary_line(summary, m)  # the one line the job ends with (the CLI prints it)
    return summary


def summary_line(s: dict, m) -> str:
    """The one line a job ends with."""
    rate = f" at {s['images_per_s']:.1f} images/s" if s["images_per_s"] else ""
    return (
        f"{s['scored_now']} of {s['inputs']} inputs scored now{rate} ({s['shards_skipped']} of {s['shards']} shards "
        f"were already written); {s['flagged_ood_now']} flagged OOD, {s['unreadable_now']} unreadable (rows with an "
        f"error); threshold {m.threshold.score} > {m.threshold.value:.6g}; shards in {s['out']}"
    )


def _run_pipeline(ray, bundle, m, items, shard, todo, collector, opts: JobOptions) -> None:
    from dlsr_deploy.scale.sources import decode_batch

    keep = np.isin(shard, todo)
    rows = [
        {"id": i, "kind": k, "path": p, "index": int(j), "error": e, "shard": int(s)}
        for i, k, p, j, e, s in zip(
            items["id"][keep],
            items["kind"][keep],
            items["path"][keep],
            items["index"][keep],
            items["error"][keep],
            shard[keep],
        )
    ]
    cpus = float(ray.cluster_resources().get("CPU", 1))
    actors = opts.actors or max(1, int(cpus // max(opts.cpus_per_actor, 1)))
    threads = max(1, int(round(opts.cpus_per_actor)))
    _check_room(ray, actor_cpus(opts), opts.gpus_per_actor)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // opts.batch_size, 4 * len(todo))))
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"size": m.native_size},
        batch_size=opts.batch_size,
        batch_format="numpy",
        num_cpus=DECODE_CPUS,
    )
    ds = ds.map_batches(
        Scorer,
        fn_constructor_kwargs={
            "bundle": str(Path(bundle).resolve()),
            "backend": opts.backend,
            "threads": threads,
            "trusted_keys": opts.trusted_keys,
            "scores": opts.scores,
        },
        batch_size=opts.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        # Ray's scheduler reserves CPUs; the decode tasks keep a share so they can run beside
        # a pool that holds every core (ORT still runs `threads` threads per actor)
        num_cpus=actor_cpus(opts),
        num_gpus=opts.gpus_per_actor or None,
        # Ray Data restarts a dead actor and retries its batches by default (max_restarts and
        # max_task_retries -1); the collector drops any row that comes twice
    )
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None, prefetch_batches=0):
        collector.add(batch)


# Ray CPUs a decode task reserves (decoding a small image costs far less than scoring it)
DECODE_CPUS = 0.25


def actor_cpus(opts: JobOptions) -> float:
    """Ray CPUs one scoring actor reserves: its threads minus the decode tasks' share."""
    return max(opts.cpus_per_actor - DECODE_CPUS, 0.1)


def _check_room(ray, cpus: float, gpus: float, wait_s: float = 30.0) -> None:
    """Fail, not hang: Ray Data waits forever for an actor the cluster has no room for. Too small
    a cluster is an error at once; a busy one gets `wait_s` to free room (a previous job's actors
    take a moment to go) before the error."""

    def short(res):
        return float(res.get("CPU", 0.0)) + 1e-9 < cpus + DECODE_CPUS or float(res.get("GPU", 0.0)) + 1e-9 < gpus

    def error(res, what):
        return DataError(
            f"the Ray cluster has {float(res.get('CPU', 0.0)):g} CPU(s) and {float(res.get('GPU', 0.0)):g} GPU(s) "
            f"{what}, but one scoring actor needs {cpus:g} CPU(s) + {DECODE_CPUS:g} for decoding and {gpus:g} GPU(s); "
            "lower --cpus-per-actor / --gpus-per-actor" + (" or free the cluster" if what == "free" else "")
        )

    total = ray.cluster_resources()
    if short(total):
        raise error(total, "in all")
    deadline = time.monotonic() + wait_s
    while short(free := ray.available_resources()):
        if time.monotonic() > deadline:
            raise error(free, "free")
        time.sleep(0.5)
