"""dlsr-export, dlsr-check, dlsr-inspect, dlsr-keygen, dlsr-build: making and checking bundles."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dlsr_deploy.cli.common import CONTEXT, apply, backend_option, fields, friendly, keys_from, trusted_key_option
from dlsr_deploy.cli.workflow import SCORE_OPTS


def _precisions(ctx, param, value):
    """--precision: one of fp32, fp16, bf16, int8, or several comma-separated (a family)."""
    if value is None:
        return None
    got = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in got if p not in ("fp32", "fp16", "bf16", "int8")]
    if bad or not got or len(set(got)) != len(got):
        raise click.BadParameter(f"expected fp32, fp16, bf16 or int8, or distinct ones comma-separated, got {value!r}")
    return got


TOL_OPTS = [
    click.option("--rank-corr", type=click.FloatRange(0, 1), default=None, help="Minimum Spearman rank correlation of each score (default 0.9999 FP32, 0.999 FP16)."),
    click.option("--auroc-change", type=click.FloatRange(min=0), default=None, help="Maximum AUROC change vs eager FP32 (default 0.002)."),
    click.option("--flip-rate", type=click.FloatRange(0, 1), default=None, help="Maximum share of ID/OOD decisions that flip at the threshold (default 0.005; one flip always allowed)."),
    click.option("--z0-rel", type=click.FloatRange(min=0), default=None, help="Maximum per-image relative L2 error of z0 (default 1e-4 FP32, 0.02 FP16)."),
]


def tolerances(precision, rank_corr, auroc_change, flip_rate, z0_rel):
    """The precision's default tolerances with the given ones replacing them."""
    from dataclasses import replace

    from dlsr_deploy.parity import Tolerances

    given = dict(rank_corr=rank_corr, auroc_change=auroc_change, flip_rate=flip_rate, z0_rel=z0_rel)
    return replace(Tolerances.for_precision(precision), **{k: v for k, v in given.items() if v is not None})


EXPORT_KEYS = ("fp16", "int8", "fused", "with_lr", "calibrate_on", "target_tpr", "verify_ood", "n_verify", "headline",
               "force", "keep_failed", "int8_backbone_from", "int8_scheme", "sign", "slim", "bf16", "guarded")


@click.command(context_settings=CONTEXT)
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Run directory written by dlsr-train.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Bundle folder (default: export/<run name>-<precision>).")
@click.option("--precision", callback=_precisions, default=None, help="The backbone's precision (default fp32), or several, comma-separated (fp32,bf16): a bundle family in --out, one sub-folder each, that Detector.load / dlsr-score / dlsr-serve open as the fastest member this machine was verified for (bf16 only on CPUs with bf16 units). bf16: OpenVINO's bf16 on CPUs with AMX or avx512_bf16, density heads refitted on the features the bf16 backbone produces, and an accuracy guard against the FP32 bundle (AUROC within its interval on every set, <= 2 %% decisions flipped) that refuses a bundle that fails, with the numbers; the bundle refuses to load on CPUs without bf16. int8: NNCF static INT8 backbone on OpenVINO (blocks from --int8-backbone-from, default 1, the taps FP32), heads refitted on its features, the same guard (unlike --int8, which quantizes the denoiser and checks bits). fp16: as --fp16.")
@click.option("--fp16", is_flag=True, help="FP16 weights and activations in the graph (FP32 I/O, norms, z-score, DDIM arithmetic, density heads and score reductions); for a strongly typed TensorRT build.")
@click.option("--int8", is_flag=True, help="8-bit denoiser MatMuls for CPUs (not TensorRT); backbone FP32 unless --int8-backbone-from. Refused when parity fails, with the reason and what to keep in FP32.")
@click.option("--int8-scheme", type=click.Choice(["dynamic", "weight-only", "openvino"]), default="dynamic", show_default=True, help="With --int8, the denoiser's 8 bits: 'dynamic' = uint8 weights, activations quantized per call (U8U8, the same numbers on every x86 CPU); 'weight-only' = MatMulNBits int8 blocks of 32 (ONNX Runtime only); 'openvino' = int8 per-channel weights behind DequantizeLinear, calibrated and verified on OpenVINO (pip install 'dlsr-deploy[int8]').")
@click.option("--int8-backbone-from", type=click.IntRange(min=0), default=None, help="With --int8: also static INT8 (calibrated on held-out ID images) for backbone blocks from this index on; the stem and earlier blocks stay FP32. On the paper-size model it costs more accuracy than the guard allows (README).")
@click.option("--t-start", type=click.IntRange(min=0), default=3, show_default=True, help="Noise level the reconstruction starts from.")
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True, help="DDIM steps K unrolled into the graph (K = 1 by the sweep's held-out ID loss; README).")
@apply(SCORE_OPTS)
@click.option("--lr", "with_lr", is_flag=True, help="Also output lr_<score> (first-epoch minus final model): adds the first-epoch LFDN to the graph and doubles the denoiser cost.")
@click.option("--fused", is_flag=True, help="Also write pipeline.onnx: images -> every score in one graph.")
@click.option("--calibrate-on", default=None, help="ID images for the threshold (default: the images the run held out of training).")
@click.option("--target-tpr", type=float, default=0.95, show_default=True, help="Share of ID images that must fall below the threshold, in (0, 1).")
@click.option("--verify-ood", multiple=True, help="OOD images added to the parity set (AUROC change is checked only with these) and, with --headline auto, the real OOD sets of the selection.")
@click.option("--n-verify", type=click.IntRange(min=1), default=256, show_default=True, help="Images per set used for parity.")
@click.option("--no-verify", is_flag=True, help="Skip the parity check against PyTorch eager.")
@click.option("--max-batch", type=click.IntRange(min=1), default=256, show_default=True, help="Largest batch of the TensorRT optimisation profile (min 1, opt 32).")
@click.option("--headline", default=None, help="The score the threshold is for: a score name (mfsim, mse, maha_lw, gauss_layer, ...), or 'auto' = the selection rule (README 'Choosing the headline': bootstrap intervals on the --verify-ood sets and the synthetic shift probes; a challenger must not be worse anywhere and be better on the worst set). Default: the package default, maha_ridge, or gauss_layer when the model was trained on fewer than 3 images per z0 dimension (README 'The default follows the training size'). The manifest records how it was chosen.")
@click.option("--slim", is_flag=True, help="Ship only the graphs the headline needs (backbone, density heads and the one-graph decision: for the package default 40 MB instead of 129 MB, no denoiser). Both scoring paths are still verified before the denoiser is left out; asking a slim bundle for a DLSR score is a one-line error.")
@click.option("--no-density", is_flag=True, help="Leave the density heads and combined scores out of the bundle (DLSR scores only).")
@click.option("--force", is_flag=True, help="Replace the bundle in --out: only a folder holding a bundle dlsr-export wrote (checked by its manifest digest), and only the files that bundle lists.")
@click.option("--keep-failed", is_flag=True, help="Keep a bundle that fails parity at --out (default: it goes to OUT.failed for inspection, and --out is untouched).")
@click.option("--sign", type=click.Path(dir_okay=False, exists=True), default=None, help="Ed25519 private key (PEM, from dlsr-keygen) that signs the manifest; runtimes given the public key refuse unsigned or foreign bundles. An encrypted key is decrypted with $DLSR_SIGN_PASSWORD.")
@apply(TOL_OPTS)
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--verbose", is_flag=True, help="Debug messages too (the dlsr_deploy logger at DEBUG).")
@friendly
def export(**o):
    """Export a trained run to a deployable bundle: backbone.onnx (uint8 images -> z0),
    heads.onnx (z0 -> density heads and their combinations), denoiser.onnx (z0 -> every score,
    the DDIM loop and its stored noise inside), optionally pipeline.onnx, golden.npz and
    manifest.json with a threshold calibrated on ID images only. Both scoring paths are verified
    against PyTorch eager unless --no-verify (exit 1 on failure)."""
    given = o.pop("precision")
    if given is not None and len(given) > 1:
        return _export_family(o, given)
    _export_one(o, given[0] if given else None)


def _export_one(o: dict, given) -> None:
    from dlsr_deploy.config import ScoreConfig
    from dlsr_deploy.export.exporter import export_bundle
    from dlsr_deploy.scoring import BUNDLE_HEADS

    if given is not None and (o["fp16"] or o["int8"]) and given != ("fp16" if o["fp16"] else "int8"):
        raise click.UsageError(f"--precision {given} contradicts {'--fp16' if o['fp16'] else '--int8'}")
    o["fp16"], o["int8"] = o["fp16"] or given == "fp16", o["int8"] or given == "int8"
    o["bf16"], o["guarded"] = given == "bf16", given == "int8"
    if o["guarded"]:  # the verified INT8 backbone: NNCF on OpenVINO, blocks >= 1 (the taps FP32), heads refitted
        o["int8_scheme"] = "openvino"
        o["int8_backbone_from"] = 1 if o["int8_backbone_from"] is None else o["int8_backbone_from"]
    if (o["int8_backbone_from"] is not None or o["int8_scheme"] != "dynamic") and not o["int8"]:
        raise click.UsageError("--int8-backbone-from and --int8-scheme need --int8")
    precision = given or ("fp16" if o["fp16"] else "int8" if o["int8"] else "fp32")
    out = o["out"] or Path("export") / f"{o['model_dir'].name}-{precision}"
    if o["sign"] is not None:  # read once, now: a pipe (/dev/stdin) cannot be read twice
        from dlsr_deploy.signing import load_signing_key

        o["sign"] = load_signing_key(o["sign"])
    export_bundle(
        o["model_dir"],
        out,
        score_cfg=ScoreConfig(**fields(ScoreConfig, o)),
        verify=not o["no_verify"],
        tolerances=tolerances(precision, o["rank_corr"], o["auroc_change"], o["flip_rate"], o["z0_rel"]),
        batch_profile=(1, min(32, o["max_batch"]), o["max_batch"]),
        density=() if o["no_density"] else BUNDLE_HEADS,
        **{k: o[k] for k in EXPORT_KEYS},
    )


def _export_family(o: dict, precisions: list) -> None:
    """Each precision into OUT/<precision>, then OUT/family.json over the members that passed."""
    from dlsr_deploy.errors import ConfigError, ParityError
    from dlsr_deploy.runtime.family import FAMILY_FILE, write_family

    out = o["out"] or Path("export") / f"{o['model_dir'].name}-family"
    if (out / "manifest.json").exists():
        raise click.UsageError(f"--out {out} holds a bundle; a family needs its own folder")
    if out.is_dir() and any(out.iterdir()) and not (out / FAMILY_FILE).exists():  # --force replaces bundles only
        raise click.UsageError(f"--out {out} exists and is not a bundle family; choose another folder")
    done, refused = {}, {}
    for prec in precisions:
        try:
            _export_one({**o, "out": out / prec, "fp16": False, "int8": False}, prec)
            done[prec] = prec
        except (ParityError, ConfigError) as exc:  # a guard's refusal leaves the others; the family says what ships
            if isinstance(exc, ConfigError) and exc.param != "precision":
                raise
            refused[prec] = str(exc)
            click.echo(f"{prec}: refused: {exc}", err=True)
    if not done:
        raise ParityError(f"{out}: every precision was refused ({', '.join(refused)})")
    write_family(out, done)
    if not o["quiet"]:
        click.echo(f"family {out}: {', '.join(done)}" + (f" ({', '.join(refused)} refused)" if refused else ""), err=True)


def _check_on_target(bundle, backend, report, quiet, keys=None) -> dict:
    import json

    from dlsr_deploy.io import atomic_write_text
    from dlsr_deploy.parity import format_report
    from dlsr_deploy.runtime import Detector
    from dlsr_deploy.runtime.selfcheck import run_self_check

    with Detector.load(bundle, backend=backend, self_check="never", trusted_keys=keys) as det:
        det.manifest.golden_path()  # a clear error for bundles without a golden set
        rep = run_self_check(det.manifest, det.backend, chunk=det.max_batch)
    rep.update(bundle=str(bundle), precision=det.manifest.precision)
    if not quiet:
        click.echo(format_report(rep))
    if report:
        atomic_write_text(Path(report), json.dumps(rep, indent=2, default=float) + "\n")
    return rep


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None, help="The run the bundle came from (default: the path recorded in the manifest).")
@click.option("--data", default=None, help="ID images for the check (default: the calibration images).")
@click.option("--ood", multiple=True, help="OOD images added to the check.")
@click.option("--n-verify", type=click.IntRange(min=1), default=256, show_default=True, help="Images per set.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the full report as JSON here.")
@click.option("--on-target", is_flag=True, help="Replay the bundle's golden set on this machine and backend instead (no torch, no source run needed): the load-time self-check on both scoring paths, always run and printed.")
@backend_option("With --on-target: the backend to check.")
@apply(TOL_OPTS)
@click.option("--quiet", is_flag=True, help="No report on stdout.")
@click.option("--verbose", is_flag=True, help="Debug messages too (the dlsr_deploy logger at DEBUG).")
@trusted_key_option()
@friendly
def check(bundle, model_dir, data, ood, n_verify, report, on_target, backend, rank_corr, auroc_change, flip_rate, z0_rel, quiet, trusted_keys):
    """Compare a bundle with PyTorch eager FP32: z0, z0_hat and every score (abs/rel error,
    Spearman rank correlation, AUROC change, decisions that flip at the calibrated threshold),
    on the engine its export verified it on (ONNX Runtime CPU; OpenVINO CPU for --int8-scheme
    openvino bundles) and with the precision's default tolerances unless given others (z0 is not
    checked for an 8-bit backbone, as at export). With --on-target, compare this machine's backend
    with the golden outputs stored in the bundle. Exit code 1 when a tolerance is exceeded."""
    keys = keys_from(trusted_keys)
    if report is not None:
        from dlsr_deploy.paths import refuse_overwrite

        refuse_overwrite(report, "report", bundles=[bundle], keys=list(trusted_keys))
    if on_target:
        rep = _check_on_target(bundle, backend, report, quiet, keys)
    else:
        from dlsr_deploy.export.check import check_bundle
        from dlsr_deploy.manifest import read_manifest

        if keys is not None:  # a bundle not signed by a trusted key is refused before any work
            read_manifest(bundle, trusted_keys=keys)

        tol = lambda p: tolerances(p, rank_corr, auroc_change, flip_rate, z0_rel)  # noqa: E731
        rep = check_bundle(bundle, model_dir, data, ood, n_verify, tol, report)
        if not quiet:
            from dlsr_deploy.parity import format_report

            click.echo(format_report(rep))
    if not rep["passed"]:
        sys.exit(1)


@click.command(context_settings=CONTEXT)
@click.argument("stem", type=click.Path(dir_okay=False, path_type=Path))
@friendly
def keygen(stem):
    """Make an Ed25519 key pair for signed bundles: STEM.key (private, mode 0600; give it to
    dlsr-export --sign) and STEM.pub (give it to Detector.load(trusted_keys=...) or dlsr-score
    --trusted-key). Existing files are never overwritten."""
    from dlsr_deploy.signing import generate_keypair, public_key_id

    key, pub = generate_keypair(stem)
    click.echo(f"wrote {key} (private: keep it secret) and {pub} (key id {public_key_id(pub.read_bytes())})")


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw manifest instead.")
@trusted_key_option()
@friendly
def inspect(bundle, as_json, trusted_keys):
    """Print a bundle's manifest readably, then verify the manifest's digest and every file's
    sha256 (an edited manifest or a tampered / truncated file is reported by name, exit code 1).
    A bundle whose export failed its parity check is shown and exits with code 1 too."""
    import json

    from dlsr_deploy.manifest import describe, read_manifest, verify_digest, verify_files
    from dlsr_deploy.runtime.family import is_family

    if is_family(bundle):  # a family: what each member is and which one this machine loads
        return _inspect_family(bundle, as_json, trusted_keys)
    m = read_manifest(bundle, verify=False)
    click.echo(json.dumps(m.data, indent=2) if as_json else describe(m))
    verify_digest(m.data, m.path / "manifest.json")
    ok = verify_files(m)
    click.echo(f"hashes   manifest digest and {len(ok)} file(s) verified: " + ", ".join(ok))
    keys = keys_from(trusted_keys)
    if keys is not None:
        from dlsr_deploy.signing import verify_signature

        click.echo(f"signed   by trusted key {verify_signature(m.data, keys, m.path / 'manifest.json')}")
    if not m.parity_passed:
        click.echo(f"error: this bundle FAILED its parity check at export ({'; '.join(m.parity_failures)[:300]}); "
                   "runtimes refuse it", err=True)
        sys.exit(1)


def _inspect_family(folder: Path, as_json: bool, trusted_keys) -> None:
    """Every member inspected in turn, then the member Detector.load would open here and why."""
    from dlsr_deploy.runtime.family import pick_member, read_family

    for prec, member in read_family(folder).items():
        click.echo(f"== member {prec}: {member}")
        inspect.callback(member, as_json, trusted_keys)
    member, why = pick_member(folder)
    skipped = "; ".join(f"{k}: {v}" for k, v in why["skipped"].items())
    click.echo(f"family   this machine loads {why['chosen']} ({member})" + (f"; skipped {skipped}" if skipped else ""))


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--engines", type=click.Path(file_okay=False, path_type=Path), default=Path("engines"), show_default=True, help="Engine cache root (plans + build.json per TensorRT version and GPU).")
@click.option("--max-batch", type=click.IntRange(min=1), default=None, help="Largest batch of the optimisation profile (default: the bundle's).")
@click.option("--workspace-mb", type=click.IntRange(min=1), default=None, help="TensorRT workspace limit (default: TensorRT decides).")
@click.option("--no-build", is_flag=True, help="Only check the cache; fail with the reason when a plan is missing or stale.")
@click.option("--quiet", is_flag=True, help="No build progress.")
@click.option("--verbose", is_flag=True, help="Debug messages too (the dlsr_deploy logger at DEBUG).")
@trusted_key_option()
@friendly
def build(bundle, engines, max_batch, workspace_mb, no_build, quiet, trusted_keys):
    """Build (or refresh) the TensorRT plans of every graph of a bundle on this GPU, without torch.
    Plans are reused only when TensorRT version, GPU, compute capability, profile and source ONNX
    all match; otherwise they are rebuilt."""
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.runtime.backend import OpenOptions
    from dlsr_deploy.runtime.trt import TrtBackend

    m = read_manifest(bundle, trusted_keys=keys_from(trusted_keys), hold=True)  # plans built from what was verified
    opts = OpenOptions(max_batch=max_batch or m.batch_profile["max"], engines_dir=engines, build=not no_build)
    be = TrtBackend(m, opts, workspace_bytes=workspace_mb * 2**20 if workspace_mb else None)
    for graph, info in be.build_all().items():
        click.echo(f"{graph}: {info['plan']} ({info['reason']}); layer outputs by precision {info.get('layer_precisions')}")
    be.close()
