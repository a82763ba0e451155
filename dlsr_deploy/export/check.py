"""dlsr-check: re-run the parity check of a bundle against its source run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional, Sequence

from dlsr_deploy.errors import BundleError
from dlsr_deploy.run_folder import CONFIG


def _refuse_guarded(m) -> None:
    """A low-precision backbone's bundle (bf16, guarded int8) was checked by the accuracy guard
    against the FP32 bundle, with heads fitted on its own features: the run's FP32 heads are not
    its reference."""
    if isinstance(m.data["precision"].get(m.precision), dict):
        raise BundleError(
            f"{m.path}: a {m.precision} bundle's density heads were fitted on its {m.precision} features and its "
            f"export was checked by the accuracy guard against the FP32 bundle (manifest precision.{m.precision}), "
            "not against the run's FP32 heads; use dlsr-check --on-target, which replays its golden set on this machine"
        )


def check_bundle(
    bundle: Path,
    model_dir: Optional[Path],
    data: Optional[str],
    ood: Sequence[str],
    n_verify: int,
    tol_for: Callable,
    report_path: Optional[Path] = None,
) -> dict:
    """dlsr-check: the bundle against PyTorch eager on ID (and OOD) images -> the report (the CLI prints it)."""
    from dlsr_deploy.export.calibrate import calibration_images
    from dlsr_deploy.export.verify import (
        ENGINE_NAMES,
        graph_engine,
        guard_tolerances,
        verify_bundle_graphs,
        verify_sets,
    )
    from dlsr_deploy.io import atomic_write_text
    from dlsr_deploy.manifest import read_manifest
    from dlsr_deploy.model.reference import EagerReference

    m = read_manifest(bundle, verify=True)
    _refuse_guarded(m)
    model_dir = Path(model_dir or m.source_run or "")
    if not (model_dir / CONFIG).exists():
        raise BundleError(f"model_dir: the source run {model_dir} is not found; give the run folder", param="model_dir")
    ref = EagerReference.from_run(
        model_dir,
        m.score_config,
        with_lr=any(n.startswith("lr") for n in m.score_names),
        density=m.density_heads,
        combos=m.combinations,
    )
    if ref.score_names != m.score_names:
        raise BundleError(
            f"{m.path}: the bundle's scores {m.score_names} differ from what {model_dir} gives {ref.score_names}; "
            "give the right model_dir",
            param="model_dir",
        )
    id_images, _ = calibration_images(model_dir, data, m.native_size)
    precision = m.data["precision"]
    engine = graph_engine(precision.get("int8_scheme"))  # where the export verified it, not always ORT
    rep, _ = verify_bundle_graphs(
        m.path,
        ref,
        id_images[:n_verify],
        verify_sets(ood, m.native_size, n_verify),
        m.threshold.all,
        guard_tolerances(tol_for(m.precision), precision.get("int8_backbone_from")),
        engine=engine,
    )
    rep["bundle"] = str(m.path)
    rep["precision"] = m.precision
    rep["engine"] = ENGINE_NAMES[engine]
    if report_path:
        atomic_write_text(Path(report_path), json.dumps(rep, indent=2) + "\n")
    return rep
