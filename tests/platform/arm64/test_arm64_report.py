"""tests/platform/arm64/arm64_report.py: the parsing and comparison behind the ARM64 check (the check itself
runs under QEMU: tests/platform/arm64/arm64_check.sh, not in CI)."""

import arm64_report  # beside this test (pytest puts its folder on the path)
import numpy as np


def _csv(path, rows):
    cols = ["image", "score_a", "score_b", "normalized", "is_ood", "error"]
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_compare_counts_flips_rank_and_error(tmp_path):
    r = np.random.default_rng(0)
    a = r.normal(size=50)
    x86 = [{"image": i, "score_a": v, "score_b": 2 * v, "error": ""} for i, v in enumerate(a)]
    arm = [dict(row) for row in x86]
    arm[3]["score_a"] = a[3] + 10.0  # one image across the threshold 0
    arm[7] = {"image": 7, "error": "cannot read"}  # unreadable there: left out, not compared as 0
    _csv(tmp_path / "x.csv", x86)
    _csv(tmp_path / "y.csv", arm)
    res = arm64_report.compare(
        arm64_report.read_scores(tmp_path / "x.csv"), arm64_report.read_scores(tmp_path / "y.csv"), {"a": 0.0}
    )
    assert res["a"]["n"] == 49 and res["a"]["flips"] == (1 if a[3] <= 0 else 0) and res["a"]["rank"] < 1.0
    assert res["a"]["max_rel_err"] > 1.0
    assert res["b"]["flips"] is None and res["b"]["rank"] == 1.0 and res["b"]["max_rel_err"] == 0.0


def test_cpu_features_from_qemu_cpuinfo():
    info = "processor\t: 0\nBogoMIPS\t: 125.00\nFeatures\t: fp asimd evtstrm aes asimddp i8mm bf16\nCPU part\t: 0x051\n"
    f = arm64_report.cpu_features(info)
    assert f["dotprod"] and f["i8mm"] and f["cpu_part"] == "0x051" and "bf16" in f["features"]
    assert not arm64_report.cpu_features("Features\t: fp asimd\n")["dotprod"]


def test_markdown_names_every_bundle():
    res = {
        "x86_machine": "x86 [avx2]",
        "arm64": {
            "uname": "Linux aarch64",
            "onnxruntime": "1.32.0",
            "cpu_part": "0x051",
            "dotprod": True,
            "i8mm": False,
            "features": ["asimd"],
        },
        "rows": [
            {
                "bundle": "b-fp32",
                "precision": "fp32",
                "scheme": None,
                "self_check": "pass",
                "failures": [],
                "z0_max_rel_l2": 1e-6,
                "n_images": 300,
                "scores": {"x": {"rank": 1.0, "max_rel_err": 1e-6, "flips": 0, "n": 300}},
            }
        ],
    }
    md = arm64_report.markdown(res)
    assert "b-fp32" in md and "pass" in md and "0 of 300" in md


def test_cpu_features_from_the_auxiliary_vector():
    """qemu-user hands an ARM64 process the host's x86 /proc/cpuinfo; AT_HWCAP is what it emulates."""
    x86 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f\n"
    f = arm64_report.cpu_features(x86, hwcap=(1 << 20) | (1 << 10) | 0b11, hwcap2=1 << 13)
    assert f["features_from"] == "AT_HWCAP" and f["dotprod"] and f["i8mm"] and f["fp16_arith"]
    assert f["features"] == ["asimd", "asimddp", "asimdhp", "fp", "i8mm"]
    assert not arm64_report.cpu_features(x86, hwcap=0b11, hwcap2=0)["dotprod"]


def test_report_takes_the_bundles_after_its_options(monkeypatch):
    """arm64_check.sh calls `report --dir OUT BUNDLE...` (argparse refused that before)."""
    seen = {}
    monkeypatch.setattr(arm64_report, "report", lambda d, b: seen.update(dir=d, bundles=b) or {})
    monkeypatch.setattr(arm64_report, "write_results", lambda *a: None)
    arm64_report.main(["report", "--dir", "/tmp/x", "export/a", "export/b"])
    assert seen == {"dir": arm64_report.Path("/tmp/x"), "bundles": ["export/a", "export/b"]}


def test_cpu_info_on_arm64_reads_the_auxiliary_vector(monkeypatch):
    """Under QEMU /proc/cpuinfo is the x86 host's: the ARM64 features come from AT_HWCAP."""
    from dlsr_deploy import machine

    monkeypatch.setattr(machine, "auxv_features", lambda: machine.hwcap_features((1 << 20) | (1 << 10) | 0b11, 0))
    info = machine.cpu_info()
    assert info["simd"] == "asimd asimddp asimdhp" and "avx" not in info["simd"]
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    monkeypatch.undo()
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    assert machine.auxv_features() is None


def test_engine_names_the_runtime_the_self_check_used():
    assert arm64_report._engine("CPUExecutionProvider") == "ONNX Runtime CPU"
    assert arm64_report._engine("OpenVINO 2026.4.1-22982-e213a14 CPU (latency, f32)") == "OpenVINO 2026.4.1 (f32)"
    assert arm64_report._engine(None) == "-"
