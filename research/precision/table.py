"""The accuracy rows and the Markdown table the two INT8 backbone studies share."""


def accuracy_row(ref: dict, got: dict, head: str, thr: float) -> dict:
    """A backbone variant's accuracy against the reference backbone, both feeding the same
    denoiser. ref / got: {'id' | ood set: (z0 [N, D], {output name: scores [N]})}. -> z0
    relative L2 error on the ID images, AUROC in % of MFsim and of the headline vs each OOD set,
    and the headline decisions flipped at the threshold over all images."""
    import numpy as np

    from dlsr_deploy.manifest import output_name
    from dlsr_deploy.metrics import auroc

    z_ref, z = ref["id"][0], got["id"][0]
    row = {"z0_rel": float(np.linalg.norm(z - z_ref, axis=1).mean() / np.linalg.norm(z_ref, axis=1).mean())}
    for score in ("mfsim", head):
        o = output_name(score)
        for s in (k for k in got if k != "id"):
            row[f"auroc_{score}_{s}"] = 100 * auroc(got["id"][1][o], got[s][1][o])
    h = output_name(head)
    a_ref = np.concatenate([ref[k][1][h] for k in ref])
    a_got = np.concatenate([got[k][1][h] for k in ref])
    row["flips"], row["images"] = int(((a_ref > thr) != (a_got > thr)).sum()), len(a_ref)
    return row


def backbone_table(res: dict, title: str, note: str, label) -> str:
    """The Markdown table of research/precision/int8_backbone.py and int8_openvino.py: one line per
    variant (label(row) names it), speed-ups against the first (FP32) row."""
    head, base = res["headline"], res["rows"][0]
    lines = [
        f"# {title}",
        "",
        note,
        "",
        f"| backbone | z0 rel. error | MFsim TIN / DTD | {head} TIN / DTD | flips | backbone p50 b1 | b32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {label(r)} | {r['z0_rel']:.3f} | {r['auroc_mfsim_tinyimagenet']:.2f} / {r['auroc_mfsim_dtd']:.2f} | "
            f"{r[f'auroc_{head}_tinyimagenet']:.2f} / {r[f'auroc_{head}_dtd']:.2f} | {r['flips']} "
            f"({r['flips'] / r['images']:.1%}) | {r['backbone_b1_ms']:.2f} ms "
            f"({base['backbone_b1_ms'] / r['backbone_b1_ms']:.2f}x) | {r['backbone_b32_ms']:.1f} ms "
            f"({base['backbone_b32_ms'] / r['backbone_b32_ms']:.2f}x) |"
        )
    return "\n".join(lines)
