from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLSR_CACHE", str(tmp_path / "dlsr-cache"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def tiny_images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    from bundles import make_run

    return make_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def bundles(tiny_run, tmp_path_factory):
    """{'fp32': path, 'fp16': path} exported from the tiny run (verified on export)."""
    from dlsr_deploy.export.exporter import export_bundle

    run, id_path, ood_path = tiny_run
    out = tmp_path_factory.mktemp("bundles")
    res = {}
    for prec in ("fp32", "fp16"):
        export_bundle(
            run,
            out / prec,
            fp16=prec == "fp16",
            verify_ood=[str(ood_path)],
            n_verify=64,
            fused=prec == "fp32",
            with_lr=True,
        )
        res[prec] = out / prec
    return res
