"""dlsr-inspect's readable summary of a manifest."""

from __future__ import annotations

from dlsr_deploy.manifest.model import Manifest


def _view_lines(pre: dict) -> list:
    """The profile and the views of a detector of several views (nothing for one view)."""
    profile = pre.get("profile")
    if not pre.get("views"):
        return [f"profile  {profile} (one view)"] if profile else []
    lines = [f"profile  {profile or '(none: views of its own)'}; views {pre.get('views_summary', '?')}"]
    for v in pre["views"]:
        lines.append(f"  view   {v['view']:<16} z0[{v['z0'][0]}:{v['z0'][1]}] -> {v['score']}")
    return lines


def describe(m: Manifest) -> str:
    """Readable summary for dlsr-inspect."""
    d = m.data
    lines = [
        f"bundle   {d['name']}  ({m.path})",
        f"created  {d.get('created', '?')} by dlsr-deploy {d.get('producer', {}).get('dlsr_deploy', '?')}",
    ]
    prod = d.get("producer", {})
    lines.append("producer " + ", ".join(f"{k} {v}" for k, v in prod.items()))
    pre = d["preprocessing"]
    lines.append(
        f"input    images uint8 [batch, {pre['native_size']}, {pre['native_size']}, 3] RGB -> resized to "
        f"{pre['input_size']} inside the graph ({pre['backbone']})"
    )
    lines += _view_lines(pre)
    prec = d["precision"]
    lines.append(
        f"precision {prec['mode']}"
        + (
            f" ({prec.get('how', '')}; FP16 share of compute nodes: "
            + ", ".join(f"{k} {v:.0%}" for k, v in prec.get("fp16_share", {}).items())
            + ")"
            if prec["mode"] == "fp16"
            else ""
        )
    )
    lines += _guard_lines(prec)
    sc = d["scores"]
    lines.append(f"scores   {', '.join(sc['names'])} (headline {sc['headline']}); {sc['direction']}")
    s = d.get("schedule", {})
    if s:
        lines.append(
            f"denoise  t_start {s.get('t_start')}, steps {s.get('steps')}, eta {s.get('eta')}, stored noise seed "
            f"{s.get('noise_seed')} x {s.get('n_noise')}, mode {s.get('mode')}"
        )
    thr = d["threshold"]
    if thr.get("value") is not None:
        lines.append(
            f"threshold {thr['score']} > {thr['value']:.6g} means OOD (TPR {thr['target_tpr']:.0%} on "
            f"{thr['n_images']} ID images; {thr['method']}; backend {thr['backend']})"
        )
    lines.append("files")
    for role, f in m.files.items():
        lines.append(
            f"  {role:<9} {f['name']:<16} {f['bytes'] / 1e6:8.2f} MB  sha256 {f['sha256'][:16]}...  nodes "
            f"{f.get('nodes', '?')}"
        )
        for io in f.get("inputs", []) + f.get("outputs", []):
            lines.append(f"      {io['name']:<12} {io['dtype']:<8} {io['shape']}")
    par = d.get("parity")
    if par:
        lines.append(f"parity   {par.get('summary', '')}")
        if m.relaxed_parity_note:
            lines.append(f"         {m.relaxed_parity_note}")
    return "\n".join(lines)


def _guard_lines(prec: dict) -> list:
    """A low-precision backbone's accuracy guard (precision.bf16 / precision.int8), one line per candidate."""
    rec = prec.get(prec.get("mode"))
    if not isinstance(rec, dict) or not isinstance(rec.get("candidates"), dict):
        return []
    lines = [f"guard    {rec.get('backbone', '')}; kept heads fitted on {rec.get('heads_fitted_on', '?')}"]
    for name, c in rec["candidates"].items():
        sets = ", ".join(
            f"{s} AUROC {100 * v['auroc']:.2f} (FP32 {100 * v['auroc_fp32']:.2f}, lower end "
            f"{100 * v['auroc_fp32_lo']:.2f})"
            for s, v in (c.get("sets") or {}).items()
        )
        verdict = "passed" if c.get("passed") else "failed: " + "; ".join(c.get("failures", []))
        lines.append(f"  {name:<10} {verdict}; {sets}; flips {100 * c.get('flips', 0):.2f} %")
    return lines
