"""What dlsr-bench times: the PyTorch eager baseline, the peers a user would otherwise pick
(torch.compile, a plain torch.onnx.export on ONNX Runtime / OpenVINO) and this toolkit's runtime
backends. Every runner has run(images) -> ({score: [N]}, {stage: seconds}) and computes the
same outputs for a scoring path: "all" (every score of the bundle) or "headline" (the decision's
score only; for a density headline: backbone + the head, no denoiser)."""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from dlsr_deploy.scoring import LR_SIGN

PATHS = ("headline", "all")


class Runner:
    """A backend under test: run(images) -> ({score: [N]}, {stage: seconds}); close()."""

    name = "?"
    precision = "fp32"
    path = "all"
    sync: Callable[[], None] = staticmethod(lambda: None)

    def run(self, images: np.ndarray) -> Tuple[Dict[str, np.ndarray], Dict[str, float]]:
        raise NotImplementedError

    def close(self):
        pass


def _reference(m, with_lr: bool):
    from dlsr_deploy.model.reference import EagerReference

    lr = with_lr and any(n.startswith("lr_") for n in m.score_names)
    return EagerReference.from_run(
        m.source_run, m.score_config, with_lr=lr, density=m.density_heads, combos=m.combinations
    )


def needs_denoiser(m, path: str) -> bool:
    """Whether the path's scores need the denoiser (the headline path of a density headline does not)."""
    return path == "all" or "denoiser" in m.graphs_for([m.headline])


class EagerRunner(Runner):
    """PyTorch eager: the baseline (FP32; on a GPU also FP16 autocast), and the torch.compile
    peer: the functions that actually run (preprocess + backbone pooling, the reconstructor)
    are compiled, with inductor's freezing on; `compile_seconds` and `compiled_graphs` say
    what compiling cost and that it happened."""

    def __init__(
        self,
        manifest,
        device: str = "cpu",
        autocast: bool = False,
        compile: bool = False,
        threads: Optional[int] = None,
        compile_backend: str = "inductor",
        path: str = "all",
    ):
        import torch

        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        m = manifest
        self.ref = _reference(m, with_lr=True)
        self.path = path
        self.names = m.score_names if path == "all" else [m.headline]
        self.device = torch.device(device)
        self.ext = self.ref.extractor.to(self.device)
        self.view_exts = [e.to(self.device) for e in self.ref.view_extractors]  # a bundle of several views
        self.denoise = needs_denoiser(m, path)
        self.rec = self.ref.reconstructor().to(self.device)
        self.first = self.ref.reconstructor("first").to(self.device) if self.ref.first is not None else None
        self.autocast = autocast
        self.name = ("torch-compile" if compile else "torch-eager") + ("-cuda" if device != "cpu" else "")
        self.precision = "fp16-autocast" if autocast else "fp32"
        self.preprocess, self.pooled, self.reconstruct = self.ext.preprocess, self.ext.pooled, self.rec
        self.compile_seconds, self.compiled_graphs = None, 0
        if device != "cpu":
            self.sync = torch.cuda.synchronize
        if compile:
            self._compile(compile_backend)

    def _compile(self, backend: str) -> None:
        import torch._dynamo
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights become constants: folded and pre-packed
        torch._dynamo.reset()
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        self.preprocess = torch.compile(self.ext.preprocess, backend=backend)
        self.pooled = torch.compile(self.ext.pooled, backend=backend)
        self.reconstruct = torch.compile(self.rec, backend=backend)
        t = time.perf_counter()
        size = self.ext.cfg.native_size or self.ext.cfg.input_size
        self.run(np.zeros((2, size, size, 3), np.uint8))  # compiles (the timed runs reuse the graphs)
        self.compile_seconds = time.perf_counter() - t
        self.compiled_graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before

    def _dlsr(self, z0) -> Dict[str, np.ndarray]:
        from dlsr_deploy.registry import SCORES

        if not self.denoise:
            return {}
        s = self.reconstruct(z0)
        out = {n: s[n] for n in SCORES}
        if self.first is not None:
            f = self.first(z0)
            out.update({f"lr_{n}": LR_SIGN * (f[n] - s[n]) for n, spec in SCORES.items() if spec.lr})
        return {k: v.float().cpu().numpy().astype(np.float64) for k, v in out.items()}

    def _views(self, images):
        from dlsr_deploy.views import view_images

        torch = self.torch
        return [
            e(torch.from_numpy(view_images(images, v)).to(self.device)).float()
            for v, e in zip(self.ref.cfg.views, self.view_exts)
        ]

    def run(self, images):
        from dlsr_deploy.model.features import zscore_layers

        torch = self.torch
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.autocast):
            t = time.perf_counter()
            x = self.preprocess(torch.from_numpy(images).to(self.device))
            self.sync()
            t1 = time.perf_counter()
            z0 = zscore_layers(self.pooled(x).float(), self.ext.layer_sizes, self.ext.cfg.zscore_eps)
            d = z0.shape[1]
            if self.view_exts:  # every extra view's z0 after the primary's, as the bundle's backbone graph
                z0 = torch.cat([z0, *self._views(images)], dim=1)
            self.sync()
            t2 = time.perf_counter()
            out = self._dlsr(z0[:, :d])
            self.ref.add_density_scores(out, z0.float().cpu().numpy())
            self.sync()
            t3 = time.perf_counter()
        stage = "denoiser" if self.denoise else "heads"
        return {n: out[n] for n in self.names}, {"input": t1 - t, "backbone": t2 - t1, stage: t3 - t2}


def _plain_heads_module(ref, names):
    """The density heads (and their combinations) as a plain torch module z0 -> scores: the full
    precision-factor MatMul each, as a user writing it without this toolkit would."""
    import torch

    from dlsr_deploy.export.graphs import combine_torch

    heads = {n: h for n, h in ref.heads.items()}
    combos = [c for c in ref.combos if c.name in names]

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for i, h in enumerate(heads.values()):
                self.register_buffer(f"mean{i}", torch.from_numpy(np.asarray(h.mean, np.float32)))
                self.register_buffer(f"proj{i}", torch.from_numpy(np.asarray(h.proj, np.float32)))

        def forward(self, z0):
            s = {}
            for i, (n, h) in enumerate(heads.items()):
                z = z0 / torch.linalg.vector_norm(z0, dim=1, keepdim=True).clamp_min(1e-12) if h.l2 else z0
                y = (z - getattr(self, f"mean{i}")) @ getattr(self, f"proj{i}")
                s[n] = (y * y).sum(dim=1)
            for c in combos:
                s[c.name] = combine_torch(c, s)
            return tuple(s[n] for n in names)

    return Heads().eval()


class _PlainDenoiser:
    """The eager reconstructor as a plain module: z0 -> every registered reconstruction score."""

    @staticmethod
    def make(rec):
        import torch

        from dlsr_deploy.registry import SCORES

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.rec = rec

            def forward(self, z0):
                s = self.rec(z0)
                return tuple(s[n] for n in SCORES)

        return M().eval()


class RuntimeRunner(Runner):
    """A dlsr_deploy.runtime backend (ORT CPU / CUDA, OpenVINO, TensorRT, any registered one) on
    one scoring path: the graphs `Detector.score` runs for it."""

    def __init__(self, bundle, backend: str, threads: Optional[int] = None, path: str = "all"):
        from dlsr_deploy.runtime import Detector

        self.det = Detector.load(bundle, backend=backend, threads=threads, strict_providers=True)
        self.name, self.path = backend, path
        self.precision = self.det.manifest.precision
        self.scores = self.det.resolve_scores("all" if path == "all" else None)
        self.graphs = self.det.manifest.graphs_for(self.scores)

    def run(self, images):
        from dlsr_deploy.preprocess import as_batch

        t = time.perf_counter()
        x = as_batch(images, self.det.size)
        t1 = time.perf_counter()
        out, stages = self.det.backend.run_timed(x, self.graphs)
        m = self.det.manifest
        return {n: out[m.output_name(n)] for n in self.scores}, {"input": t1 - t, **stages}

    def close(self):
        self.det.close()
