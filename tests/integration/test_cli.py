import json

import numpy as np
from click.testing import CliRunner

from dlsr_deploy.cli import evaluate, train


def test_train_then_eval_end_to_end(tmp_path):
    from bundles import make_sets

    id_path, ood_path = make_sets(tmp_path)
    run = tmp_path / "run"
    r = CliRunner().invoke(
        train,
        [
            "--data",
            str(id_path),
            "--out",
            str(run),
            "--backbone",
            "efficientnet-lite0",
            "--input-size",
            "64",
            "--preset",
            "small",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    info = json.loads((run / "run.json").read_text())
    assert info["n_train"] + info["n_holdout"] == 96 and len(info["holdout_indices"]) == info["n_holdout"]
    r = CliRunner().invoke(
        evaluate,
        [
            "--model",
            str(run),
            "--id",
            str(id_path),
            "--ood",
            f"noise={ood_path}",
            "--t-start",
            "1",
            "--t-start",
            "3",
            "--knn-k",
            "5",
        ],
    )
    assert r.exit_code == 0, r.output
    _check_eval_files(run / "eval")
    assert "AUROC (+-) / FPR95" in r.output


def _check_eval_files(out):
    """What dlsr-eval wrote for the tiny run: every score, intervals, baselines, the files."""
    res = json.loads((out / "eval.json").read_text())
    assert res["direction"] == "higher score = more OOD" and "ID positive" in res["positive_class"]
    assert [b["score_config"]["t_start"] for b in res["runs"]] == [1, 3]
    m = res["runs"][1]["metrics"]
    from dlsr_deploy.scoring import COMBINATIONS, DENSITY_HEADS

    heads = set(DENSITY_HEADS)
    combos = {f"{how}_" + "_".join(c) for c in COMBINATIONS for how in ("sum", "max")}
    assert set(m) == {"mfsim", "mse", "lr_mse", "lr_mfsim"} | heads | combos
    assert len(res["runs"][1]["combinations"]) == len(combos)  # standardised on the held-out ID z0
    old = res["baselines"]["mahalanobis"]["noise"]["auroc"]  # the earlier baseline, kept as a head
    assert abs(m["maha_ridge"]["noise"]["auroc"] - old) < 1e-3
    assert set(m["mfsim"]) == {"noise", "mean"} and set(m["mfsim"]["noise"]) == {
        "auroc",
        "fpr95",
        "aupr_in",
        "aupr_out",
        "auroc_lo",
        "auroc_hi",
        "fpr95_lo",
        "fpr95_hi",
    }
    lo, hi = m["mfsim"]["noise"]["auroc_lo"], m["mfsim"]["noise"]["auroc_hi"]
    assert lo <= m["mfsim"]["noise"]["auroc"] <= hi  # a 95 % bootstrap interval around the estimate
    assert set(res["baselines"]) == {"mahalanobis", "knn5"}
    assert res["baselines"]["mahalanobis"]["noise"]["auroc"] > 0.9  # random noise vs one scene is easy
    md = (out / "eval.md").read_text()
    assert "higher score = more OOD" in md and "| mfsim |" in md
    assert (out / "eval.png").stat().st_size > 10_000
    scores = np.load(out / "eval_scores.npz")
    assert scores["id.mfsim"].shape == (96,) and scores["noise.mfsim"].shape == (40,)


def test_eval_errors_are_readable(tmp_path):
    r = CliRunner().invoke(evaluate, ["--model", str(tmp_path), "--id", "x.npz", "--ood", "y.npz"])
    assert r.exit_code == 1 and "config file not found" in r.output


def test_eval_refuses_two_ood_sets_with_one_name(tmp_path):
    from bundles import make_sets

    id_path, ood_path = make_sets(tmp_path)
    r = CliRunner().invoke(
        evaluate, ["--model", str(tmp_path), "--id", str(id_path), "--ood", f"x={ood_path}", "--ood", f"x={id_path}"]
    )
    assert r.exit_code == 1 and "must be unique" in r.output
