"""Where the INT8 backbone's error comes from, and what better weight rounding buys (issue 13).

    python benchmarks/int8_error_sources.py export/c50k-fp32 --data ../shared/data

Research code for the next step of the INT8 backbone, not used by `dlsr-export`. On the bundle's
FP32 backbone (blocks >= 1 quantized, the stem and block 0 FP32), each variant feeds the bundle's
FP32 denoiser on OpenVINO CPU (f32 hint), and is compared with the FP32 backbone on 1,000 CIFAR-10
test images + 600 Tiny ImageNet + 600 DTD images (indices disjoint from the export guard's):

* weights only, round to nearest: int8 per output channel (max-abs scale), activations FP32;
* weights only, GPTQ: the same grid, each conv's rounding chosen column by column to minimise
  its output error on calibration activations (Frantar et al. 2022, the Hessian from 256 images);
* activations only: NNCF's activation quantizers with every conv's FP32 weights and bias put back
  (what 8-bit activations cost on their own; no weight rounding can remove it);
* NNCF static INT8 (weights + activations, full bias correction): what `dlsr-export` builds;
* sequential least squares + GPTQ: NNCF's activation quantizers, then conv by conv in graph
  order the weights and bias refitted to the FP32 conv's output from the *quantized* model's
  input (ridge 1 % towards the FP32 weights), rounded by GPTQ, bias fitted to the mean.

Per variant: z0 relative L2 error, the worst score's rank correlation and AUROC change, decisions
flipped at each score's bundle threshold (worst score, and the headline), the backbone's batch 32
p50 (the weights-only variants run FP32 kernels). Then NNCF's INT8 on one block at a time (the
others FP32): how many of the allowed flips each block spends alone, and whether the blocks' errors
add up (they add in quadrature). Writes benchmarks/results/int8_error_sources.{json,md}.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from common import machine, p50_ms, write_results  # benchmarks/common.py


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def conv_features(x: np.ndarray, node) -> np.ndarray:
    """A conv's input as regression features: [S, Cin] for a 1x1 conv, [C, S, k*k] (one patch
    set per channel) for a depthwise one."""
    k = _attr(node, "kernel_shape")
    if _attr(node, "group", 1) == 1 and k == [1, 1]:
        return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1]).astype(np.float64)
    assert _attr(node, "group") == x.shape[1], f"{node.name}: only 1x1 and depthwise convs"
    pt, pl, pb, pr = _attr(node, "pads")
    st = _attr(node, "strides")[0]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    win = np.lib.stride_tricks.sliding_window_view(xp, k, axis=(2, 3))[:, :, ::st, ::st]
    n, c, ho, wo = win.shape[:4]
    return win.reshape(n, c, ho * wo, -1).transpose(1, 0, 2, 3).reshape(c, -1, k[0] * k[1]).astype(np.float64)


def gptq_round(W: np.ndarray, H: np.ndarray, s: np.ndarray, qmax: int, damp: float = 0.01) -> np.ndarray:
    """Integer weights Q [R, D] for W [R, D] on the grid s [R] (|Q| <= qmax), rounding column by
    column and spreading each column's error over the later ones through the inverse Hessian's
    Cholesky factor. H: [D, D] shared by all rows (1x1 conv) or [R, D, D] (depthwise)."""
    W = W.astype(np.float64).copy()
    Hs = (H if H.ndim == 3 else H[None]).copy()
    d = np.arange(W.shape[1])
    diag = np.diagonal(Hs, axis1=1, axis2=2)
    Hs[:, d, d] += damp * diag.mean(1)[:, None] + (diag == 0)
    U = np.linalg.cholesky(np.linalg.inv(Hs)).transpose(0, 2, 1)
    Q = np.zeros_like(W)
    for i in range(W.shape[1]):
        Q[:, i] = np.clip(np.round(W[:, i] / s), -qmax, qmax)
        u = U[:, i] if H.ndim == 3 else np.broadcast_to(U[0, i], (len(W), U.shape[2]))
        err = (W[:, i] - Q[:, i] * s) / u[:, i]
        W[:, i + 1 :] -= err[:, None] * u[:, i + 1 :]
    return Q


def _grid(W: np.ndarray, first: bool):
    """NNCF's weight grid: symmetric per output channel, max-abs / 127; 7 bits (|q| <= 64) on the
    first quantized conv (its overflow fix for CPUs without VNNI)."""
    mx = np.abs(W).max(1)
    s = np.where(mx == 0, 1.0, mx / 127 * (2 if first else 1))
    return s, (64 if first else 127)


class Graphs:
    """ORT sessions that expose intermediate tensors of a model (optimisations off, so QDQ pairs
    run as the float simulation they describe)."""

    def __init__(self, threads: int):
        self.threads = threads

    def _session(self, model, names):
        import onnx
        import onnxruntime as ort
        from onnx import helper

        m = onnx.ModelProto()
        m.CopyFrom(model)
        del m.graph.output[:]
        m.graph.output.extend([helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in names])
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def tensor(self, model, name: str, images: np.ndarray, batch: int = 16) -> np.ndarray:
        s = self._session(model, [name])
        return np.concatenate([s.run(None, {"images": images[i : i + batch]})[0] for i in range(0, len(images), batch)])

    def hessians(self, model, convs, images: np.ndarray, batch: int = 16) -> dict:
        """E[x x^T] of every conv's input features (conv_features), in one pass over the images."""
        names = sorted({n.input[0] for n in convs})
        s = self._session(model, names)
        acc, count = {}, {}
        for i in range(0, len(images), batch):
            out = dict(zip(names, s.run(None, {"images": images[i : i + batch]})))
            for n in convs:
                X = conv_features(out[n.input[0]], n)
                h = X.T @ X if X.ndim == 2 else np.einsum("csp,csq->cpq", X, X)
                acc[n.name] = acc.get(n.name, 0) + h
                count[n.name] = count.get(n.name, 0) + X.shape[-2]
        return {k: v / count[k] for k, v in acc.items()}


def quantized_convs(model, from_block: int):
    from dlsr_deploy.export.onnx_utils import _block_of

    return [n for n in model.graph.node if n.op_type == "Conv" and (_block_of(n.name) or -1) >= from_block]


def weights_only(fp32, calib, graphs: Graphs, from_block: int, gptq: bool):
    """The FP32 graph with its conv weights replaced by their int8 values (dequantized)."""
    import onnx
    from onnx import numpy_helper as nh

    m = onnx.ModelProto()
    m.CopyFrom(fp32)
    ini = {i.name: i for i in m.graph.initializer}
    convs = quantized_convs(fp32, from_block)
    hess = graphs.hessians(fp32, convs, calib) if gptq else {}
    for j, n in enumerate(convs):
        w = nh.to_array(ini[n.input[1]])
        W = w.reshape(len(w), -1)
        s, qmax = _grid(W, j == 0)
        if gptq:
            Q = gptq_round(W, hess[n.name], s, qmax)
        else:
            Q = np.clip(np.round(W / s[:, None]), -qmax, qmax)
        ini[n.input[1]].CopyFrom(nh.from_array((Q * s[:, None]).reshape(w.shape).astype(np.float32), n.input[1]))
    return m


def nncf_int8(fp32, calib, blocks, bias_correction: bool = True):
    """NNCF static INT8 (its defaults, full bias correction or none) of the backbone blocks whose index
    `blocks(i)` accepts; everything else (stem, preprocessing, pooling, z-score) stays FP32."""
    from dlsr_deploy.export.onnx_utils import _block_of, nncf_quantize

    keep = [n.name for n in fp32.graph.node if _block_of(n.name) is None or not blocks(_block_of(n.name))]
    return nncf_quantize(fp32, calib, keep, disable_bias_correction=not bias_correction)


def _int8_convs(q):
    """The convs of an NNCF graph whose weights it quantized, and each one's FP32 weight name."""
    convs = [n for n in q.graph.node if n.op_type == "Conv" and n.input[1].startswith("dq_output_")]
    return [(n, n.input[1][len("dq_output_") : -len("_1")]) for n in convs]


def activations_only(fp32, calib, from_block: int):
    """NNCF's activation quantizers (bias correction off) with every conv's FP32 weights and bias put
    back: what 8-bit activations cost when the weights are exact."""
    q = nncf_int8(fp32, calib, lambda b: b >= from_block, bias_correction=False)
    fp_nodes = {n.name: n for n in fp32.graph.node}
    fi = {i.name: i for i in fp32.graph.initializer}
    have = {i.name for i in q.graph.initializer}
    for n, _ in _int8_convs(q):
        for j in (1, 2):
            name = fp_nodes[n.name].input[j]
            if name not in have:
                q.graph.initializer.append(fi[name])
                have.add(name)
            n.input[j] = name
    return q


def sequential_lsq(fp32, calib_nncf, calib, graphs: Graphs, from_block: int, ridge: float = 0.01, say=print):
    """NNCF's QDQ graph (activation scales; bias correction off), then per conv in graph order:
    weights refitted to the FP32 output from the quantized input, GPTQ-rounded, bias re-fitted."""
    from onnx import numpy_helper as nh

    q = nncf_int8(fp32, calib_nncf, lambda b: b >= from_block, bias_correction=False)
    fp_nodes = {n.name: n for n in fp32.graph.node}
    fi = {i.name: nh.to_array(i) for i in fp32.graph.initializer}
    qi = {i.name: i for i in q.graph.initializer}
    convs = _int8_convs(q)
    for j, (n, wname) in enumerate(convs):
        f = fp_nodes[n.name]
        w, b = fi[f.input[1]], fi[f.input[2]].astype(np.float64)
        W = w.reshape(len(w), -1).astype(np.float64)
        Xf = conv_features(graphs.tensor(fp32, f.input[0], calib), f)
        Xq = conv_features(graphs.tensor(q, n.input[0], calib), n)
        if Xf.ndim == 2:
            Y = Xf @ W.T
            H = Xq.T @ Xq / len(Xq)
            lam = ridge * np.mean(np.diag(H)) + 1e-6
            Wls = np.linalg.solve(H + lam * np.eye(len(H)), Xq.T @ Y / len(Xq) + lam * W.T).T
        else:
            Y = np.einsum("csk,ck->cs", Xf, W)
            H = np.einsum("csp,csq->cpq", Xq, Xq) / Xq.shape[1]
            lam = ridge * np.diagonal(H, axis1=1, axis2=2).mean(1) + 1e-6
            rhs = np.einsum("csp,cs->cp", Xq, Y) / Xq.shape[1] + lam[:, None] * W
            Wls = np.linalg.solve(H + lam[:, None, None] * np.eye(H.shape[1]), rhs[..., None])[..., 0]
        s, qmax = _grid(Wls, j == 0)
        Q = gptq_round(Wls, H, s, qmax)
        Wq = Q * s[:, None]
        fit = Xq @ Wq.T if Xf.ndim == 2 else np.einsum("csk,ck->sc", Xq, Wq)
        bias = b + (Y - fit).mean(0) if Xf.ndim == 2 else b + (Y.T - fit).mean(0)
        for name, arr in (
            ("q_output_" + wname + "_1", Q.reshape(w.shape).astype(np.int8)),
            ("scale_" + wname + "_1", s.reshape(nh.to_array(qi["scale_" + wname + "_1"]).shape).astype(np.float32)),
            (n.input[2], bias.astype(np.float32)),
        ):
            qi[name].CopyFrom(nh.from_array(arr, name))
        if j % 8 == 0:
            say(f"  sequential: conv {j + 1}/{len(convs)} {n.name}")
    return q


class Evaluator:
    """The bundle's FP32 backbone + FP32 denoiser on OpenVINO CPU (f32 hint) as the reference, the
    2,200 dev images (1,000 CIFAR-10 test, 600 Tiny ImageNet, 600 DTD; disjoint from the export
    guard's) and the 300 calibration images; measure() compares a backbone graph with it."""

    def __init__(self, bundle: str, data: Path, threads: int):
        import onnx
        import openvino as ov

        from dlsr_deploy.manifest import read_manifest
        from dlsr_deploy.runtime.openvino import ov_config

        m = read_manifest(Path(bundle))
        self.thresholds, self.head = m.threshold.all, m.threshold.score
        self.test = np.load(data / "cifar10_test.npz")["images"]
        self.images = np.concatenate(
            [
                self.test[:1000],
                np.load(data / "tinyimagenet_val_32.npz")["images"][1000:1600],
                np.load(data / "dtd_subset10.npz")["images"][600:1200],
            ]
        )
        self.is_ood = np.r_[np.zeros(1000, bool), np.ones(1200, bool)]
        self.calib = np.load(data / "cifar10_train.npz")["images"][:300]
        self.core = ov.Core()
        self.cfg = {k: v for k, v in ov_config("latency", threads).items() if k != "CACHE_DIR"}
        self.den = self.core.compile_model(str(m.file("denoiser")), "CPU", self.cfg)
        self.fp32 = onnx.load(str(m.file("backbone")))
        self.z_ref, self.ref = self.scores(self.compiled(self.fp32))

    def compiled(self, model):
        import onnx

        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(model, f"{tmp}/backbone.onnx")
            return self.core.compile_model(f"{tmp}/backbone.onnx", "CPU", self.cfg)

    def z0(self, bb, images: np.ndarray) -> np.ndarray:
        return np.concatenate([bb({"images": images[i : i + 50]})["z0"] for i in range(0, len(images), 50)])

    def scores(self, bb):
        z = self.z0(bb, self.images)
        parts = [self.den({"z0": z[i : i + 64]}) for i in range(0, len(z), 64)]
        return z, {o.get_any_name(): np.concatenate([p[o] for p in parts]) for o in self.den.outputs}

    def b32_ms(self, bb) -> float:
        return p50_ms(lambda: bb({"images": self.test[:32]}), 8)

    def measure(self, label: str, model) -> dict:
        """z0 error, every score's flips at its bundle threshold, rank correlation and AUROC change,
        and the backbone's batch 32 p50; printed as a JSON line."""
        from dlsr_deploy.metrics import auroc
        from dlsr_deploy.parity import spearman

        bb = self.compiled(model)
        z, got = self.scores(bb)
        zr, ood = self.z_ref, self.is_ood
        row = {
            "variant": label,
            "z0_rel": float(np.linalg.norm(z - zr, axis=1).mean() / np.linalg.norm(zr, axis=1).mean()),
        }
        flips, ranks, dau = {}, [], []
        for s, t in self.thresholds.items():
            r, g = self.ref["score_" + s], got["score_" + s]
            flips[s] = int(((r > t) != (g > t)).sum())
            ranks.append(spearman(r, g))
            dau.append(abs(auroc(g[~ood], g[ood]) - auroc(r[~ood], r[ood])))
        worst = max(flips, key=flips.get)
        row.update(
            flips=flips,
            worst_score=worst,
            worst_flips=flips[worst],
            head_flips=flips[self.head],
            images=len(self.images),
            min_rank=float(min(ranks)),
            max_dauroc=float(max(dau)),
            backbone_b32_ms=self.b32_ms(bb),
        )
        print(json.dumps(row), flush=True)
        return row


def main():
    from dlsr_deploy.export import onnx_utils as ou

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-seq", type=int, default=64, help="calibration images of the sequential refit")
    a = ap.parse_args()
    ev = Evaluator(a.bundle, a.data, a.threads)
    fp32, calib = ev.fp32, ev.calib
    graphs = Graphs(a.threads)
    variants = [
        ("weights only, round to nearest", lambda: weights_only(fp32, calib[:256], graphs, 1, gptq=False)),
        ("weights only, GPTQ", lambda: weights_only(fp32, calib[:256], graphs, 1, gptq=True)),
        ("activations only (NNCF's quantizers, FP32 weights)", lambda: activations_only(fp32, calib, 1)),
        (
            "NNCF static INT8, full bias correction (dlsr-export)",
            lambda: ou.quantize_backbone_openvino(fp32, calib, from_block=1, fp32_taps=False),
        ),
        ("sequential least squares + GPTQ", lambda: sequential_lsq(fp32, calib, calib[: a.n_seq], graphs, 1)),
    ]
    rows = [ev.measure(label, make()) for label, make in variants]
    blocks = sorted({b for b in map(ou._block_of, (n.name for n in fp32.graph.node)) if b is not None and b >= 1})
    per_block = []
    for b in blocks:  # sensitivity: NNCF full bias correction on this one block, the rest FP32
        per_block.append(dict(ev.measure(f"block {b} only", nncf_int8(fp32, calib, lambda i, b=b: i == b)), block=b))
    res = {
        "bundle": a.bundle,
        "machine": machine(),
        "threads": a.threads,
        "headline": ev.head,
        "rows": rows,
        "per_block": per_block,
        "fp32_b32_ms": ev.b32_ms(ev.compiled(fp32)),
    }
    write_results("int8_error_sources", res, _markdown)


def _markdown(res):
    head = res["headline"]
    n = res["rows"][0]["images"]
    lines = [
        "# Where the INT8 backbone's error comes from (`python benchmarks/int8_error_sources.py`)",
        "",
        f"Bundle `{res['bundle']}`; OpenVINO CPU, f32 hint, {res['threads']} threads; {res['machine']}. Blocks >= 1 "
        f"quantized; FP32 denoiser. {n} images (1,000 CIFAR-10 test, 600 Tiny ImageNet, 600 DTD). Flips: decisions "
        f"that change at the bundle's threshold of each of the 10 scores; the export guard allows 0.5 % "
        f"({int(0.005 * n)} here) on every score, rank correlation >= 0.999 and AUROC change <= 0.2 points.",
        "",
        f"| variant | z0 rel. error | worst rank corr. | worst AUROC change (pts) | flips, worst score | flips, {head} "
        "| backbone b32 p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_row(r, n) for r in res["rows"]]
    blocks = res.get("per_block", [])
    if not blocks:
        return "\n".join(lines)
    allowed = int(0.005 * n)
    rss = float(np.sqrt(sum(r["z0_rel"] ** 2 for r in blocks)))
    whole = next(r for r in res["rows"] if r["variant"].startswith("NNCF"))
    fit = [r["block"] for r in blocks if r["worst_flips"] <= allowed]
    lines += [
        "",
        "## One block at a time (NNCF static INT8, full bias correction; the other blocks FP32)",
        "",
        f"FP32 backbone b32 p50 in the same run: {res['fp32_b32_ms']:.1f} ms. The single-block errors add in "
        f"quadrature: sqrt(sum of squares) = {rss:.3f}, against {whole['z0_rel']:.3f} measured with all of them "
        f"quantized. Blocks that stay within the {allowed} allowed flips on their own: "
        f"{', '.join(map(str, fit)) or 'none'}; each spends {min(r['worst_flips'] for r in blocks)}-"
        f"{max(r['worst_flips'] for r in blocks)} of them.",
        "",
        lines[4],
        lines[5],
    ]
    lines += [_row(r, n) for r in blocks]
    return "\n".join(lines)


def _row(r, n, extra=()):
    """One table row of a measure() result on n images; extra: cells before the time's."""
    return (
        f"| {r['variant']} | {r['z0_rel']:.3f} | {r['min_rank']:.6f} | {100 * r['max_dauroc']:.2f} | "
        f"{r['worst_flips']} ({r['worst_score']}, {r['worst_flips'] / n:.1%}) | {r['head_flips']} "
        f"({r['head_flips'] / n:.1%}) | " + "".join(f"{c} | " for c in extra) + f"{r['backbone_b32_ms']:.1f} ms |"
    )


if __name__ == "__main__":
    main()
