"""Command-line entry points. Heavy modules are imported inside each command, so
`--help` is instant and a missing extra says which one to install."""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path

import click

from dlsr_deploy.errors import DLSRError


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
            extra = {"torch": "train", "onnx": "train", "onnxruntime": "cpu", "tensorrt": "trt", "sklearn": "demo", "skimage": "demo", "safetensors": "train", "matplotlib": "train"}.get((exc.name or "").split(".")[0])
            if extra is None:
                raise
            click.echo(f"error: the package '{exc.name}' is missing; install it with `pip install 'dlsr-deploy[{extra}]'`", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name] + sys.argv[1:])


_feature_opts = [
    click.option("--backbone", type=click.Choice(["efficientnet-lite0", "efficientnet-b4", "resnet50"]), default="efficientnet-lite0", show_default=True, help="Frozen ImageNet backbone. lite0 weights ship with the package; B4 / ResNet-50 need --weights or a network."),
    click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Backbone weights file (lukemelas format for EfficientNet, torchvision format for ResNet-50). Published file names are sha256-checked."),
    click.option("--input-size", type=int, default=224, show_default=True, help="Images are resized (bilinear) to this square size before the backbone."),
    click.option("--native-size", type=int, default=32, show_default=True, help="Every image (ID and OOD) is first brought to this size (centre crop + bilinear), so all sets reach the backbone alike; 0 keeps the source size."),
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where backbone features are cached (default: $DLSR_CACHE or ~/.cache/dlsr-deploy/features)."),
    click.option("--limit", type=int, default=None, help="Use only the first N images of each set (quick runs)."),
    click.option("--quiet", is_flag=True, help="No progress bars or tables (for CI)."),
]


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
@click.option("--data", required=True, help="In-distribution training images: a .npz (images uint8 NxHxWx3), an image folder, a CIFAR-10/100 pickle folder, an SVHN .mat, or demo:id.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory: config.json, model.safetensors (EMA), model_first_epoch.safetensors, checkpoints/, train_log.csv.")
@_apply(_feature_opts)
@click.option("--preset", type=click.Choice(["paper", "small"]), default="paper", show_default=True, help="LFDN size: paper = width 2D, 16 blocks; small = width 128, 2 blocks (tests).")
@click.option("--width", type=int, default=None, help="Override the LFDN residual width.")
@click.option("--blocks", type=int, default=None, help="Override the number of LFDN ResBlocks.")
@click.option("--epochs", type=int, default=150, show_default=True, help="Training epochs over the cached features.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="AdamW learning rate (constant).")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True, help="AdamW weight decay.")
@click.option("--ema-decay", type=float, default=0.9999, show_default=True, help="EMA decay (with warm-up (1+n)/(10+n)); the EMA weights are what is saved and scored.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for initialisation, batches, timesteps and noise.")
@click.option("--checkpoint-every", type=int, default=5, show_default=True, help="Write a resumable checkpoint every N epochs (atomically).")
@click.option("--patience", type=int, default=10, show_default=True, help="Early stopping: stop after N epochs without a lower held-out ID loss; the saved model is the EMA of the best epoch (0 = train all epochs, still keeping the best).")
@click.option("--holdout", type=float, default=0.1, show_default=True, help="Fraction of the ID images kept out of training for threshold calibration (holdout_z0.npy).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last checkpoint.")
@_friendly
def train(data, out, backbone, weights, input_size, native_size, cache_dir, limit, quiet, preset, width, blocks, epochs, batch_size, lr, weight_decay, ema_decay, seed, checkpoint_every, patience, holdout, resume):
    """Train the DLSR denoiser (LFDN) on unlabeled in-distribution images.

    Backbone features are computed once and cached; training then runs on the cached
    z0 vectors. Higher scores later mean more OOD.
    """
    from dlsr_deploy.config import FeatureConfig, TrainConfig
    from dlsr_deploy.pipeline import run_train

    fcfg = FeatureConfig(backbone=backbone, input_size=input_size, native_size=native_size or None, weights=weights)
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, ema_decay=ema_decay, seed=seed, checkpoint_every=checkpoint_every, patience=(patience or None) if holdout > 0 else None)
    run_train(data, out, fcfg, preset, width, blocks, tcfg, holdout, resume, limit, cache_dir, quiet)


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
@click.option("--quiet", is_flag=True, help="No progress bars or tables.")
@_friendly
def evaluate(model_dir, id_source, ood, t_start, steps, eta, n_noise, noise_seed, mode, mfsim_skip_first, knn_k, out_dir, stem, cache_dir, limit, no_plot, quiet):
    """Evaluate a trained model: AUROC, FPR@95TPR, AUPR-In, AUPR-Out per OOD set and mean.

    Scores MFsim, MSE and LR (first-epoch minus final model) and, on the same z0,
    the Mahalanobis and cosine-KNN baselines. Higher score = more OOD; AUROC takes OOD
    as positive, FPR@95TPR takes ID as positive. Writes STEM.json, STEM.md, STEM.png.
    """
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.pipeline import run_eval

    cfgs = [ScoreConfig(t_start=t, steps=min(steps, t + 1), eta=eta, n_noise=n_noise, noise_seed=noise_seed, mode=mode, mfsim_skip_first=mfsim_skip_first) for t in t_start]
    run_eval(model_dir, id_source, _parse_ood(ood), cfgs, out_dir, knn_k, limit, cache_dir, stem, _command_line(), quiet, plot=not no_plot)


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


def _tolerances(precision, rank_corr, auroc_change, flip_rate, z0_rel):
    from dataclasses import replace

    from dlsr_deploy.export.parity import Tolerances

    t = Tolerances.for_precision(precision)
    over = {k: v for k, v in dict(rank_corr=rank_corr, auroc_change=auroc_change, flip_rate=flip_rate, z0_rel=z0_rel).items() if v is not None}
    return replace(t, **over)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Run directory written by dlsr-train.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Bundle folder (default: export/<run name>-<precision>).")
@click.option("--fp16", is_flag=True, help="FP16 weights and activations in the graph (FP32 I/O, norms, z-score, DDIM arithmetic and score reductions); for a strongly typed TensorRT build.")
@click.option("--int8", is_flag=True, help="INT8 denoiser weights with dynamic activation quantisation (ONNX Runtime on CPU; not for TensorRT). Backbone stays FP32.")
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
@click.option("--force", is_flag=True, help="Replace an existing bundle folder.")
@_apply(_tol_opts)
@click.option("--quiet", is_flag=True)
@_friendly
def export(model_dir, out, fp16, int8, t_start, steps, eta, n_noise, noise_seed, mode, mfsim_skip_first, with_lr, fused, calibrate_on, target_tpr, verify_ood, n_verify, no_verify, max_batch, force, rank_corr, auroc_change, flip_rate, z0_rel, quiet):
    """Export a trained run to a deployable bundle: backbone.onnx (uint8 images -> z0),
    denoiser.onnx (z0 -> scores, the DDIM loop and its stored noise inside),
    optionally pipeline.onnx, and manifest.json with a threshold calibrated on ID images
    only. Verified against PyTorch eager unless --no-verify (exit 1 on failure)."""
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.export.exporter import export_bundle

    precision = "fp16" if fp16 else "int8" if int8 else "fp32"
    out = out or Path("export") / f"{model_dir.name}-{precision}"
    sc = ScoreConfig(t_start=t_start, steps=steps, eta=eta, n_noise=n_noise, noise_seed=noise_seed, mode=mode, mfsim_skip_first=mfsim_skip_first)
    export_bundle(model_dir, out, fp16, int8, sc, fused, with_lr, calibrate_on, target_tpr, not no_verify, verify_ood, n_verify,
                  _tolerances(precision, rank_corr, auroc_change, flip_rate, z0_rel), (1, 32, max_batch), force, quiet)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None, help="The run the bundle came from (default: the path recorded in the manifest).")
@click.option("--data", default=None, help="ID images for the check (default: the calibration images).")
@click.option("--ood", multiple=True, help="OOD images added to the check.")
@click.option("--n-verify", type=int, default=256, show_default=True)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the full report as JSON here.")
@_apply(_tol_opts)
@click.option("--quiet", is_flag=True)
@_friendly
def check(bundle, model_dir, data, ood, n_verify, report, rank_corr, auroc_change, flip_rate, z0_rel, quiet):
    """Compare a bundle (ONNX Runtime CPU) with PyTorch eager FP32: z0, z0_hat and every
    score (abs/rel error, Spearman rank correlation, AUROC change, decisions that flip at
    the calibrated threshold). Exit code 1 when a tolerance is exceeded."""
    from dlsr_deploy.export.check import check_bundle

    rep = check_bundle(bundle, model_dir, data, ood, n_verify, lambda p: _tolerances(p, rank_corr, auroc_change, flip_rate, z0_rel), report, quiet)
    if not rep["passed"]:
        sys.exit(1)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw manifest instead.")
@_friendly
def inspect(bundle, as_json):
    """Print a bundle's manifest readably and verify every file's sha256 (a tampered or
    truncated file is reported by name, exit code 1)."""
    import json

    from dlsr_deploy.manifest import describe, read_manifest, verify_files

    m = read_manifest(bundle, verify=False)
    if as_json:
        click.echo(json.dumps(m.data, indent=2))
    else:
        click.echo(describe(m))
    ok = verify_files(m)
    click.echo(f"hashes   {len(ok)} file(s) verified: " + ", ".join(ok))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--backend", type=click.Choice(["auto", "trt", "ort-cuda", "ort-cpu"]), default="auto", show_default=True, help="auto = TensorRT if importable with a GPU, else ORT-CUDA, else ORT-CPU.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write per-image results here (.csv or .json); default: CSV on stdout.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--strict-providers", is_flag=True, help="Fail instead of falling back to CPU when the requested ONNX Runtime provider is not used.")
@click.option("--no-resize", is_flag=True, help="Refuse images whose size differs from the bundle's instead of resizing them.")
@click.option("--quiet", is_flag=True)
@_friendly
def score(bundle, inputs, backend, out, batch_size, strict_providers, no_resize, quiet):
    """Score images with an exported bundle, without torch. INPUTS are image files,
    folders or .npz packs. Prints per-image scores, the normalised score (1.0 = threshold)
    and the ID/OOD decision (higher score = more OOD)."""
    from dlsr_deploy.runtime.score_cli import score_inputs

    score_inputs(bundle, inputs, backend, out, batch_size, strict_providers, not no_resize, quiet)


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
    mb = max_batch or int(m.data.get("batch_profile", {}).get("max", 256))
    be = TrtBackend(m, engines_dir=engines, max_batch=mb, build=not no_build, workspace_bytes=workspace_mb * 2**20 if workspace_mb else None, quiet=quiet)
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
@click.option("--quiet", is_flag=True, help="No progress bar or table.")
@_friendly
def bench(bundles, data, ood, n_eval, batch_sizes, backends, warmup, rounds, min_duration, min_iters, threads, out_dir, stem, quiet):
    """Latency and throughput of PyTorch eager FP32 (baseline), ONNX Runtime and TensorRT
    on the same images in one process, with AUROC and the score error vs eager in the
    same row. Several BUNDLES (e.g. K=1,2,3 or FP32/FP16) give an accuracy-vs-latency sweep.
    Unavailable backends are listed with the reason."""
    from dlsr_deploy.bench import report
    from dlsr_deploy.bench.harness import run_bench
    from dlsr_deploy.data import load_images
    from dlsr_deploy.manifest import read_manifest

    import numpy as np

    def subset(images):
        # evenly spaced over the set, not its first N: packs are often ordered by class
        return images[np.unique(np.linspace(0, len(images) - 1, min(n_eval, len(images))).astype(int))]

    size = read_manifest(bundles[0]).input_size
    id_images = subset(load_images(data, size=size).images)
    ood_sets = {name: subset(load_images(src, size=size).images) for name, src in _parse_ood(ood)}
    res = run_bench(bundles, id_images, ood_sets, batch_sizes, backends or None, warmup, min_duration, min_iters, threads, quiet=quiet, rounds=rounds)
    paths = report.write(res, out_dir, stem, _command_line())
    if not quiet:
        click.echo(report.markdown(res, _command_line()))
        click.echo("wrote " + ", ".join(str(p) for p in paths))
