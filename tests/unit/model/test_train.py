import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from dlsr_deploy.config import DenoiserConfig, FeatureConfig, ModelConfig, ScoreConfig, TrainConfig
from dlsr_deploy.errors import ConfigError, WeightsError
from dlsr_deploy.model.denoiser import LFDN, timestep_embedding
from dlsr_deploy.model.detector import build_reconstructor, score_features
from dlsr_deploy.model.train import load_lfdn, load_tensors, train_denoiser


def test_lfdn_paper_shapes_and_zero_init():
    # paper (official) sizes: D=720, width 1440, 16 blocks -> 86,740,560 parameters (dlsr-paper.md 2)
    m = LFDN(DenoiserConfig(dim=720, width=None, blocks=16))
    assert sum(p.numel() for p in m.parameters()) == 86_740_560
    z = torch.randn(3, 720)
    out = m(z, torch.tensor([0, 3, 99]))
    assert out.shape == (3, 720) and torch.all(out == 0)  # zero-initialised output layer


def test_timestep_embedding_formula():
    e = timestep_embedding(torch.tensor([3]), 8)
    f = 10000 ** (-np.arange(4) / 4)
    np.testing.assert_allclose(e[0].numpy(), np.r_[np.cos(3 * f), np.sin(3 * f)], rtol=1e-6)


def _cfg(epochs=3, every=1):
    return ModelConfig(
        feature=FeatureConfig(),
        denoiser=DenoiserConfig.preset("small", 24),
        train=TrainConfig(epochs=epochs, batch_size=32, checkpoint_every=every, seed=3),
        layer_sizes=(8, 16),
    )


def test_training_reduces_loss_and_writes_files(tmp_path):
    z = np.random.default_rng(0).standard_normal((200, 24)).astype(np.float32)
    r = train_denoiser(z, _cfg(epochs=4), tmp_path / "run", progress=False)
    assert r.losses[-1] < r.losses[0]
    for f in ["config.json", "model.safetensors", "model_first_epoch.safetensors", "train_log.csv"]:
        assert (tmp_path / "run" / f).exists(), f
    assert not list((tmp_path / "run").rglob("*.tmp"))
    final, first = load_lfdn(tmp_path / "run"), load_lfdn(tmp_path / "run", "first")
    diff = sum((a - b).abs().sum().item() for a, b in zip(final.parameters(), first.parameters()))
    assert diff > 0


def test_training_rejects_bad_features(tmp_path):
    with pytest.raises(ConfigError, match="expected \\[N, 24\\]"):
        train_denoiser(np.zeros((10, 5), np.float32), _cfg(), tmp_path, progress=False)
    bad = np.zeros((10, 24), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        train_denoiser(bad, _cfg(), tmp_path, progress=False)


_SCRIPT = """
import os, signal, sys, numpy as np
from dlsr_deploy.config import *
from dlsr_deploy.model.train import train_denoiser
kill_at = int(os.environ.get("KILL_AT_STEP", "-1"))  # SIGKILL from the test's own callback
on_step = lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == kill_at else None
cfg = ModelConfig(feature=FeatureConfig(), denoiser=DenoiserConfig.preset("small", 24),
                  train=TrainConfig(epochs=4, batch_size=32, checkpoint_every=1, seed=3), layer_sizes=(8, 16))
z = np.random.default_rng(0).standard_normal((200, 24)).astype(np.float32)
train_denoiser(z, cfg, sys.argv[1], resume=len(sys.argv) > 2, progress=False, on_step=on_step)
"""


def _run(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", _SCRIPT, *args], env=env, capture_output=True, text=True)


def test_resume_after_sigkill_gives_identical_weights(tmp_path):
    full = _run([str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr
    # 7 steps per epoch: step 17 is in the middle of epoch 3 (after the epoch-2 checkpoint)
    killed = _run([str(tmp_path / "cut")], {"KILL_AT_STEP": "17"})
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    assert json.loads((tmp_path / "cut" / "checkpoints" / "latest.json").read_text())["dir"] == "epoch_0002"
    resumed = _run([str(tmp_path / "cut"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_tensors(tmp_path / "full" / "model.safetensors"), load_tensors(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    fa = load_tensors(tmp_path / "full" / "model_first_epoch.safetensors")
    fb = load_tensors(tmp_path / "cut" / "model_first_epoch.safetensors")
    assert all(torch.equal(fa[k], fb[k]) for k in fa)


def test_corrupt_checkpoint_is_reported(tmp_path):
    z = np.random.default_rng(0).standard_normal((64, 24)).astype(np.float32)
    train_denoiser(z, _cfg(epochs=1), tmp_path / "run", progress=False)
    (tmp_path / "run" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        load_lfdn(tmp_path / "run")


def test_scores_are_reproducible_and_lr_uses_shared_noise(tmp_path):
    z = np.random.default_rng(0).standard_normal((64, 24)).astype(np.float32)
    cfg = _cfg(epochs=2)
    train_denoiser(z, cfg, tmp_path / "run", progress=False)
    m, f = load_lfdn(tmp_path / "run"), load_lfdn(tmp_path / "run", "first")
    sc = ScoreConfig(t_start=3, steps=2, n_noise=2)
    a = score_features(z[:10], m, sc, cfg.schedule, cfg.layer_sizes, first=f)
    b = score_features(z[:10], m, sc, cfg.schedule, cfg.layer_sizes, first=f, batch_size=3)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    # same model as "first": LR is exactly zero because the noise is shared
    same = score_features(z[:10], m, sc, cfg.schedule, cfg.layer_sizes, first=m)
    assert np.all(same["lr_mse"] == 0)


def test_reconstruction_follows_the_plan(tmp_path):
    """The torch reconstructor equals the plan applied by hand."""
    z = np.random.default_rng(1).standard_normal((4, 24)).astype(np.float32)
    cfg = _cfg()
    torch.manual_seed(0)
    m = LFDN(cfg.denoiser)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    rec = build_reconstructor(m, ScoreConfig(t_start=10, steps=3, eta=0.5), cfg.schedule, cfg.layer_sizes)
    with torch.no_grad():
        zt = torch.from_numpy(z)
        x = rec.plan.start_a * zt + rec.plan.start_b * rec.n0[0]
        for k, s in enumerate(rec.plan.steps):
            x0 = m(x, torch.full((4,), s.t))
            x = s.a * x + s.b * x0 + s.sigma * rec.ns[0, k]
        out = rec(zt)["z0_hat"]
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)


def test_early_stopping_keeps_the_best_heldout_epoch(tmp_path):
    r = np.random.default_rng(0)
    z = r.standard_normal((200, 24)).astype(np.float32)
    val = (3 * r.standard_normal((60, 24))).astype(np.float32)
    cfg = ModelConfig(
        feature=FeatureConfig(),
        denoiser=DenoiserConfig.preset("small", 24),
        train=TrainConfig(epochs=12, batch_size=32, checkpoint_every=50, seed=3, patience=2),
        layer_sizes=(8, 16),
    )
    res = train_denoiser(z, cfg, tmp_path / "run", progress=False, val_z=val)
    assert len(res.val_losses) == res.epochs and res.best_epoch == int(np.argmin(res.val_losses)) + 1
    if res.epochs < 12:  # stopped early: exactly `patience` epochs after the best one
        assert res.epochs - res.best_epoch == 2
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert log[0] == "epoch,loss,heldout_loss" and len(log) == res.epochs + 1
    # model.safetensors is the EMA of the best epoch, recomputable from the held-out set
    from dlsr_deploy.model.train import _ValSet

    assert _ValSet(val, cfg).loss(load_lfdn(tmp_path / "run")) == pytest.approx(min(res.val_losses), rel=1e-6)
    with pytest.raises(ConfigError, match="held-out"):
        train_denoiser(z, cfg, tmp_path / "run2", progress=False)


def test_resume_can_end_a_run_at_its_last_checkpoint(tmp_path):
    z = np.random.default_rng(0).standard_normal((64, 24)).astype(np.float32)
    train_denoiser(z, _cfg(epochs=2, every=1), tmp_path / "run", progress=False)
    before = load_tensors(tmp_path / "run" / "model.safetensors")
    res = train_denoiser(z, _cfg(epochs=1, every=1), tmp_path / "run", resume=True, progress=False)
    after = load_tensors(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before) and res.epochs == 2
    other = ModelConfig(
        feature=FeatureConfig(),
        denoiser=DenoiserConfig.preset("small", 24),
        train=TrainConfig(epochs=2, lr=1e-3),
        layer_sizes=(8, 16),
    )
    with pytest.raises(ConfigError, match="different configuration"):
        train_denoiser(z, other, tmp_path / "run", resume=True, progress=False)


def test_native_size_comes_from_the_data(tmp_path):
    """Images of 48x40 px reach the backbone at their own resolution (native size 40, the median
    shorter side), not reduced to CIFAR's 32; the run and its bundle record where the size came from."""
    import json

    from PIL import Image

    from dlsr_deploy.config import FeatureConfig, TrainConfig
    from dlsr_deploy.pipeline import run_train

    d = tmp_path / "frames"
    d.mkdir()
    r = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(r.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / f"{i:02d}.png")
    kw = dict(
        preset="small", tcfg=TrainConfig(epochs=1, batch_size=8), holdout=0.25, cache_dir=tmp_path / "c"
    )
    info = run_train(str(d), tmp_path / "run", FeatureConfig(backbone="efficientnet-lite0", input_size=64), **kw)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["feature"]["native_size"] == 40 and info["native_size"] == 40
    assert info["native_size_source"].startswith("data: median shorter side of 24 training images (40 px)")
    from dlsr_deploy.export.exporter import export_bundle

    m = export_bundle(tmp_path / "run", tmp_path / "b", verify=False)
    assert m["preprocessing"]["native_size"] == 40 and m["preprocessing"]["native_size_source"].startswith("data:")
    big = tmp_path / "big"
    big.mkdir()
    for i in range(12):
        Image.fromarray(r.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(big / f"{i:02d}.png")
    run_train(str(big), tmp_path / "run2", FeatureConfig(backbone="efficientnet-lite0", input_size=64), **kw)
    assert json.loads((tmp_path / "run2" / "config.json").read_text())["feature"]["native_size"] == 64  # capped


def test_resume_compares_settings_as_run_json_holds_them(tmp_path):
    """Tuples in the config (mean, std) are lists in run.json: the same settings, not a change."""
    import json

    from dlsr_deploy.run_folder import check_resume, identity

    cfg = {"feature": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}, "layer_sizes": (16, 24)}
    now = identity(["a.npz"], ["x" * 64], cfg, holdout=0.1)
    (tmp_path / "run.json").write_text(json.dumps({"status": "training", "identity": now}))
    check_resume(tmp_path, now)  # no error: nothing changed
    changed = identity(["a.npz"], ["x" * 64], {**cfg, "layer_sizes": (16, 32)}, holdout=0.1)
    with pytest.raises(Exception, match="layer_sizes"):
        check_resume(tmp_path, changed)


def test_resume_ignores_a_profile_an_earlier_run_json_recorded(tmp_path):
    """run.json files written while the profile was part of the identity still resume; other changes don't."""
    import json

    from dlsr_deploy.run_folder import check_resume, identity

    cfg = {"layer_sizes": [16, 24], "views": [{"backbone": "efficientnet-lite1"}]}
    stored = identity(["a.npz"], ["x" * 64], {**cfg, "profile": "accurate"}, holdout=0.1)
    (tmp_path / "run.json").write_text(json.dumps({"status": "done", "identity": stored}))
    check_resume(tmp_path, identity(["a.npz"], ["x" * 64], cfg, holdout=0.1))  # no error
    with pytest.raises(Exception, match=r"config\.views"):
        check_resume(tmp_path, identity(["a.npz"], ["x" * 64], {**cfg, "views": []}, holdout=0.1))
