"""LFDN training on cached z0 vectors, with atomic checkpoints and exact resume.

Randomness is drawn from a generator seeded by (seed, epoch), so an epoch replayed after
an interruption draws exactly the same batches, timesteps and noise; with the model,
EMA and optimizer state restored from the last checkpoint the run ends with the same
weights as an uninterrupted one (on the same machine and thread count).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from dlsr_deploy.config import ModelConfig
from dlsr_deploy.errors import ConfigError, TrainingError, WeightsError
from dlsr_deploy.io import atomic_write_text
from dlsr_deploy.log import info
from dlsr_deploy.model.denoiser import LFDN
from dlsr_deploy.run_folder import CHECKPOINTS, CONFIG, TRAIN_LOG
from dlsr_deploy.run_folder import FIRST_EPOCH as FIRST
from dlsr_deploy.run_folder import MODEL as FINAL
from dlsr_deploy.schedule import alphas_cumprod


def _save_tensors(path: Path, tensors: Dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from dlsr_deploy.io import atomic_write

    atomic_write(path, lambda p: save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(p)))


def load_tensors(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise WeightsError(f"checkpoint file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise WeightsError(f"cannot read checkpoint {path}: {exc}") from None


def load_lfdn(run_dir: Path, which: str = "final") -> LFDN:
    """Load the EMA weights of a run ('final' or 'first' epoch)."""
    run_dir = Path(run_dir)
    cfg = ModelConfig.load(run_dir / CONFIG)
    model = LFDN(cfg.denoiser)
    state = load_tensors(run_dir / (FINAL if which == "final" else FIRST))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{run_dir}: weights do not match config.json ({str(exc).splitlines()[0]})") from None
    return model.eval()


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    losses: List[float]
    seconds: float
    val_losses: List[float] = None
    best_epoch: int = 0


class _Checkpointer:
    def __init__(self, run_dir: Path):
        self.dir = run_dir / CHECKPOINTS

    def latest(self) -> Optional[Path]:
        ptr = self.dir / "latest.json"
        if not ptr.exists():
            return None
        try:
            name = json.loads(ptr.read_text())["dir"]
            if not isinstance(name, str) or "/" in name or name.startswith("."):
                raise ValueError(f"bad checkpoint folder name {name!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"cannot resume: {ptr} is corrupt ({exc}); delete {self.dir} to start over") from None
        path = self.dir / name
        return path if (path / "meta.json").exists() else None

    def save(self, epoch: int, tensors: Dict[str, torch.Tensor], meta: dict) -> None:
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch_{epoch:04d}"
        tmp = self.dir / f".{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta))
        final = self.dir / name
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        atomic_write_text(self.dir / "latest.json", json.dumps({"dir": name}))
        for old in self.dir.glob("epoch_*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)


def _opt_tensors(opt: torch.optim.Optimizer) -> Dict[str, torch.Tensor]:
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def _load_opt(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor], groups: list) -> None:
    state: Dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


class _State:
    """Everything an epoch changes: model, EMA, optimizer, counters, the best epoch."""

    def __init__(self, cfg: ModelConfig):
        tc = cfg.train
        torch.manual_seed(tc.seed)
        self.model = LFDN(cfg.denoiser)
        self.ema = LFDN(cfg.denoiser)
        self.ema.load_state_dict(self.model.state_dict())
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.epoch, self.step, self.losses = 0, 0, []
        self.first_state: Optional[Dict[str, torch.Tensor]] = None
        self.val_losses: List[float] = []
        self.best_val, self.best_epoch = float("inf"), 0
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.stopped = False

    def tensors(self) -> Dict[str, torch.Tensor]:
        t = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        t.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        if self.first_state is not None:
            t.update({f"first.{k}": v for k, v in self.first_state.items()})
        if self.best_state is not None:
            t.update({f"best.{k}": v for k, v in self.best_state.items()})
        t.update(_opt_tensors(self.opt))
        return t

    def meta(self) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "losses": self.losses,
            "param_groups": self.opt.state_dict()["param_groups"],
            "val_losses": self.val_losses,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "stopped": self.stopped,
        }

    def restore(self, latest: Path) -> None:
        meta_path = latest / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
            int(meta["epoch"]), int(meta["step"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WeightsError(
                f"cannot resume: {meta_path} is unreadable ({exc.__class__.__name__}); delete {latest.parent} to "
                "start over"
            ) from None
        tensors = load_tensors(latest / "state.safetensors")
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise WeightsError(
                f"cannot resume: {latest / 'state.safetensors'} holds NaN or infinite values in {bad[:3]} "
                "(corrupt checkpoint)"
            )
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        self.first_state = {k[6:]: v for k, v in tensors.items() if k.startswith("first.")} or None
        _load_opt(self.opt, tensors, meta["param_groups"])
        self.epoch, self.step, self.losses = meta["epoch"], meta["step"], meta["losses"]
        self.val_losses, self.best_val, self.best_epoch = (
            meta.get("val_losses", []),
            meta.get("best_val", float("inf")),
            meta.get("best_epoch", 0),
        )
        self.best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        self.stopped = bool(meta.get("stopped"))


def _check_features(z: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    z = np.ascontiguousarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] != cfg.denoiser.dim:
        raise ConfigError(f"training features: expected [N, {cfg.denoiser.dim}], got {list(z.shape)}")
    if len(z) < 2:
        raise ConfigError(f"training needs at least 2 images, got {len(z)}")
    if not np.all(np.isfinite(z)):
        raise ConfigError("training features contain NaN or infinite values")
    return z


def _write_config(run_dir: Path, cfg: ModelConfig, resume: bool) -> None:
    """config.json; on resume it must match except for epochs, patience and the checkpoint
    interval (which do not alter the epochs already run: a run can be extended or ended)."""
    cfg_path = run_dir / CONFIG
    if resume and cfg_path.exists():

        def core(c):
            d = c.to_dict()
            for k in ("epochs", "patience", "checkpoint_every"):
                d["train"].pop(k)
            return d

        if core(ModelConfig.load(cfg_path)) != core(cfg):
            raise ConfigError(
                f"resume: {cfg_path} was written with a different configuration; start a new run", param="resume"
            )
    cfg.save(cfg_path)


def _run_epoch(st: _State, zt: torch.Tensor, cfg: ModelConfig, bar, on_step: Optional[Callable[[int], None]]) -> float:
    """One epoch over the training vectors; randomness from a generator seeded by (seed, epoch)."""
    tc = cfg.train
    ab = torch.from_numpy(alphas_cumprod(cfg.schedule)).float()
    sqrt_ab, sqrt_1m = ab.sqrt(), (1 - ab).sqrt()
    g = torch.Generator().manual_seed(tc.seed * 1_000_003 + st.epoch)
    n = len(zt)
    perm = torch.randperm(n, generator=g)
    st.model.train()
    total, count = 0.0, 0
    for i in range(0, n, tc.batch_size):
        x0 = zt[perm[i : i + tc.batch_size]]
        b = len(x0)
        t = torch.randint(0, cfg.schedule.timesteps, (b,), generator=g)
        eps = torch.randn(b, x0.shape[1], generator=g)
        xt = sqrt_ab[t, None] * x0 + sqrt_1m[t, None] * eps
        loss = ((st.model(xt, t) - x0) ** 2).mean()
        if not torch.isfinite(loss):
            raise TrainingError(
                f"training diverged: the loss is {loss.item()} at epoch {st.epoch + 1}, step {st.step + 1}; "
                "lower --lr or check the features (the last checkpoint is kept)"
            )
        st.opt.zero_grad(set_to_none=True)
        loss.backward()
        st.opt.step()
        st.step += 1
        decay = min(tc.ema_decay, (1 + st.step) / (10 + st.step))
        with torch.no_grad():
            for pe, pm in zip(st.ema.parameters(), st.model.parameters()):
                pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        total += loss.item() * b
        count += b
        bar.update(1)
        bar.set_postfix(epoch=st.epoch + 1, loss=f"{loss.item():.4f}")
        if on_step is not None:
            on_step(st.step)
    return total / count


def _end_epoch(st: _State, val, run_dir: Path, tc, bar) -> None:
    """Bookkeeping after an epoch: first-epoch snapshot, held-out loss, best model, stop flag."""
    st.epoch += 1
    if st.epoch == 1:
        st.first_state = {k: v.clone() for k, v in st.ema.state_dict().items()}
        _save_tensors(run_dir / FIRST, st.first_state)
    if val is not None:
        v = val.loss(st.ema)
        st.val_losses.append(v)
        bar.set_postfix(epoch=st.epoch, loss=f"{st.losses[-1]:.4f}", val=f"{v:.4f}", best=st.best_epoch)
        if v < st.best_val:
            st.best_val, st.best_epoch = v, st.epoch
            st.best_state = {k: t.clone() for k, t in st.ema.state_dict().items()}
            _save_tensors(run_dir / FINAL, st.best_state)
        elif tc.patience is not None and st.epoch - st.best_epoch >= tc.patience:
            st.stopped = True
    _write_log(run_dir / TRAIN_LOG, st.losses, st.val_losses)


def _resume(st: _State, ckpt: _Checkpointer, run_dir: Path, log) -> None:
    """Restore the last checkpoint into st, saying exactly what is resumed."""
    latest = ckpt.latest()
    if latest is None:
        if (run_dir / FINAL).exists():
            raise ConfigError(
                f"resume: {run_dir} has a trained model but no checkpoint to resume from; "
                "use a new --out to train again"
            )
        log(f"resume: no checkpoint in {run_dir}; starting from scratch")
        return
    st.restore(latest)
    log(f"resuming {run_dir} from {latest.name} (after epoch {st.epoch}, step {st.step})")
    if st.stopped:
        log(f"{run_dir}: the run had stopped early at epoch {st.epoch}; nothing to resume")


def train_denoiser(
    z: np.ndarray,
    cfg: ModelConfig,
    run_dir: Path,
    resume: bool = False,
    progress: bool = True,
    log=info,
    val_z: Optional[np.ndarray] = None,
    on_step: Optional[Callable[[int], None]] = None,
) -> TrainResult:
    """Train LFDN on z0 vectors [N, D]; writes config.json, model.safetensors (EMA),
    model_first_epoch.safetensors (EMA after epoch 1, for LR), train_log.csv.

    With held-out ID vectors `val_z`, the EMA's denoising loss on them (fixed t and noise)
    is logged every epoch; with `cfg.train.patience` the run stops after that many epochs
    without improvement and model.safetensors holds the EMA of the best epoch.
    on_step(step) is called after every optimizer step (progress hooks, tests)."""
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    tc = cfg.train
    z = _check_features(z, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_config(run_dir, cfg, resume)
    st = _State(cfg)
    ckpt = _Checkpointer(run_dir)
    val = _ValSet(val_z, cfg) if val_z is not None and len(val_z) else None
    if tc.patience is not None and val is None:
        raise ConfigError("patience: early stopping needs held-out ID images; train with holdout > 0", param="patience")
    if resume:
        _resume(st, ckpt, run_dir, log)
    steps_per_epoch = (len(z) + tc.batch_size - 1) // tc.batch_size
    zt = torch.from_numpy(z)
    t0 = time.time()
    done = min(st.epoch, tc.epochs) * steps_per_epoch
    bar = tqdm(total=tc.epochs * steps_per_epoch, initial=done, desc="train", unit="step", disable=not progress)
    while st.epoch < tc.epochs and not st.stopped:
        st.losses.append(_run_epoch(st, zt, cfg, bar, on_step))
        _end_epoch(st, val, run_dir, tc, bar)
        if st.epoch % tc.checkpoint_every == 0 or st.epoch == tc.epochs or st.stopped:
            ckpt.save(st.epoch, st.tensors(), st.meta())
        if st.stopped:
            log(
                f"early stop after epoch {st.epoch}: held-out loss has not improved for {tc.patience} epochs "
                f"(best {st.best_val:.4f} at epoch {st.best_epoch})"
            )
    bar.close()
    return _finish(st, run_dir, val is not None, time.time() - t0)


def _finish(st: _State, run_dir: Path, held_out: bool, seconds: float) -> TrainResult:
    """model.safetensors = the best held-out epoch's EMA (restored from the checkpoint after a
    resume), else the last EMA; the first-epoch snapshot is written if it is missing."""
    _save_tensors(run_dir / FINAL, st.best_state if held_out and st.best_state is not None else st.ema.state_dict())
    if st.first_state is not None and not (run_dir / FIRST).exists():
        _save_tensors(run_dir / FIRST, st.first_state)
    best = st.best_epoch if held_out else len(st.losses)
    return TrainResult(run_dir, len(st.losses), st.losses, seconds, st.val_losses, best)


class _ValSet:
    """Held-out ID vectors with fixed timesteps and noise: the EMA's denoising loss on them."""

    def __init__(self, z: np.ndarray, cfg: ModelConfig):
        g = torch.Generator().manual_seed(cfg.train.seed + 7919)
        self.z = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
        self.t = torch.randint(0, cfg.schedule.timesteps, (len(z),), generator=g)
        ab = torch.from_numpy(alphas_cumprod(cfg.schedule)).float()
        eps = torch.randn(self.z.shape, generator=g)
        self.zt = ab.sqrt()[self.t, None] * self.z + (1 - ab).sqrt()[self.t, None] * eps

    @torch.no_grad()
    def loss(self, model: LFDN) -> float:
        model.eval()
        total = 0.0
        for i in range(0, len(self.z), 512):
            total += (
                ((model(self.zt[i : i + 512], self.t[i : i + 512]) - self.z[i : i + 512]) ** 2).mean(1).sum().item()
            )
        return total / len(self.z)


def _write_log(path: Path, losses: List[float], val_losses: Optional[List[float]] = None) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["epoch", "loss", "heldout_loss"])
    for i, loss in enumerate(losses, 1):
        v = val_losses[i - 1] if val_losses and i <= len(val_losses) else ""
        w.writerow([i, f"{loss:.6f}", f"{v:.6f}" if v != "" else ""])
    atomic_write_text(path, buf.getvalue())
