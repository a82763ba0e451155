"""One schema for the manifest (issue 29): a manifest whose digest was recomputed after a careless
edit is still refused, naming the field, by every reader (Detector, dlsr-inspect)."""

import json
import shutil

import pytest
from click.testing import CliRunner

from dlsr_deploy.cli import inspect
from dlsr_deploy.errors import BundleError
from dlsr_deploy.manifest import content_digest, read_manifest
from dlsr_deploy.runtime import Detector

TOL = ("rank_corr", "auroc_change", "flip_rate", "z0_rel")
EDITS = {
    "nan threshold": (lambda m: m["threshold"].update(value=float("nan")), "threshold.value"),
    "-inf threshold": (lambda m: m["threshold"].update(value=float("-inf")), "threshold.value"),
    "threshold of another score": (lambda m: m["threshold"].update(score="mse"), "threshold.score"),
    "value not its score's": (lambda m: m["threshold"].update(value=12345.0), "threshold.value"),
    "zero scale": (lambda m: m["threshold"].update(scale=0.0), "threshold.scale"),
    "nan center": (lambda m: m["threshold"].update(center=float("nan")), "threshold.center"),
    "tpr out of range": (lambda m: m["threshold"].update(target_tpr=1.5), "target_tpr"),
    "backends as a string": (lambda m: m.update(backends="ort-cpu"), "'backends'"),
    "unknown backend": (lambda m: m.update(backends=["cuda-magic"]), "'backends'"),
    "tolerances of strings": (lambda m: m["self_check"].update(tolerances=dict.fromkeys(TOL, "x")), "tolerances"),
    "tolerance out of range": (lambda m: m["self_check"]["tolerances"].update(flip_rate=7), "flip_rate"),
    "tolerances missing a key": (lambda m: m["self_check"]["tolerances"].pop("z0_rel"), "tolerances"),
    "negative chunk": (lambda m: m["self_check"].update(chunk=-3), "self_check.chunk"),
    "name climbing out": (lambda m: m.update(name="../../etc"), "'name'"),
    "hidden name": (lambda m: m.update(name=".x"), "'name'"),
    "sha256 not hex": (lambda m: m["files"]["backbone"].update(sha256="zz"), "sha256"),
    "negative size": (lambda m: m["files"]["backbone"].update(bytes=-1), "bytes"),
    "golden outside": (lambda m: m["golden"].update(name="../golden.npz"), "golden.name"),
    "targets not a list": (lambda m: m["precision"].update(verified_targets="x86_64"), "verified_targets"),
    "parity passed as a string": (lambda m: m["parity"].update(passed="false"), "parity.passed"),
}


def _edited(src, dst, fn):
    shutil.copytree(src, dst)
    data = json.loads((dst / "manifest.json").read_text())
    fn(data)
    data["digest"] = content_digest(data)
    (dst / "manifest.json").write_text(json.dumps(data))
    return dst


@pytest.mark.parametrize("case", sorted(EDITS))
def test_nonsense_fields_are_refused_naming_the_field(bundles, tmp_path, case):
    fn, needle = EDITS[case]
    b = _edited(bundles["fp32"], tmp_path / "b", fn)
    with pytest.raises(BundleError, match=needle.replace(".", r"\.").replace("'", "'")):
        read_manifest(b, verify=False)
    r = CliRunner().invoke(inspect, [str(b)])
    assert r.exit_code == 1 and needle in r.output and "Traceback" not in r.output


def test_a_bundle_without_a_golden_set_is_refused_unless_told(bundles, tmp_path):
    b = _edited(bundles["fp32"], tmp_path / "b", lambda m: m.pop("golden"))
    (b / "golden.npz").unlink()
    with pytest.raises(BundleError, match="no golden set"):
        Detector.load(b, backend="ort-cpu")
    Detector.load(b, backend="ort-cpu", self_check="never").close()  # said explicitly: allowed


def test_the_real_bundles_pass_the_schema(bundles):
    for p in bundles.values():
        assert read_manifest(p).name
