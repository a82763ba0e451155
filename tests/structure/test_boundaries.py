"""Module boundaries: the runtime and the contract layer never need torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "dlsr_deploy"
CONTRACT = [
    "parity.py",
    "signing.py",
    "errors.py",
    "config.py",
    "io.py",
    "manifest",
    "names.py",
    "registry.py",
    "schedule.py",
    "scoring.py",
    "metrics.py",
    "selection.py",
    "probes.py",
    "machine.py",
    "timing.py",
    "preprocess.py",
    "inputs.py",
    "packs.py",
    "input_kinds.py",
    "run_folder.py",
    "log.py",
]
PKG_NAMES = ("model", "export", "runtime", "data", "bench", "scale")

# ../shared/DESIGN.md section 2, "Dependency direction": (files, forbidden import prefixes)
RULES = {
    "runtime never imports torch, model, export, data or ray": (
        ["runtime"],
        ["torch", "ray", "dlsr_deploy.model", "dlsr_deploy.export", "dlsr_deploy.data", "dlsr_deploy.bench"],
    ),
    "the contract layer imports no backend and no workflow package": (
        CONTRACT,
        ["torch", "onnx", "onnxruntime", "tensorrt", "ray"] + [f"dlsr_deploy.{p}" for p in PKG_NAMES],
    ),
    "model never imports export or runtime": (
        ["model"],
        ["dlsr_deploy.export", "dlsr_deploy.runtime", "dlsr_deploy.bench"],
    ),
    "data is numpy/Pillow/scipy only": (
        ["data"],
        ["torch", "dlsr_deploy.model", "dlsr_deploy.export", "dlsr_deploy.runtime"],
    ),
    "report/ draws with numpy and Pillow only (the torch-free runtime writes reports too)": (
        ["report"],
        ["torch", "onnx", "onnxruntime", "openvino", "matplotlib", "ray"]
        + [f"dlsr_deploy.{p}" for p in ("model", "export", "runtime", "data", "bench", "scale")],
    ),
    "scale/ sits on the runtime: no torch, model, export or data": (
        ["scale"],
        ["torch", "onnx", "dlsr_deploy.model", "dlsr_deploy.export", "dlsr_deploy.data", "dlsr_deploy.bench"],
    ),
    "the bench imports no workflow module (machine facts come from dlsr_deploy.machine)": (
        ["bench"],
        ["dlsr_deploy.pipeline", "dlsr_deploy.evaluation", "dlsr_deploy.eval_pipeline", "dlsr_deploy.cli"],
    ),
    "the training / evaluation workflow does not import the runtime": (
        ["pipeline.py", "evaluation.py", "eval_pipeline.py"],
        ["dlsr_deploy.runtime", "dlsr_deploy.scale"],
    ),
    "only scale/ imports ray": (
        [
            "__init__.py",
            "cli",
            "pipeline.py",
            "evaluation.py",
            "demo.py",
            "baselines.py",
            "model",
            "export",
            "bench",
        ],
        ["ray"],
    ),
}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def _files(entry: str):
    p = PKG / entry
    return [p] if entry.endswith(".py") else sorted(p.rglob("*.py")) if p.exists() else []


@pytest.mark.parametrize("rule", sorted(RULES))
def test_import_boundaries(rule):
    entries, forbidden = RULES[rule]
    files = [f for e in entries for f in _files(e)]
    assert files, rule
    for f in files:
        bad = [m for m in _imports(f) if any(m == x or m.startswith(x + ".") for x in forbidden)]
        assert not bad, f"{rule}: {f.relative_to(ROOT)} imports {bad}"


def test_the_boundary_test_can_fail(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import torch.nn\nfrom dlsr_deploy.model.features import x\n")
    assert sorted(_imports(f)) == ["dlsr_deploy.model.features", "torch.nn"]


def test_package_import_and_help_do_not_load_torch():
    code = (
        "import sys, dlsr_deploy, dlsr_deploy.cli, dlsr_deploy.runtime, dlsr_deploy.metrics, dlsr_deploy.preprocess;"
        " assert 'torch' not in sys.modules, 'torch'; print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_runtime_extras_do_not_depend_on_torch():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for group in [meta["dependencies"]] + [meta["optional-dependencies"][k] for k in ("cpu", "gpu", "trt")]:
        assert not any(d.lower().startswith("torch") for d in group), group


@pytest.mark.parametrize(
    "cmd",
    [
        "dlsr-train",
        "dlsr-eval",
        "dlsr-export",
        "dlsr-check",
        "dlsr-inspect",
        "dlsr-score",
        "dlsr-build",
        "dlsr-bench",
        "dlsr-demo",
        "dlsr-keygen",
    ],
)
def test_every_command_has_help(cmd):
    exe = Path(sys.executable).parent / cmd
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "Usage:" in r.stdout and "--" in r.stdout


def test_cli_errors_are_one_line_exit_1(tmp_path):
    exe = Path(sys.executable).parent / "dlsr-train"
    r = subprocess.run(
        [str(exe), "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error: input not found") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_runtime_in_a_venv_with_only_the_cpu_extra(bundles, tmp_path):
    """pip install '.[cpu]' into a fresh venv (no torch at all) and score a bundle there."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), f"{ROOT}[cpu]"],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    code = f"""
import importlib.util, sys, numpy as np
assert importlib.util.find_spec("torch") is None, "torch is installed in the runtime-only venv"
from dlsr_deploy.runtime import Detector
with Detector.load({str(bundles["fp16"])!r}) as det:
    out = det.predict(np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8))
print(det.backend_name, out["score"].shape, sorted(sys.modules).count("torch"))
"""
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "ort-cpu" and r.stdout.strip().endswith("0")
