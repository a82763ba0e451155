"""Bundle families (dlsr_deploy/runtime/family.py): several precisions of one run, and the member
this machine may load (never bf16 on a CPU without bf16 units)."""

import json
import shutil

import pytest

from dlsr_deploy.errors import BundleError
from dlsr_deploy.runtime import family


def _family(tmp_path, bundles, members):
    fam = tmp_path / "fam"
    fam.mkdir()
    for prec, src in members.items():
        shutil.copytree(bundles[src], fam / prec)
    family.write_family(fam, {p: p for p in members})
    return fam


def test_a_cpu_without_bf16_gets_the_fp32_member_and_is_told_why(tmp_path, bundles, monkeypatch):
    import dlsr_deploy.runtime.openvino as ov

    fam = _family(tmp_path, bundles, {"fp32": "fp32", "bf16": "fp32", "fp16": "fp16"})
    monkeypatch.setattr(ov, "cpu_runs_bf16", lambda core=None: False)
    member, why = family.pick_member(fam)
    assert member == fam / "fp32" and why["chosen"] == "fp32"
    assert "no bf16 units" in why["skipped"]["bf16"]
    monkeypatch.setattr(ov, "cpu_runs_bf16", lambda core=None: True)
    assert family.pick_member(fam)[0] == fam / "bf16"
    assert family.pick_member(fam, "ort-cpu")[0] == fam / "fp32"  # bf16 runs on OpenVINO only


def test_detector_load_opens_the_picked_member(tmp_path, bundles, monkeypatch):
    import dlsr_deploy.runtime.openvino as ov
    from dlsr_deploy.runtime import Detector

    fam = _family(tmp_path, bundles, {"fp16": "fp16", "fp32": "fp32"})
    monkeypatch.setattr(ov, "cpu_runs_bf16", lambda core=None: False)
    with Detector.load(fam, backend="ort-cpu") as det:
        assert det.manifest.precision == "fp32"
        assert det.family_choice["chosen"] == "fp32" and det.family_choice["skipped"] == {}


@pytest.mark.parametrize(
    "members, needle",
    [
        ({"fp64": "x"}, "is not one of"),
        ({"fp32": "../elsewhere"}, "sub-folder name"),
        ({"fp32": ""}, "sub-folder name"),
        ([], "'members' must map"),
    ],
)
def test_a_bad_family_file_is_one_clear_error(tmp_path, members, needle):
    (tmp_path / "family.json").write_text(json.dumps({"members": members}))
    with pytest.raises(BundleError, match=needle):
        family.pick_member(tmp_path)


def test_no_usable_member_names_each_reason(tmp_path):
    (tmp_path / "fp32").mkdir()
    family.write_family(tmp_path, {"fp32": "fp32"})
    with pytest.raises(BundleError, match="no member of this bundle family runs here.*holds no manifest.json"):
        family.pick_member(tmp_path)


def test_an_int8_member_is_skipped_on_an_architecture_it_was_not_verified_on(tmp_path, bundles, monkeypatch):
    import platform

    import dlsr_deploy.runtime.openvino as ov

    fam = _family(tmp_path, bundles, {"fp32": "fp32", "int8": "fp32"})
    monkeypatch.setattr(ov, "cpu_runs_bf16", lambda core=None: False)
    assert family.pick_member(fam)[0] == fam / "int8"  # verified on this architecture: the faster one
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    member, why = family.pick_member(fam)
    assert member == fam / "fp32" and "not riscv64" in why["skipped"]["int8"]


def test_dlsr_inspect_on_a_family_shows_each_member_and_the_pick(tmp_path, bundles, monkeypatch):
    from click.testing import CliRunner

    import dlsr_deploy.runtime.openvino as ov
    from dlsr_deploy.cli import inspect

    fam = _family(tmp_path, bundles, {"fp32": "fp32", "bf16": "fp32"})
    monkeypatch.setattr(ov, "cpu_runs_bf16", lambda core=None: False)
    r = CliRunner().invoke(inspect, [str(fam)])
    assert r.exit_code == 0, r.output
    assert "== member fp32" in r.output and "== member bf16" in r.output
    assert "this machine loads fp32" in r.output and "no bf16 units" in r.output


def test_an_int8_member_recording_no_verified_target_is_not_picked(tmp_path, bundles, monkeypatch):
    import dlsr_deploy.runtime.openvino as ov

    fam = _family(tmp_path, bundles, {"fp32": "fp32", "int8": "fp32"})
    m = json.loads((fam / "int8" / "manifest.json").read_text())
    m["precision"]["verified_targets"] = []
    (fam / "int8" / "manifest.json").write_text(json.dumps(m))  # read before verification: the pick fails closed
    monkeypatch.setattr(ov, "cpu_runs_bf16", lambda core=None: False)
    member, why = family.pick_member(fam)
    assert member == fam / "fp32" and "no verified target" in why["skipped"]["int8"]


@pytest.mark.parametrize("existing", ["bundle", "user folder"])
def test_a_family_export_never_writes_into_a_bundle_or_a_foreign_folder(tiny_run, tmp_path, bundles, existing):
    from click.testing import CliRunner

    from dlsr_deploy.cli import export

    out = tmp_path / "out"
    if existing == "bundle":
        shutil.copytree(bundles["fp32"], out)
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in out.iterdir())
    args = ["--model", str(tiny_run[0]), "--out", str(out), "--precision", "fp32,int8", "--force"]
    r = CliRunner().invoke(export, args)
    assert r.exit_code == 2 and "--out" in r.output
    assert sorted(p.name for p in out.iterdir()) == before
