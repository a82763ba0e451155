"""The plain-export peer: what a user gets without this toolkit, on the same model and outputs.

`torch.onnx.export` of the eager modules as they are (the extractor with its bilinear tap
resizes, the reconstructor, the density heads as one full MatMul each), run with the engine's
default settings: ONNX Runtime's default SessionOptions, OpenVINO's default compile config (which
computes in bf16 on CPUs that have it: a silent accuracy change the rows report), or OpenVINO
with f32 pinned (what a careful user does). On the headline path of a density headline the
plain export is one graph, images -> headline score; otherwise backbone and denoiser graphs, with
density heads and combinations computed from its z0 in numpy, as in the eager runner.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dlsr_deploy.bench.runners import Runner, _plain_heads_module, _PlainDenoiser, _reference, needs_denoiser

ENGINES = ("ort", "openvino", "openvino-f32", "openvino-int8")
NNCF_CALIBRATION = 300  # NNCF's default subset size


def _export(folder: Path, ref, m, fused_head: bool, names) -> dict:
    import torch

    from dlsr_deploy.export import onnx_utils as ou

    size = ref.cfg.feature.native_size or ref.cfg.feature.input_size
    images = (torch.zeros(2, size, size, 3, dtype=torch.uint8),)
    if fused_head:
        path = folder / f"headline-{m.headline}.onnx"
        if not path.exists():
            mod = torch.nn.Sequential(ref.extractor, _plain_heads_module(ref, names)).eval()
            path.write_bytes(ou.torch_to_onnx(mod, images, ["images"], [f"score_{n}" for n in names]))
        return {"headline": path}
    paths = {
        "backbone": folder / "backbone.onnx",
        "denoiser": folder / f"denoiser-{m.score_config.t_start}-{m.steps}.onnx",
    }
    if not paths["backbone"].exists():
        paths["backbone"].write_bytes(ou.torch_to_onnx(ref.extractor, images, ["images"], ["z0"]))
    if not paths["denoiser"].exists():
        from dlsr_deploy.registry import SCORES

        args = (torch.zeros(2, ref.cfg.denoiser.dim),)
        mod = _PlainDenoiser.make(ref.reconstructor())
        paths["denoiser"].write_bytes(ou.torch_to_onnx(mod, args, ["z0"], list(SCORES)))
    return paths


def _nncf_int8(core, path: Path, calib: np.ndarray) -> str:
    """NNCF's default post-training INT8 (nncf.quantize: fast bias correction, no ignored scope, no
    accuracy control) of a plain graph with an images input, calibrated on held-out ID images;
    cached next to the graph. What a user gets from NNCF's quick start, without our guard."""
    import onnx

    out = path.with_name(path.stem + "-nncf-int8.onnx")
    if "images" not in {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}:
        return str(path)  # the denoiser (z0 in) stays as exported: its calibration would need z0 samples
    if not out.exists():
        from dlsr_deploy.export.onnx_utils import nncf_quantize
        from dlsr_deploy.io import atomic_write_bytes

        q = nncf_quantize(onnx.load(str(path)), calib, [], fast_bias_correction=True)
        atomic_write_bytes(out, q.SerializeToString())
    return str(out)


def _sessions(paths: dict, engine: str, calib=None) -> dict:
    if engine == "ort":
        import onnxruntime as ort

        sess = {g: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for g, p in paths.items()}
        return {
            g: (lambda feeds, s=s: dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds))))
            for g, s in sess.items()
        }
    from dlsr_deploy.runtime.openvino import import_ov

    config = {"INFERENCE_PRECISION_HINT": "f32"} if engine == "openvino-f32" else {}
    core = import_ov().Core()
    models = {g: _nncf_int8(core, p, calib) if engine == "openvino-int8" else str(p) for g, p in paths.items()}
    reqs = {g: core.compile_model(mdl, "CPU", config).create_infer_request() for g, mdl in models.items()}
    return {
        g: (lambda feeds, r=r: {o.get_any_name(): np.array(v) for o, v in r.infer(feeds).items()})
        for g, r in reqs.items()
    }


class PlainExportRunner(Runner):
    """A plain torch.onnx.export of the eager model on an engine's defaults (see the module docstring)."""

    def __init__(self, manifest, engine: str = "ort", path: str = "all"):
        from dlsr_deploy.model.features import default_cache_dir

        m = manifest
        self.ref = _reference(m, with_lr=False)
        if self.ref.cfg.views:
            from dlsr_deploy.errors import ConfigError

            raise ConfigError(
                f"--peers: bundle {m.name} combines several views ({m.data['preprocessing'].get('views_summary')}); "
                "the plain-export peers are one-view models, so they compare only with one-view bundles"
            )
        self.path = path
        self.names = [n for n in m.score_names if not n.startswith("lr_")] if path == "all" else [m.headline]
        self.fused_head = not needs_denoiser(m, path)
        self.name, self.precision = f"plain-export-{engine}", "fp32"
        if engine == "openvino":  # the CPU plugin's default: bf16 where the CPU has it
            from dlsr_deploy.runtime.openvino import cpu_runs_bf16

            self.precision = "default (bf16 here)" if cpu_runs_bf16() else "default (f32 here)"
        folder = default_cache_dir().parent / "plain" / (m.checkpoint_sha256 or "x")[:16]
        folder.mkdir(parents=True, exist_ok=True)
        calib = None
        if engine == "openvino-int8":
            from dlsr_deploy.export.calibrate import calibration_images

            size = self.ref.cfg.feature.native_size or self.ref.cfg.feature.input_size
            calib = calibration_images(m.source_run, None, size)[0][:NNCF_CALIBRATION]
            self.precision = "int8 (NNCF default)"
        self.call = _sessions(_export(folder, self.ref, m, self.fused_head, self.names), engine, calib)

    def run(self, images):
        t = time.perf_counter()
        x = {"images": np.ascontiguousarray(images)}
        if self.fused_head:
            out = {k[len("score_") :]: v.astype(np.float64) for k, v in self.call["headline"](x).items()}
            return {n: out[n] for n in self.names}, {"input": 0.0, "backbone": time.perf_counter() - t}
        z0 = self.call["backbone"](x)["z0"]
        t1 = time.perf_counter()
        out = {k: v.astype(np.float64) for k, v in self.call["denoiser"]({"z0": z0}).items()}
        self.ref.add_density_scores(out, z0)
        return {n: out[n] for n in self.names}, {"input": 0.0, "backbone": t1 - t, "denoiser": time.perf_counter() - t1}
