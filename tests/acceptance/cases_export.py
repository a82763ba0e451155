"""dlsr-export and dlsr-train: files kept safe, readable errors."""

import shutil

import numpy as np
from tour import clean_error, cli


def export_safety(env):
    d, run = env.d, env.run
    yield (
        "data loss",
        "dlsr-export --out MODEL --force",
        "refused, model intact",
        *_and(
            clean_error(
                *cli("dlsr-export", "--model", run, "--out", run, "--force", "--no-verify", "--quiet"), "model folder"
            ),
            (run / "model.safetensors").exists(),
        ),
    )
    notes = d / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("x")
    yield (
        "data loss",
        "dlsr-export --force over a non-bundle folder",
        "refused, files intact",
        *_and(
            clean_error(
                *cli("dlsr-export", "--model", run, "--out", notes, "--force", "--no-verify", "--quiet"),
                "not a bundle written by dlsr-export",
            ),
            (notes / "keep.txt").exists(),
        ),
    )
    proj = d / "project"
    proj.mkdir()
    (proj / "manifest.json").write_text('{"name": "my web app"}')
    (proj / "app.py").write_text("x")
    yield (
        "data loss",
        "dlsr-export --force over a project folder with a manifest.json",
        "refused, files intact",
        *_and(
            clean_error(
                *cli("dlsr-export", "--model", run, "--out", proj, "--force", "--no-verify", "--quiet"),
                "not a bundle written by dlsr-export",
            ),
            (proj / "app.py").exists(),
        ),
    )


def export_replace(env):
    d, run = env.d, env.run
    mine = env.copy_bundle("withnotes")
    (mine / "NOTES.md").write_text("mine")
    code, msg, tb = cli("dlsr-export", "--model", run, "--out", mine, "--force", "--no-verify", "--quiet")
    yield (
        "data loss",
        "dlsr-export --force over a bundle holding the user's NOTES.md",
        "replaced, NOTES.md kept",
        code == 0 and (mine / "NOTES.md").exists(),
        f"exit {code}",
    )
    code, msg, tb = cli(
        "dlsr-export",
        "--model",
        run,
        "--out",
        d / "strict",
        "--n-verify",
        "16",
        "--rank-corr",
        "1",
        "--flip-rate",
        "0",
        "--z0-rel",
        "0",
        "--quiet",
    )
    kept = (d / "strict.failed" / "manifest.json").exists() and not (d / "strict").exists()
    yield (
        "silent",
        "an export that fails parity",
        "exit 1; kept at OUT.failed, nothing at --out",
        code == 1 and kept and not tb,
        f"exit {code}: {msg[:90]}",
    )
    code, msg, tb = cli("dlsr-inspect", d / "strict.failed")
    yield (
        "silent",
        "dlsr-inspect on the failed bundle",
        "exit 1 naming the failure",
        *clean_error(code, msg, tb, "FAILED"),
    )
    yield (
        "silent",
        "dlsr-score on the failed bundle",
        "refused",
        *clean_error(*cli("dlsr-score", d / "strict.failed", env.imgs, "--quiet"), "failed its parity check"),
    )


def _and(pair, extra):
    return pair[0] and extra, pair[1]


def training(env):
    d = env.d
    code, msg, tb = env.train()
    before = (d / "r" / "model.safetensors").read_bytes() if code == 0 else b""
    (d / "r" / "mine.txt").write_text("keep")
    ok, got = clean_error(*env.train(), "already holds a trained run")
    yield (
        "data loss",
        "dlsr-train --out EXISTING_RUN (no --resume)",
        "refused, model unchanged",
        ok and (d / "r" / "model.safetensors").read_bytes() == before,
        got,
    )
    yield (
        "silent",
        "dlsr-train --resume with other --data",
        "refused naming the data",
        *clean_error(*env.train("--resume", data=env.ood_path), "data_sha256"),
    )
    yield (
        "silent",
        "dlsr-train --resume with another --input-size",
        "refused naming the field",
        *clean_error(*env.train("--resume", "--input-size", "96"), "config.feature.input_size"),
    )
    code, msg, tb = env.train("--force")
    yield (
        "data loss",
        "dlsr-train --force",
        "run replaced, the user's file kept",
        code == 0 and (d / "r" / "mine.txt").exists(),
        f"exit {code}",
    )


def training_data(env):
    d = env.d
    shutil.copy(env.id_path, d / "copy.npz")
    twice = env.train(data=[env.id_path, f"{env.id_path.parent}/./{env.id_path.name}"], out=d / "r2")
    yield "silent", "the same pack twice (two spellings)", "refused", *clean_error(*twice, "given twice")
    same = env.train(data=[env.id_path, d / "copy.npz"], out=d / "r3")
    yield "silent", "two packs with the same images", "refused", *clean_error(*same, "hold the same images")


def training_errors(env):
    d = env.d
    three = d / "three"
    three.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.load(env.id_path)["images"][i]).save(three / f"{i}.png")
    # the default --holdout 0.1 (the tour's other runs hold out 0.25, which leaves 1 of 3)
    ok, got = clean_error(*env.train("--holdout", "0.1", data=three, out=d / "r4"), "holdout")
    yield (
        "traceback",
        "dlsr-train on 3 images",
        "clear holdout error, no run left",
        ok and not (d / "r4" / "model.safetensors").exists(),
        got,
    )
    shutil.copytree(env.run, d / "ck")
    (d / "ck" / "checkpoints" / "latest.json").write_text("{broken")
    yield (
        "traceback",
        "corrupt latest.json on --resume",
        "one line",
        *clean_error(*env.train("--resume", out=d / "ck", data=env.id_path), "resume"),
    )
    blob = env.id_path.read_bytes()
    (d / "trunc.npz").write_bytes(blob[: len(blob) // 2])
    for name, args in (
        ("dlsr-train", ["--data", d / "trunc.npz", "--out", d / "r5"]),
        ("dlsr-eval", ["--model", env.run, "--id", d / "trunc.npz", "--ood", env.ood_path]),
        ("dlsr-score", [env.bundle, d / "trunc.npz"]),
    ):
        yield (
            "traceback",
            f"{name} on a truncated .npz",
            "one line naming the file",
            *clean_error(*cli(name, *args), "not a readable .npz"),
        )


GROUPS = [export_safety, export_replace, training, training_data, training_errors]
