"""dlsr-eval: every score of a trained run on ID vs OOD sets (and synthetic shift probes), with
bootstrap intervals -> table, JSON, Markdown, PNG, scores (torch imported lazily)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from dlsr_deploy.config import ModelConfig, ScoreConfig
from dlsr_deploy.log import info, progress
from dlsr_deploy.run_folder import CONFIG, TRAIN_Z0

GALLERY_SETS_MAX_IMAGES = 50_000  # OOD sets are reloaded for the galleries only up to this size


def _eval_config(model_dir: Path, sc: ScoreConfig, hold_z, z_id, z_ood: Dict[str, np.ndarray], opts: dict, log):
    """Every score of one score config on the ID and OOD sets -> (report block, ID scores, OOD scores);
    opts gains 'ref' (the scorer) and 'hold' (the held-out ID images' scores, when the run has them)."""
    from dlsr_deploy.evaluation import DIRECTION, metrics_table, short_table
    from dlsr_deploy.model.reference import EagerReference
    from dlsr_deploy.probes import shift_probes

    t, bars = time.time(), progress()
    ref = EagerReference.from_run(model_dir, sc, with_lr=None, combos=[])
    if hold_z is not None and len(hold_z):  # standardised on held-out ID scores only
        ref.fit_combos(hold_z)
    s_id = ref.score_z0(z_id, progress=bars, desc=f"score ID t={sc.t_start}")
    s_ood = {k: ref.score_z0(v, progress=bars, desc=f"score {k}") for k, v in z_ood.items()}
    if hold_z is not None and len(hold_z):  # what a bundle's threshold is calibrated on
        opts["hold"] = ref.score_z0(hold_z, progress=bars, desc="score held-out ID")
    opts["ref"] = ref
    t_boot = time.time()
    table = metrics_table(s_id, s_ood, n_boot=opts["n_boot"], probes=shift_probes())
    boot_s = time.time() - t_boot
    log(
        f"\nscore config t_start={sc.t_start} steps={sc.steps} eta={sc.eta} n_noise={sc.n_noise} mode={sc.mode}  "
        f"({DIRECTION}; 95 % bootstrap intervals, {opts['n_boot']} replicates)"
    )
    log(short_table(table))
    block = {
        "score_config": sc.to_dict(),
        "metrics": table,
        "combinations": [c.to_dict() for c in ref.combos],
        "seconds": round(time.time() - t, 1),
        "bootstrap_seconds": round(boot_s, 1),
    }
    return block, s_id, s_ood


def _probe_features(images: np.ndarray, cfg, cache_dir, n: int, engine: str) -> Dict[str, np.ndarray]:
    """z0 of every probe made from (up to n) ID test images, through the feature cache."""
    from dlsr_deploy.pipeline import all_features
    from dlsr_deploy.probes import make_probes

    probes = make_probes(images, n=n)
    return {
        f"probe:{k}": all_features(v, cfg, cache_dir, engine=engine, desc=f"features probe {k}")
        for k, v in probes.items()
    }


def _check_sets(ood_sources, probes) -> None:
    from dlsr_deploy.errors import ConfigError

    names = [n for n, _ in ood_sources]
    if not ood_sources and not probes:
        raise ConfigError("ood: give at least one OOD set, or probes", param="ood")
    if len(set(names)) != len(names):
        raise ConfigError(f"ood: OOD set names must be unique, got {names}; name them NAME=PATH", param="ood")
    if any(n.startswith("probe:") for n in names):
        raise ConfigError(
            f"ood: set names starting with 'probe:' are reserved for the probes, got {names}", param="ood"
        )


def _check_paths(id_source: str, ood_sources) -> None:
    """Every plain path given exists, before any feature is computed (globs and 'folder#split'
    sources are resolved when they are read)."""
    from dlsr_deploy.errors import DataError

    for param, src in [("id_source", id_source), *(("ood", s) for _, s in ood_sources)]:
        s = str(src)
        if not any(c in s for c in "*?[#") and not Path(s).exists():
            raise DataError(f"{param}: input not found: {s}", param=param)


def run_eval(
    model_dir: Path,
    id_source: str,
    ood_sources: Sequence[Tuple[str, str]],
    score_cfgs: Sequence[ScoreConfig],
    *,
    out_dir: Optional[Path] = None,
    knn_k: int = 10,
    limit: Optional[int] = None,
    cache_dir: Optional[Path] = None,
    stem: str = "eval",
    command: str = "",
    plot: bool = True,
    feature_engine: str = "eager",
    probes: Optional[int] = None,
    n_boot: int = 200,
    headline: Optional[str] = None,
    plot_scores: Sequence[str] = (),
    html: bool = True,
) -> dict:
    """dlsr-eval: every score per score config on ID vs each OOD set (and, with probes=N, the
    synthetic probes made from N ID test images) -> JSON, Markdown, HTML, PNG, scores.
    headline: the score the report leads with (default: the one dlsr-export would pick for this
    run); plot_scores: more scores to plot after it."""
    log, t0 = info, time.time()
    _check_sets(ood_sources, probes)
    model_dir = Path(model_dir)
    cfg = ModelConfig.load(model_dir / CONFIG)
    _check_paths(id_source, ood_sources)  # these three before any feature is computed
    out = Path(out_dir) if out_dir else model_dir / "eval"
    _check_outputs(out, stem, id_source, ood_sources)
    _check_score_names(model_dir, score_cfgs[0], headline, plot_scores)
    from dlsr_deploy.model.reference import run_holdout_z0

    hold_z = run_holdout_z0(model_dir, cfg)
    feat = dict(cache_dir=cache_dir, limit=limit, engine=feature_engine, probes=probes)
    id_set, z_id, z_ood = eval_features(cfg, id_source, ood_sources, feat)
    result = _result_header(cfg, model_dir, (id_set, id_source, z_id), ood_sources, z_ood, feat, n_boot, command)
    first = None
    for sc in score_cfgs:
        o = {"n_boot": n_boot}
        block, s_id, s_ood = _eval_config(model_dir, sc, hold_z, z_id, z_ood, o, log)
        result["runs"].append(block)
        first = first or {"id": s_id, "ood": s_ood, **o, "metrics": block["metrics"]}
    result["headline"] = _headline(first, headline, plot_scores)
    result["baselines"] = _baselines(model_dir, z_id, z_ood, knn_k, n_boot, log)
    result["seconds"] = round(time.time() - t0, 1)
    shown = [result["headline"]["score"], *[s for s in plot_scores if s != result["headline"]["score"]]]
    _write_eval(result, out, stem, shown if plot else None, first, log)
    if html:
        from dlsr_deploy.report.eval_report import eval_page
        from dlsr_deploy.report.html import write_page

        view = _report_view(result, first, shown, id_set.images, dict(ood_sources), (cfg, limit))
        log(f"wrote {write_page(out / f'{stem}.html', eval_page(view))}")
    return result


def _result_header(cfg, model_dir: Path, id_side, ood_sources, z_ood: dict, feat: dict, n_boot: int, command: str):
    """The JSON's description of the run, the sets and the machine (before any score)."""
    from dlsr_deploy.evaluation import DIRECTION, POSITIVE, machine_info, now

    id_set, id_source, z_id = id_side
    return {
        "direction": DIRECTION,
        "positive_class": POSITIVE,
        "intervals": f"95 % percentile bootstrap, {n_boot} replicates, ID and OOD resampled" if n_boot else "none",
        "command": command,
        "created": now(),
        "machine": machine_info(),
        "model": str(model_dir),
        "model_config": cfg.to_dict(),
        "feature_engine": feat["engine"],
        "id_set": {"name": id_set.name, "source": str(id_source), "n": int(len(z_id))},
        "ood_sets": [{"name": k, "source": str(src), "n": int(len(z_ood[k]))} for k, src in ood_sources],
        "probes": {"sets": _probe_info(z_ood), "seconds": feat.get("probe_seconds")} if feat["probes"] else None,
        "runs": [],
    }


def _check_outputs(out: Path, stem: str, id_source: str, ood_sources) -> None:
    """No report file is an input, and none lands inside an input folder (it would be read as an
    image or a pack next time)."""
    from dlsr_deploy.paths import refuse_overwrite

    inputs = [id_source, *(s for _, s in ood_sources)]
    for suffix in (".json", ".md", ".png", ".html", "_scores.npz"):
        refuse_overwrite(out / f"{stem}{suffix}", "out_dir", inputs)


def _check_score_names(model_dir: Path, sc: ScoreConfig, headline: Optional[str], plot_scores: Sequence[str]) -> None:
    """--headline / --plot-scores name scores this run computes (its scores and their combinations)."""
    from dlsr_deploy.errors import ConfigError
    from dlsr_deploy.model.reference import EagerReference
    from dlsr_deploy.scoring import combination_names

    if not headline and not plot_scores:
        return
    base = EagerReference.from_run(model_dir, sc, with_lr=None, combos=[]).score_names
    names = list(base) + combination_names(base)
    for s, param in [(headline, "headline"), *((p, "plot_scores") for p in plot_scores)]:
        if s and s not in names:
            raise ConfigError(f"{param}: expected a score of this run ({', '.join(names)}), got {s!r}", param=param)


def _headline(first: dict, requested: Optional[str], plot_scores: Sequence[str]) -> dict:
    """The report's headline (the exporter's default for this run unless given) and its threshold
    at 95 % TPR of the held-out ID scores (the bundle's calibration) -> the JSON's record."""
    from dlsr_deploy.errors import ConfigError
    from dlsr_deploy.export.calibrate import default_headline, fit_shape
    from dlsr_deploy.scoring import threshold_at_tpr

    names = list(first["metrics"])
    for s, param in [(requested, "headline"), *((p, "plot_scores") for p in plot_scores)]:
        if s is not None and s not in names:  # a combination the held-out scores could not make
            raise ConfigError(f"{param}: expected a score of this run ({', '.join(names)}), got {s!r}", param=param)
    if requested:
        head, how = requested, "given with --headline"
    else:
        head, why = default_headline(names, fit_shape(first["ref"]))
        how = f"the headline dlsr-export picks for this run: {why['how']}"
    hold = first.get("hold")
    cal, on = (hold, f"held-out ID images ({len(hold[head])})") if hold else (first["id"], "ID test images")
    first["thresholds"] = {s: threshold_at_tpr(cal[s], 0.95) for s in names}
    first["centers"] = {s: float(np.median(cal[s])) for s in names}
    first["calibrated_on"] = on if hold else "ID test images (this run has no held-out ID set)"
    return {"score": head, "how": how, "threshold": first["thresholds"][head], "target_tpr": 0.95, "calibrated_on": on}


def _report_view(result: dict, first: dict, shown, id_images, sources: dict, cfg_limit):
    """The HTML report's inputs: scores, thresholds, metrics and the gallery images (no paths)."""
    from dlsr_deploy.data import load_images
    from dlsr_deploy.report.eval_report import EvalView
    from dlsr_deploy.report.html import display_name

    cfg, limit = cfg_limit
    ood_images = {}
    for name in (k for k in first["ood"] if not k.startswith("probe:")):
        if len(next(iter(first["ood"][name].values()))) <= GALLERY_SETS_MAX_IMAGES:
            ood_images[name] = load_images(sources[name], size=cfg.feature.native_size, limit=limit).images
    sets = ", ".join(f"{o['name']} ({o['n']})" for o in result["ood_sets"])
    m = result["machine"]
    return EvalView(
        headline=result["headline"]["score"],
        how=result["headline"]["how"],
        thresholds=first["thresholds"],
        centers=first["centers"],
        calibrated_on=first["calibrated_on"],
        target_tpr=0.95,
        id_scores=first["id"],
        ood_scores=first["ood"],
        metrics=first["metrics"],
        id_images=id_images,
        ood_images=ood_images,
        plot_scores=shown[1:],
        meta=[
            f"run: {display_name(result['model'])}; backbone {cfg.feature.backbone} @ {cfg.feature.input_size}",
            f"ID test set: {result['id_set']['name']} ({result['id_set']['n']}); OOD sets: {sets or 'none'}",
            f"{result['direction']}; {result['intervals']}",
            f"created {result['created']} on {m.get('cpu', '?')} ({m.get('cpu_count', '?')} CPUs)",
        ],
    )


def eval_features(cfg, id_source, ood_sources, o: dict):
    """(ID image set, z0 of the ID set, {set or probe:<name>: z0}) through the feature cache: what
    dlsr-eval scores, for scripts that refit or rescore on the same z0. o: cache_dir, limit,
    engine ('eager' | 'ort') and probes (None, or how many ID images the probes are made from)."""
    from dlsr_deploy.data import load_images
    from dlsr_deploy.model.features import default_cache_dir
    from dlsr_deploy.pipeline import all_features, all_features_for

    cache = o["cache_dir"] or default_cache_dir()
    id_set = load_images(id_source, size=cfg.feature.native_size, limit=o["limit"])
    z_id = all_features(id_set.images, cfg, cache, engine=o["engine"], desc=f"features {id_set.name}")
    z_ood = {name: all_features_for(src, cfg, cache, limit=o["limit"], engine=o["engine"]) for name, src in ood_sources}
    if o["probes"]:
        t = time.time()
        z_ood.update(_probe_features(id_set.images, cfg, cache, o["probes"], o["engine"]))
        o["probe_seconds"] = round(time.time() - t, 1)  # making the probes and their features (cache misses)
    return id_set, z_id, z_ood


def _probe_info(z_ood: dict) -> dict:
    from dlsr_deploy.probes import PROBES

    return {
        k.split(":", 1)[1]: {
            "kind": PROBES[k.split(":", 1)[1]].kind,
            "n": int(len(v)),
            "stands_for": PROBES[k.split(":", 1)[1]].stands_for,
        }
        for k, v in z_ood.items()
        if k.startswith("probe:")
    }


def _baselines(model_dir: Path, z_id, z_ood: Dict[str, np.ndarray], knn_k: int, n_boot: int, log) -> Optional[dict]:
    """The earlier Mahalanobis baseline (ridge) and cosine KNN, fitted on the training z0."""
    from dlsr_deploy.baselines import CosineKNN, Mahalanobis
    from dlsr_deploy.evaluation import metrics_table, short_table
    from dlsr_deploy.probes import shift_probes

    if not (model_dir / TRAIN_Z0).exists():
        return None
    train_z = np.load(model_dir / TRAIN_Z0)
    d = train_z.shape[1]  # the primary view's z0 (a run of several views holds theirs after it)
    z_id, z_ood = z_id[:, :d], {k: v[:, :d] for k, v in z_ood.items()}
    maha = Mahalanobis.fit(train_z)
    knn = CosineKNN.fit(train_z, k=min(knn_k, len(train_z)))
    b_id = {"mahalanobis": maha.score(z_id), f"knn{knn.k}": knn.score(z_id)}
    b_ood = {k: {"mahalanobis": maha.score(v), f"knn{knn.k}": knn.score(v)} for k, v in z_ood.items()}
    table = metrics_table(b_id, b_ood, n_boot=n_boot, probes=shift_probes())
    log("\nfeature baselines on the same z0 (fitted on the training z0)")
    log(short_table(table))
    return table


def _write_eval(
    result: dict, out_dir: Path, stem: str, plot: Optional[Sequence[str]], all_scores: Optional[dict], log
) -> None:
    """STEM.json / .md / .png (the headline, then the --plot-scores) and STEM_scores.npz (every score)."""
    from dlsr_deploy.evaluation import write_report
    from dlsr_deploy.io import atomic_write

    shown = None
    if plot is not None and all_scores is not None:
        real = {n: d for n, d in all_scores["ood"].items() if not n.startswith("probe:")} or all_scores["ood"]
        shown = {
            "id": {k: all_scores["id"][k] for k in plot},
            "ood": {n: {k: d[k] for k in plot} for n, d in real.items()},
            "thresholds": {k: all_scores["thresholds"][k] for k in plot},
        }
    if result.get("baselines") is None:
        result.pop("baselines", None)
    paths = write_report(result, out_dir, shown, stem=stem)
    if all_scores is not None:
        arrays = {f"id.{k}": v for k, v in all_scores["id"].items() if k != "z0_hat"}
        arrays.update({f"{n}.{k}": v for n, d in all_scores["ood"].items() for k, v in d.items() if k != "z0_hat"})
        atomic_write(out_dir / f"{stem}_scores.npz", lambda p: np.savez_compressed(open(p, "wb"), **arrays))
    log("\nwrote " + ", ".join(str(p) for p in paths))
