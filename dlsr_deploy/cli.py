"""Command-line entry points. Heavy modules are imported inside each command, so
`--help` is instant and a missing extra says which one to install."""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path

import click

from dlsr_deploy.config import BACKBONES
from dlsr_deploy.errors import DLSRError
from dlsr_deploy.runtime.backend import BACKENDS as ENGINE_BACKENDS


def _friendly(fn):
    """Turn DLSRError (and a missing optional package) into one line on stderr, exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DLSRError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except ModuleNotFoundError as exc:
            extra = {
                "torch": "train",
                "onnx": "train",
                "onnxruntime": "cpu",
                "tensorrt": "trt",
                "sklearn": "demo",
                "skimage": "demo",
                "safetensors": "train",
                "matplotlib": "train",
            }.get((exc.name or "").split(".")[0])
            if extra is None:
                raise
            click.echo(
                f"error: the package '{exc.name}' is missing; install it with `pip install 'dlsr-deploy[{extra}]'`",
                err=True,
            )
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name] + sys.argv[1:])


_feature_opts = [
    click.option("--backbone", type=click.Choice(list(BACKBONES)), default="efficientnet-lite0", show_default=True, help="Frozen ImageNet backbone. lite0 weights ship with the package; B4 / ResNet-50 need --weights or a network."),
    click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Backbone weights file (lukemelas format for EfficientNet, torchvision format for ResNet-50). Published file names are sha256-checked."),
    click.option("--input-size", type=int, default=224, show_default=True, help="Images are resized (bilinear) to this square size before the backbone."),
    click.option("--native-size", type=int, default=32, show_default=True, help="Every image (ID and OOD) is first brought to this size (centre crop + bilinear), so all sets reach the backbone alike; 0 keeps the source size."),
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where backbone features are cached (default: $DLSR_CACHE or ~/.cache/dlsr-deploy/features)."),
    click.option("--limit", type=int, default=None, help="Use only the first N images of each set (quick runs)."),
    click.option("--quiet", is_flag=True, help="No progress bars or tables (for CI)."),
]


def _fields(cls, options: dict) -> dict:
    """The options that are fields of the dataclass `cls` (click names them alike)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in options.items() if k in names}


def _apply(opts):
    def deco(fn):
        for o in reversed(opts):
            fn = o(fn)
        return fn

    return deco


# scoring options shared by dlsr-eval and dlsr-export (--t-start / --steps differ: eval sweeps t_start)
_score_opts = [
    click.option("--eta", type=float, default=0.0, show_default=True, help="DDIM eta (0 = deterministic given the stored noise, which is a constant of the bundle)."),
    click.option("--n-noise", type=int, default=1, show_default=True, help="Stored noise draws whose scores are averaged."),
    click.option("--noise-seed", type=int, default=0, show_default=True, help="Seed of the stored noise."),
    click.option("--mode", type=click.Choice(["ddim", "paper"]), default="ddim", show_default=True, help="ddim: corrected few-step DDIM returning x0_hat; paper: the official procedure (eta=1, 3 calls from t=3, off-by-one coefficients)."),
    click.option("--mfsim-skip-first", is_flag=True, help="MFsim over layers 2.. as the official code (default: all layers, as the paper)."),
]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--data", required=True, multiple=True, help="In-distribution training images: a .npz (images uint8 NxHxWx3), a folder of .npz packs, an image folder, a CIFAR-10/100 pickle folder, an SVHN .mat, or demo:id. Repeat to train on several sources.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory: config.json, model.safetensors (EMA), model_first_epoch.safetensors, checkpoints/, train_log.csv.")
@_apply(_feature_opts)
@click.option("--preset", type=click.Choice(["paper", "small"]), default="paper", show_default=True, help="LFDN size: paper = width 2D, 16 blocks; small = width 128, 2 blocks (tests).")
@click.option("--width", type=int, default=None, help="Override the LFDN residual width.")
@click.option("--blocks", type=int, default=None, help="Override the number of LFDN ResBlocks.")
@click.option("--epochs", type=int, default=150, show_default=True, help="Training epochs over the cached features.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Training batch size.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="AdamW learning rate (constant).")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True, help="AdamW weight decay.")
@click.option("--ema-decay", type=float, default=0.9999, show_default=True, help="EMA decay (with warm-up (1+n)/(10+n)); the EMA weights are what is saved and scored.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for initialisation, batches, timesteps and noise.")
@click.option("--checkpoint-every", type=int, default=5, show_default=True, help="Write a resumable checkpoint every N epochs (atomically).")
@click.option("--patience", type=int, default=10, show_default=True, help="Early stopping: stop after N epochs without a lower held-out ID loss; the saved model is the EMA of the best epoch (0 = train all epochs, still keeping the best).")
@click.option("--holdout", type=float, default=0.1, show_default=True, help="Fraction of the ID images kept out of training for threshold calibration (holdout_z0.npy).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last checkpoint.")
@click.option("--flip", is_flag=True, help="Add each training image's horizontal flip as an extra training vector (held-out images and their flips stay out of training).")
@click.option("--feature-engine", type=click.Choice(["eager", "ort"]), default="eager", show_default=True, help="What computes backbone features for the cache: PyTorch eager, or the exported FP32 backbone graph on ONNX Runtime (about 4x faster on CPU; used only after its z0 match eager to 1e-4 on the first 32 images, else eager runs).")
@_friendly
def train(**o):
    """Train the DLSR denoiser (LFDN) on unlabeled in-distribution images.

    Backbone features are computed once and cached; training then runs on the cached
    z0 vectors. After training, the density heads (Gaussians on the same z0) are fitted on
    the training z0 and stored beside the model. Higher scores later mean more OOD.
    """
    from dlsr_deploy.config import FeatureConfig, TrainConfig
    from dlsr_deploy.pipeline import run_train

    fcfg = FeatureConfig(**{**_fields(FeatureConfig, o), "native_size": o["native_size"] or None})
    tcfg = TrainConfig(**{**_fields(TrainConfig, o), "patience": (o["patience"] or None) if o["holdout"] > 0 else None})
    keys = ("preset", "width", "blocks", "holdout", "resume", "limit", "cache_dir", "quiet", "flip", "feature_engine")
    run_train(list(o["data"]), o["out"], fcfg, tcfg=tcfg, **{k: o[k] for k in keys})


def _parse_ood(values):
    out = []
    for v in values:
        if "=" in v and not Path(v).exists():
            name, src = v.split("=", 1)
        else:
            name, src = Path(v).stem if not v.startswith("demo:") else v, v
        out.append((name, src))
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Run directory written by dlsr-train.")
@click.option("--id", "id_source", required=True, help="In-distribution test images (same source kinds as dlsr-train --data).")
@click.option("--ood", multiple=True, required=True, help="OOD set, as PATH or NAME=PATH; repeat for several sets.")
@click.option("--t-start", type=int, multiple=True, default=(3,), show_default=True, help="Noise level to reconstruct from (0..T-1); repeat for a sweep.")
@click.option("--steps", type=int, default=2, show_default=True, help="DDIM steps K (model calls); capped at t_start+1.")
@_apply(_score_opts)
@click.option("--knn-k", type=int, default=10, show_default=True, help="k of the cosine-KNN baseline.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Report directory (default: MODEL/eval).")
@click.option("--stem", default="eval", show_default=True, help="File name stem of the report (STEM.json, STEM.md, STEM.png, STEM_scores.npz).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Feature cache directory.")
@click.option("--limit", type=int, default=None, help="Use only the first N images of each set.")
@click.option("--no-plot", is_flag=True, help="Skip the PNG.")
@click.option("--feature-engine", type=click.Choice(["eager", "ort"]), default="eager", show_default=True, help="What computes backbone features for the cache (see dlsr-train --help).")
@click.option("--quiet", is_flag=True, help="No progress bars or tables.")
@_friendly
def evaluate(**o):
    """Evaluate a trained model: AUROC, FPR@95TPR, AUPR-In, AUPR-Out per OOD set and mean.

    Scores MFsim, MSE and LR (first-epoch minus final model); the density heads on the
    same z0 (Mahalanobis with Ledoit-Wolf or ridge covariance, per-layer Gaussian,
    l2-normalised Mahalanobis; fitted on the training z0); DLSR + density combinations
    standardised on held-out ID scores; and the cosine-KNN baseline. Higher score = more OOD; AUROC takes OOD
    as positive, FPR@95TPR takes ID as positive. Writes STEM.json, STEM.md, STEM.png.
    """
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.pipeline import run_eval

    sc = _fields(ScoreConfig, o)
    cfgs = [ScoreConfig(**{**sc, "t_start": t, "steps": min(o["steps"], t + 1)}) for t in o["t_start"]]
    keys = ("out_dir", "knn_k", "limit", "cache_dir", "stem", "quiet", "feature_engine")
    run_eval(
        o["model_dir"],
        o["id_source"],
        _parse_ood(o["ood"]),
        cfgs,
        command=_command_line(),
        plot=not o["no_plot"],
        **{k: o[k] for k in keys},
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"), show_default=True, help="Where the demo run and its reports go.")
@click.option("--epochs", type=int, default=15, show_default=True)
@click.option("--quiet", is_flag=True)
@_friendly
def demo(out, epochs, quiet):
    """End-to-end demo on the embedded data (no download): train on scikit-learn digits,
    evaluate against crops of scikit-image photos and textures."""
    from dlsr_deploy.demo import run_demo

    run_demo(out, epochs=epochs, quiet=quiet)


_tol_opts = [
    click.option("--rank-corr", type=float, default=None, help="Minimum Spearman rank correlation of each score (default 0.9999 FP32, 0.999 FP16)."),
    click.option("--auroc-change", type=float, default=None, help="Maximum AUROC change vs eager FP32 (default 0.002)."),
    click.option("--flip-rate", type=float, default=None, help="Maximum share of ID/OOD decisions that flip at the threshold (default 0.005; one flip always allowed)."),
    click.option("--z0-rel", type=float, default=None, help="Maximum per-image relative L2 error of z0 (default 1e-4 FP32, 0.02 FP16)."),
]


def _check_on_target(bundle, backend, report, quiet) -> dict:
    import json

    from dlsr_deploy.io import atomic_write_text
    from dlsr_deploy.parity import format_report
    from dlsr_deploy.runtime import Detector
    from dlsr_deploy.runtime.selfcheck import run_self_check

    with Detector.load(bundle, backend=backend, self_check="never") as det:
        det.manifest.golden_path()  # a clear error for bundles without a golden set
        rep = run_self_check(det.manifest, det.backend)
    rep.update(bundle=str(bundle), precision=det.manifest.precision)
    if not quiet:
        click.echo(format_report(rep))
    if report:
        atomic_write_text(Path(report), json.dumps(rep, indent=2, default=float) + "\n")
    return rep


def _tolerances(precision, rank_corr, auroc_change, flip_rate, z0_rel):
    from dataclasses import replace

    from dlsr_deploy.parity import Tolerances

    t = Tolerances.for_precision(precision)
    over = {
        k: v
        for k, v in dict(rank_corr=rank_corr, auroc_change=auroc_change, flip_rate=flip_rate, z0_rel=z0_rel).items()
        if v is not None
    }
    return replace(t, **over)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Run directory written by dlsr-train.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Bundle folder (default: export/<run name>-<precision>).")
@click.option("--fp16", is_flag=True, help="FP16 weights and activations in the graph (FP32 I/O, norms, z-score, DDIM arithmetic and score reductions); for a strongly typed TensorRT build.")
@click.option("--int8", is_flag=True, help="8-bit denoiser MatMuls (dynamic, U8U8) for ONNX Runtime on CPU (not TensorRT); backbone FP32 unless --int8-backbone-from. Refused when parity fails, with the reason and what to keep in FP32.")
@click.option("--int8-scheme", type=click.Choice(["dynamic", "weight-only", "openvino"]), default="dynamic", show_default=True, help="With --int8, the denoiser's 8 bits: 'dynamic' = uint8 weights, activations quantized per call (U8U8, the same numbers on every x86 CPU); 'weight-only' = MatMulNBits int8 blocks of 32 (faster at batch 1 and closer to FP32; ONNX Runtime only; not verified on a CPU without VNNI, the load-time self-check guards it there); 'openvino' = the fastest CPU bundle, for OpenVINO: static INT8 backbone from block 4 on (NNCF, full bias correction; taps and last block FP32) and int8 per-channel denoiser weights (DequantizeLinear), calibrated and verified on OpenVINO; needs pip install 'dlsr-deploy[int8]'.")
@click.option("--int8-backbone-from", type=click.IntRange(min=0), default=None, help="With --int8: also static INT8 (QDQ, calibrated on held-out ID images) for backbone blocks from this index on (EfficientNet-Lite0: 0-15); the stem and earlier blocks stay FP32. On the default model it costs more accuracy than the guard allows (benchmarks/results/int8_backbone.md).")
@click.option("--t-start", type=int, default=3, show_default=True, help="Noise level the reconstruction starts from.")
@click.option("--steps", type=int, default=2, show_default=True, help="DDIM steps K unrolled into the graph.")
@_apply(_score_opts)
@click.option("--lr", "with_lr", is_flag=True, help="Also output score_lr (first-epoch minus final model): adds the first-epoch LFDN to the graph and doubles the denoiser cost.")
@click.option("--fused", is_flag=True, help="Also write pipeline.onnx: images -> scores in one graph.")
@click.option("--calibrate-on", default=None, help="ID images for the threshold (default: the images the run held out of training).")
@click.option("--target-tpr", type=float, default=0.95, show_default=True, help="Share of ID images that must fall below the threshold.")
@click.option("--verify-ood", multiple=True, help="OOD images added to the parity set (AUROC change is checked only with these).")
@click.option("--n-verify", type=int, default=256, show_default=True, help="Images per set used for parity.")
@click.option("--no-verify", is_flag=True, help="Skip the parity check against PyTorch eager.")
@click.option("--max-batch", type=int, default=256, show_default=True, help="Largest batch of the TensorRT optimisation profile (min 1, opt 32).")
@click.option("--headline", default=None, help="The score the threshold is for: a score name (mfsim, mse, maha_lw, gauss_layer, sum_mfsim_gauss_layer, ...), or 'auto' = the best mean AUROC on the --verify-ood sets. Default: gauss_layer (the per-layer Gaussian on z0: the best mean AUROC over the shared OOD sets at 10k and 50k training images, README 'Choosing the headline'). The manifest records how it was chosen.")
@click.option("--no-density", is_flag=True, help="Leave the density heads and combined scores out of the bundle (DLSR scores only).")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder (only a folder that holds a bundle, never the model folder).")
@click.option("--sign", type=click.Path(dir_okay=False, exists=True), default=None, help="Ed25519 private key (PEM, from dlsr-keygen) that signs the manifest; runtimes given the public key refuse unsigned or foreign bundles.")
@_apply(_tol_opts)
@click.option("--quiet", is_flag=True)
@_friendly
def export(**o):
    """Export a trained run to a deployable bundle: backbone.onnx (uint8 images -> z0),
    denoiser.onnx (z0 -> DLSR scores, density heads and combined scores; the DDIM loop and
    its stored noise inside),
    optionally pipeline.onnx, and manifest.json with a threshold calibrated on ID images
    only. Verified against PyTorch eager unless --no-verify (exit 1 on failure)."""
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.scoring import BUNDLE_HEADS

    precision = "fp16" if o["fp16"] else "int8" if o["int8"] else "fp32"
    out = o["out"] or Path("export") / f"{o['model_dir'].name}-{precision}"
    tol = _tolerances(precision, o["rank_corr"], o["auroc_change"], o["flip_rate"], o["z0_rel"])
    keys = (
        "fp16",
        "int8",
        "fused",
        "with_lr",
        "calibrate_on",
        "target_tpr",
        "verify_ood",
        "n_verify",
        "headline",
        "force",
        "quiet",
        "int8_backbone_from",
        "int8_scheme",
    )
    if (o["int8_backbone_from"] is not None or o["int8_scheme"] != "dynamic") and not o["int8"]:
        raise click.UsageError("--int8-backbone-from and --int8-scheme need --int8")
    export_bundle(
        o["model_dir"],
        out,
        score_cfg=ScoreConfig(**_fields(ScoreConfig, o)),
        verify=not o["no_verify"],
        tolerances=tol,
        batch_profile=(1, 32, o["max_batch"]),
        density=() if o["no_density"] else BUNDLE_HEADS,
        **{k: o[k] for k in keys},
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None, help="The run the bundle came from (default: the path recorded in the manifest).")
@click.option("--data", default=None, help="ID images for the check (default: the calibration images).")
@click.option("--ood", multiple=True, help="OOD images added to the check.")
@click.option("--n-verify", type=int, default=256, show_default=True)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the full report as JSON here.")
@click.option("--on-target", is_flag=True, help="Replay the bundle's golden set on this machine and backend instead (no torch, no source run needed): the load-time self-check, always run and printed.")
@click.option("--backend", type=click.Choice(["auto", *ENGINE_BACKENDS]), default="auto", show_default=True, help="With --on-target: the backend to check.")
@_apply(_tol_opts)
@click.option("--quiet", is_flag=True)
@_friendly
def check(bundle, model_dir, data, ood, n_verify, report, on_target, backend, rank_corr, auroc_change, flip_rate, z0_rel, quiet):
    """Compare a bundle with PyTorch eager FP32: z0, z0_hat and every score (abs/rel error,
    Spearman rank correlation, AUROC change, decisions that flip at the calibrated threshold),
    on the engine its export verified it on (ONNX Runtime CPU; OpenVINO CPU for --int8-scheme
    openvino bundles) and with the precision's default tolerances unless given others (z0 is not
    checked for an 8-bit backbone, as at export). With --on-target, compare this machine's backend
    with the golden outputs stored in the bundle. Exit code 1 when a tolerance is exceeded."""
    if on_target:
        rep = _check_on_target(bundle, backend, report, quiet)
    else:
        from dlsr_deploy.export.check import check_bundle

        tol = lambda p: _tolerances(p, rank_corr, auroc_change, flip_rate, z0_rel)  # noqa: E731
        rep = check_bundle(bundle, model_dir, data, ood, n_verify, tol, report, quiet)
    if not rep["passed"]:
        sys.exit(1)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("stem", type=click.Path(dir_okay=False, path_type=Path))
@_friendly
def keygen(stem):
    """Make an Ed25519 key pair for signed bundles: STEM.key (private, mode 0600; give it to
    dlsr-export --sign) and STEM.pub (give it to Detector.load(trusted_keys=...) or dlsr-score
    --trusted-key). Existing files are never overwritten."""
    from dlsr_deploy.signing import generate_keypair, public_key_id

    key, pub = generate_keypair(stem)
    click.echo(f"wrote {key} (private: keep it secret) and {pub} (key id {public_key_id(pub.read_bytes())})")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw manifest instead.")
@_friendly
def inspect(bundle, as_json):
    """Print a bundle's manifest readably, then verify the manifest's digest and every file's
    sha256 (an edited manifest or a tampered / truncated file is reported by name, exit code 1)."""
    import json

    from dlsr_deploy.manifest import describe, read_manifest, verify_digest, verify_files

    m = read_manifest(bundle, verify=False)
    if as_json:
        click.echo(json.dumps(m.data, indent=2))
    else:
        click.echo(describe(m))
    verify_digest(m.data, m.path / "manifest.json")
    ok = verify_files(m)
    click.echo(f"hashes   manifest digest and {len(ok)} file(s) verified: " + ", ".join(ok))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--backend", type=click.Choice(["auto", *ENGINE_BACKENDS]), default="auto", show_default=True, help="auto = TensorRT if importable with a GPU, else ORT-CUDA, else ORT-CPU.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write per-image results here: JSON when the name ends in .json (any case), else CSV; '-' or none = CSV on stdout. A regular file is replaced atomically, a symlink is written through, a device or pipe is written to; an input is never overwritten, and an unwritable destination fails before any scoring. With --ray: a new (or empty) folder for the shard files, or the folder of the job to --resume.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Images per backend call.")
@click.option("--strict-providers", is_flag=True, help="Fail instead of falling back to CPU when the requested ONNX Runtime provider is not used.")
@click.option("--no-resize", is_flag=True, help="Refuse images whose size differs from the bundle's instead of resizing them.")
@click.option("--trusted-key", "trusted_keys", multiple=True, type=click.Path(dir_okay=False, exists=True), help="Ed25519 public key (PEM); the bundle must be signed by one of them (repeatable).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]", help="Score on a Ray cluster (pip install 'dlsr-deploy[ray]'): a local one when no ADDRESS follows, else 'auto' or ray://HOST:10001. INPUTS may then also be globs and Parquet files with image bytes; --out names a folder of shard files.")
@click.option("--resume", is_flag=True, help="With --ray: continue the job in --out, skipping shards already written.")
@click.option("--shard-size", type=click.IntRange(min=1), default=1024, show_default=True, help="With --ray: inputs per output shard (the unit of --resume).")
@click.option("--actors", type=click.IntRange(min=1), default=None, help="With --ray: scoring actors (default: the cluster's CPUs // --cpus-per-actor).")
@click.option("--cpus-per-actor", type=click.FloatRange(min=0.5), default=2.0, show_default=True, help="With --ray: ONNX Runtime threads per actor (ORT ignores OMP_NUM_THREADS).")
@click.option("--gpus-per-actor", type=click.FloatRange(min=0.0), default=0.0, show_default=True, help="With --ray: GPUs per actor, for --backend trt / ort-cuda.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True, help="With --ray: shard file format.")
@click.option("--quiet", is_flag=True)
@_friendly
def score(bundle, inputs, backend, out, batch_size, strict_providers, no_resize, trusted_keys, ray_address, resume, shard_size, actors, cpus_per_actor, gpus_per_actor, fmt, quiet):
    """Score images with an exported bundle, without torch. INPUTS are image files,
    folders or .npz packs. Prints per-image scores, the normalised score (1.0 = threshold)
    and the ID/OOD decision (higher score = more OOD).

    With --ray the same scores come from a Ray Data pipeline (decode in tasks, an actor pool
    that opens the bundle once per actor) into Parquet/CSV shards with one row per input,
    exactly once even when a worker dies; --resume continues an interrupted job."""
    keys = list(trusted_keys) or None
    if ray_address is None:
        if resume:
            raise click.UsageError("--resume needs --ray (a single-process run has no shards to resume)")
        from dlsr_deploy.runtime.score_cli import score_inputs

        score_inputs(bundle, inputs, backend, out, batch_size, strict_providers, not no_resize, quiet, trusted_keys=keys)
        return
    if ray_address != "local" and Path(ray_address).exists():  # `--ray images/`: an input, not an address
        inputs, ray_address = (*inputs, ray_address), "local"
    if out is None or str(out) == "-":
        raise click.UsageError("--ray writes shard files: give --out FOLDER")
    from dlsr_deploy.scale.batch import JobOptions, score_dataset

    opts = JobOptions(backend=backend, batch_size=batch_size, shard_size=shard_size, actors=actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, fmt=fmt, resume=resume, quiet=quiet, trusted_keys=keys)
    score_dataset(bundle, inputs, out, address=ray_address, opts=opts)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="Serve replicas (each opens the bundle once).")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True, help="Most images one replica batches into one backend call (@serve.batch).")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0.0), default=5.0, show_default=True, help="How long a replica waits for a batch to fill. 5 keeps one client's latency low; with --ingress haproxy, 20 reached 91 % of in-process batch-32 throughput at 32 clients on 2 cores (README).")
@click.option("--cpus-per-replica", type=click.FloatRange(min=0.5), default=1.0, show_default=True, help="Ray CPUs per replica; also its ONNX Runtime threads unless --threads is given.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads per replica.")
@click.option("--backend", type=click.Choice(["auto", *ENGINE_BACKENDS]), default="auto", show_default=True)
@click.option("--max-bytes", type=click.IntRange(min=1), default=16 << 20, show_default=True, help="Largest request body; larger ones get 413.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--ingress", type=click.Choice(["proxy", "haproxy"]), default="proxy", show_default=True, help="HTTP ingress: Serve's Python proxy on --host, or Ray's HAProxy ingress (about 1.8x the throughput at 32 clients here; binds replica ports on every interface). Set before Ray starts; on an existing cluster set RAY_SERVE_ENABLE_HA_PROXY there.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS", help="Join this Ray cluster ('auto', ray://HOST:10001) instead of starting a local one.")
@_friendly
def serve(bundle, replicas, max_batch, batch_wait_ms, cpus_per_replica, threads, backend, max_bytes, host, port, ingress, ray_address):
    """Serve a bundle over HTTP on Ray Serve, with dynamic batching. POST /score takes one
    PNG/JPEG (or a .npy batch) and answers JSON with score, normalized and is_ood; GET /healthz,
    /info and /stats. Runs until Ctrl-C."""
    from dlsr_deploy.scale.serve import run_service

    run_service(bundle, replicas=replicas, max_batch=max_batch, batch_wait_ms=batch_wait_ms, cpus_per_replica=cpus_per_replica, threads=threads, backend=backend, max_bytes=max_bytes, host=host, port=port, address=ray_address, ingress=ingress)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--engines", type=click.Path(file_okay=False, path_type=Path), default=Path("engines"), show_default=True, help="Engine cache root (plans + build.json per TensorRT version and GPU).")
@click.option("--max-batch", type=int, default=None, help="Largest batch of the optimisation profile (default: the bundle's).")
@click.option("--workspace-mb", type=int, default=None, help="TensorRT workspace limit (default: TensorRT decides).")
@click.option("--no-build", is_flag=True, help="Only check the cache; fail with the reason when a plan is missing or stale.")
@click.option("--quiet", is_flag=True)
@_friendly
def build(bundle, engines, max_batch, workspace_mb, no_build, quiet):
    """Build (or refresh) the TensorRT plans of a bundle on this GPU, without torch.
    Plans are reused only when TensorRT version, GPU, compute capability, profile and
    source ONNX all match; otherwise they are rebuilt."""
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.runtime.trt import TrtBackend

    m = read_manifest(bundle)
    mb = max_batch or m.batch_profile["max"]
    be = TrtBackend(
        m,
        engines_dir=engines,
        max_batch=mb,
        build=not no_build,
        workspace_bytes=workspace_mb * 2**20 if workspace_mb else None,
        quiet=quiet,
    )
    for graph, info in be.build_info.items():
        click.echo(f"{graph}: {info['plan']} ({info['reason']}); layer outputs by precision {info['layer_precisions']}")
    be.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--data", required=True, help="ID images (timing uses these; AUROC uses them as the ID side).")
@click.option("--ood", multiple=True, help="OOD set for the AUROC column, as PATH or NAME=PATH (repeatable).")
@click.option("--n-eval", type=int, default=500, show_default=True, help="Images per set for the accuracy columns (evenly spaced over each set).")
@click.option("--batch", "batch_sizes", type=int, multiple=True, default=(1, 8, 32, 128), show_default=True, help="Batch sizes (repeatable).")
@click.option("--backend", "backends", multiple=True, help="Runtime backends to time (default: every available one); eager FP32 always runs.")
@click.option("--warmup", type=float, default=1.0, show_default=True, help="Warm-up seconds per configuration.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Interleaved timing rounds: each round times every backend in turn for 1/ROUNDS of the warm-up and duration.")
@click.option("--min-duration", type=float, default=3.0, show_default=True, help="Minimum measured seconds per configuration.")
@click.option("--min-iters", type=int, default=5, show_default=True, help="Minimum measured calls per configuration.")
@click.option("--threads", type=int, default=None, help="Intra-op threads for torch and ONNX Runtime (default: library default).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmarks/results"), show_default=True)
@click.option("--stem", default="bench", show_default=True, help="Output names: STEM.json (raw timings), STEM.md, STEM.png.")
@click.option("--peers", is_flag=True, help="Also time what a user gets without this toolkit: torch.compile of the eager pipeline (compile time reported apart) and a plain torch.onnx.export of the eager modules on ONNX Runtime / OpenVINO with their default settings.")
@click.option("--quiet", is_flag=True, help="No progress bar or table.")
@_friendly
def bench(bundles, data, ood, n_eval, batch_sizes, backends, warmup, rounds, min_duration, min_iters, threads, out_dir, stem, peers, quiet):
    """Latency and throughput of PyTorch eager FP32 (baseline), ONNX Runtime, OpenVINO and
    TensorRT on the same images in one process, with AUROC (of each bundle's headline score)
    and the score error vs eager in the same row. Several BUNDLES (e.g. K=1,2,3 or
    FP32/FP16) give an accuracy-vs-latency sweep. Unavailable backends are listed with the reason."""
    import numpy as np

    from dlsr_deploy.bench import report
    from dlsr_deploy.bench.harness import TimingSettings, run_bench
    from dlsr_deploy.data import load_images
    from dlsr_deploy.manifest import read_manifest

    def subset(images):
        # evenly spaced over the set, not its first N: packs are often ordered by class
        return images[np.unique(np.linspace(0, len(images) - 1, min(n_eval, len(images))).astype(int))]

    size = read_manifest(bundles[0]).input_size
    id_images = subset(load_images(data, size=size).images)
    ood_sets = {name: subset(load_images(src, size=size).images) for name, src in _parse_ood(ood)}
    timing = TimingSettings(warmup_s=warmup, min_duration=min_duration, min_iters=min_iters, rounds=rounds)
    res = run_bench(
        bundles, id_images, ood_sets, batch_sizes=batch_sizes, backends=backends or None, timing=timing, threads=threads,
        peers=peers, quiet=quiet,
    )
    paths = report.write(res, out_dir, stem, _command_line())
    if not quiet:
        click.echo(report.markdown(res, _command_line()))
        click.echo("wrote " + ", ".join(str(p) for p in paths))
