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
@click.option("--holdout", type=float, default=0.1, show_default=True, help="Fraction of the ID images kept out of training for threshold calibration (holdout_z0.npy).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last checkpoint.")
@_friendly
def train(data, out, backbone, weights, input_size, native_size, cache_dir, limit, quiet, preset, width, blocks, epochs, batch_size, lr, weight_decay, ema_decay, seed, checkpoint_every, holdout, resume):
    """Train the DLSR denoiser (LFDN) on unlabeled in-distribution images.

    Backbone features are computed once and cached; training then runs on the cached
    z0 vectors. Higher scores later mean more OOD.
    """
    from dlsr_deploy.config import FeatureConfig, TrainConfig
    from dlsr_deploy.pipeline import run_train

    fcfg = FeatureConfig(backbone=backbone, input_size=input_size, native_size=native_size or None, weights=weights)
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, ema_decay=ema_decay, seed=seed, checkpoint_every=checkpoint_every)
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
@click.option("--eta", type=float, default=0.0, show_default=True, help="DDIM eta (0 = deterministic given the stored noise).")
@click.option("--n-noise", type=int, default=1, show_default=True, help="Stored noise draws to average the scores over.")
@click.option("--noise-seed", type=int, default=0, show_default=True, help="Seed of the stored noise.")
@click.option("--mode", type=click.Choice(["ddim", "paper"]), default="ddim", show_default=True, help="ddim: corrected few-step DDIM returning x0_hat; paper: the official procedure (eta=1, 3 calls from t=3, off-by-one coefficients).")
@click.option("--mfsim-skip-first", is_flag=True, help="MFsim over layers 2.. as the official code (default: all layers, as the paper).")
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


def _placeholder(name):
    @click.command(name=name)
    def cmd():
        """Not available yet in this version."""
        click.echo(f"error: {name} is not implemented yet", err=True)
        sys.exit(1)

    return cmd


export = _placeholder("dlsr-export")
check = _placeholder("dlsr-check")
inspect = _placeholder("dlsr-inspect")
score = _placeholder("dlsr-score")
