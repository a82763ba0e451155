"""Thresholds and the headline: calibrated on ID images only, chosen by evidence with error bars.

The threshold of every score is the target-TPR quantile of the exported graph's own scores on
ID images (the run's held-out images by default). The headline (the score the decision uses) is
the package default, the caller's choice, or with headline="auto" the outcome of the selection
rule of `dlsr_deploy.selection` on the caller's known-OOD images plus synthetic shift probes
made from the calibration images; the manifest records the intervals that made the choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.errors import ConfigError
from dlsr_deploy.scoring import DEFAULT_HEADLINE


def calibration_images(
    run_dir: Path, source: Optional[str], native_size: int, limit: Optional[int] = None
) -> Tuple[np.ndarray, str]:
    """ID images for the threshold: `source` (calibrate_on), else the run's held-out training images."""

    from dlsr_deploy.data import load_images

    if source:
        return load_images(source, size=native_size, limit=limit).images, f"calibrate_on {source}"
    from dlsr_deploy.run_folder import RunRecord

    rec = RunRecord(run_dir)
    if not rec.has_info():
        raise ConfigError(
            f"calibrate_on: {run_dir} has no run.json; give ID images to calibrate on", param="calibrate_on"
        )
    info = rec.read_info()
    idx = info.holdout_indices or []
    if not idx:
        raise ConfigError(
            f"calibrate_on: {run_dir} was trained without a hold-out (holdout 0); give ID images not used in training",
            param="calibrate_on",
        )
    images, data = _run_images(run_dir, info, native_size)
    if max(idx) >= len(images):
        raise ConfigError(
            f"{run_dir}: run.json holds out image {max(idx)} but the training data has {len(images)} images; "
            "give calibrate_on",
            param="calibrate_on",
        )
    return images[np.asarray(idx)], f"{len(idx)} ID images held out of training ({', '.join(data)})"


def _run_images(run_dir: Path, info, native_size: int) -> Tuple[np.ndarray, list]:
    """(every image the run was given, in its order; the sources), checked against the digests in run.json."""
    from dlsr_deploy.data import load_images

    if not info.data:
        raise ConfigError(
            f"{run_dir}: run.json names no training data; give calibrate_on: ID images", param="calibrate_on"
        )
    data = info.data if isinstance(info.data, list) else [info.data]
    missing = [d for d in data if not str(d).startswith("demo:") and not Path(d).exists()]
    if missing:
        raise ConfigError(
            f"{run_dir}: the training data {missing} is gone, so the held-out images cannot be rebuilt; "
            "give calibrate_on: ID images",
            param="calibrate_on",
        )
    want = info.data_sha256
    sets = [load_images(d, size=native_size, limit=info.limit, split="train") for d in data]
    if want is not None:
        from dlsr_deploy.preprocess import images_digest

        changed = [d for d, s, w in zip(data, sets, want) if images_digest(s.images) != w]
        if changed:
            raise ConfigError(
                f"{run_dir}: the training data {changed} changed since training (content sha256 differs); the held-out "
                "images cannot be identified; give calibrate_on: ID images not used in training",
                param="calibrate_on",
            )
    images = np.concatenate([s.images for s in sets])
    return images, data


def training_images(run_dir: Path, native_size: int) -> np.ndarray:
    """The images the run's density heads were fitted on (every image but the held-out ones, with
    their horizontal flips when the run trained with flip), for refitting them on other features."""
    from dlsr_deploy.run_folder import RunRecord

    try:
        info = RunRecord(run_dir).read_info()
        images, _ = _run_images(Path(run_dir), info, native_size)
    except (OSError, ValueError, KeyError, ConfigError) as exc:
        msg = str(exc) if isinstance(exc, ConfigError) else f"{exc.__class__.__name__}: {exc}"
        raise ConfigError(
            f"precision: refitting the density heads on low-precision features needs the run's training images: {msg}",
            param="precision",
        ) from None
    keep = np.ones(len(images), bool)
    keep[np.asarray(info.holdout_indices or [], int)] = False
    x = images[keep]
    return np.concatenate([x, x[:, :, ::-1]]) if info.flip else x


def fit_shape(ref) -> Optional[Tuple[int, int]]:
    """(training vectors, dims) a reference's density heads were fitted on; None without heads."""
    head = next(iter((ref.heads or {}).values()), None)
    n = head.info.get("n_fit") if head is not None else None
    return (int(n), int(head.mean.shape[0])) if n else None


def default_headline(names: Sequence[str], fit_shape: Optional[Tuple[int, int]] = None) -> Tuple[str, dict]:
    """The package default for heads fitted on fit_shape = (n vectors, dims) when the bundle has it,
    else the first density head, else the first score."""
    from dlsr_deploy.registry import density_heads
    from dlsr_deploy.scoring import SMALL_N_RATIO, default_headline_for
    from dlsr_deploy.views import ENSEMBLE

    if ENSEMBLE in names:  # a detector of several views decides by all of them
        return ENSEMBLE, {"how": "package default for a detector of several views (ensemble: every view's head)"}
    want = default_headline_for(*(fit_shape or (None, None)))
    if want in names:
        why = (
            "chosen by the selection rule over the shared OOD sets and the synthetic shift probes, README "
            "'Choosing the headline'"
            if want == DEFAULT_HEADLINE
            else f"the density heads were fitted on {fit_shape[0]} vectors of {fit_shape[1]} dims, fewer than "
            f"{SMALL_N_RATIO} per dim, where {DEFAULT_HEADLINE} is unreliable (research/headline/README.md)"
        )
        return want, {"how": f"package default ({want}: {why})"}
    fallback = next((n for n in names if n in density_heads()), names[0])
    return fallback, {"how": f"package fallback (the default {want} is not among this bundle's scores)"}


def auto_candidates(names: Sequence[str]) -> list:
    """Scores headline="auto" may choose: every score but the LR ones, whose direction depends on
    the data (README: on the demo, lr_mse and lr_mfsim are inverted), so a fixed threshold on
    them is not a safe default."""
    return [n for n in names if not n.startswith("lr_")]


STEP_FIELDS = ("candidate", "incumbent", "real", "probe_mean", "worst_real", "not_worse", "better_on_worst", "replaces")


def _auto_record(res: dict, incumbent: str) -> dict:
    """The manifest's record of an 'auto' choice: the rule, every candidate's intervals, each step."""
    return {
        "how": "auto: the selection rule (README 'Choosing the headline') on the verify_ood sets and the shift "
        "probes, against the calibration ID images, starting from the package default",
        "rule": res["rule"],
        "incumbent": incumbent,
        "table": res["table"],
        "steps": [{k: s[k] for k in STEP_FIELDS} for s in res["steps"]],
        "near_chance": res["near_chance"],
    }


def choose_headline(
    requested: Optional[str],
    names: Sequence[str],
    id_scores: Dict[str, np.ndarray],
    ood_scores: Dict[str, Dict[str, np.ndarray]],
    probe_scores: Optional[Dict[str, Dict[str, np.ndarray]]] = None,
    n_boot: int = 200,
    fit_shape: Optional[Tuple[int, int]] = None,
) -> Tuple[str, dict]:
    """(headline score, how it was chosen). requested: a score name, 'auto' (the selection rule
    over the given OOD sets and the probes, starting from the package default) or None (the
    package default). fit_shape: (vectors, dims) the density heads were fitted on, which picks the
    package default (scoring.default_headline_for)."""
    if requested is None:
        return default_headline(names, fit_shape)
    if requested != "auto":
        if requested not in names:
            raise ConfigError(f"headline: expected one of {list(names)} or 'auto', got {requested!r}", param="headline")
        return requested, {"how": "given by the caller (headline)"}
    if not ood_scores:
        raise ConfigError("headline: 'auto' needs known-OOD images; give verify_ood", param="headline")
    from dlsr_deploy.probes import shift_probes
    from dlsr_deploy.selection import Evidence, choose

    probe_scores = probe_scores or {}
    cands = auto_candidates(names)
    ev = Evidence(
        id={n: id_scores[n] for n in cands},
        ood={k: {n: v[n] for n in cands} for k, v in {**ood_scores, **probe_scores}.items()},
        real=list(ood_scores),
        probes=[p for p in probe_scores if p.split(":", 1)[-1] in shift_probes()],  # 'probe:<name>' or '<name>'
        n_boot=n_boot,
    )
    incumbent = default_headline(cands, fit_shape)[0]
    res = choose(ev, incumbent, cands)
    record = _auto_record(res, incumbent)
    if res["near_chance"]:
        from dlsr_deploy.log import warning

        warning(
            f"warning: every candidate score has AUROC < 0.6 on the verify_ood images {list(ood_scores)}: they look "
            "like ID images, so they cannot choose a headline; the package default is kept"
        )
        return incumbent, {**record, "how": record["how"] + "; near chance on every set, default kept"}
    return res["chosen"], record
