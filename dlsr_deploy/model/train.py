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
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from dlsr_deploy.config import ModelConfig
from dlsr_deploy.errors import ConfigError, WeightsError
from dlsr_deploy.io import atomic_write_text
from dlsr_deploy.model.denoiser import LFDN
from dlsr_deploy.schedule import alphas_cumprod

FINAL = "model.safetensors"
FIRST = "model_first_epoch.safetensors"


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
    cfg = ModelConfig.load(run_dir / "config.json")
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
        self.dir = run_dir / "checkpoints"

    def latest(self) -> Optional[Path]:
        ptr = self.dir / "latest.json"
        if not ptr.exists():
            return None
        name = json.loads(ptr.read_text())["dir"]
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


def train_denoiser(
    z: np.ndarray,
    cfg: ModelConfig,
    run_dir: Path,
    resume: bool = False,
    progress: bool = True,
    log=print,
    val_z: Optional[np.ndarray] = None,
) -> TrainResult:
    """Train LFDN on z0 vectors [N, D]; writes config.json, model.safetensors (EMA),
    model_first_epoch.safetensors (EMA after epoch 1, for LR), train_log.csv.

    With held-out ID vectors `val_z`, the EMA's denoising loss on them (fixed t and noise)
    is logged every epoch; with `cfg.train.patience` the run stops after that many epochs
    without improvement and model.safetensors holds the EMA of the best epoch."""
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    tc = cfg.train
    z = np.ascontiguousarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] != cfg.denoiser.dim:
        raise ConfigError(f"training features: expected [N, {cfg.denoiser.dim}], got {list(z.shape)}")
    if len(z) < 2:
        raise ConfigError(f"training needs at least 2 images, got {len(z)}")
    if not np.all(np.isfinite(z)):
        raise ConfigError("training features contain NaN or infinite values")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if resume and cfg_path.exists():
        # epochs, patience and checkpoint interval may change on resume (they do not alter the
        # epochs already run): a run can be extended, or ended at its last checkpoint
        def core(c):
            d = c.to_dict()
            for k in ("epochs", "patience", "checkpoint_every"):
                d["train"].pop(k)
            return d

        old = ModelConfig.load(cfg_path)
        if core(old) != core(cfg):
            raise ConfigError(f"--resume: {cfg_path} was written with a different configuration; use a new --out")
    cfg.save(cfg_path)

    torch.manual_seed(tc.seed)
    model = LFDN(cfg.denoiser)
    ema = LFDN(cfg.denoiser)
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    ab = torch.from_numpy(alphas_cumprod(cfg.schedule)).float()
    sqrt_ab, sqrt_1m = ab.sqrt(), (1 - ab).sqrt()
    ckpt = _Checkpointer(run_dir)
    start_epoch, step, losses = 0, 0, []
    first_state = None
    val_losses: List[float] = []
    best_val, best_epoch, best_state = float("inf"), 0, None
    val = _ValSet(val_z, cfg) if val_z is not None and len(val_z) else None
    if tc.patience is not None and val is None:
        raise ConfigError("early stopping (patience) needs held-out ID images: train with --holdout > 0")

    latest = ckpt.latest() if resume else None
    if resume and latest is None and (run_dir / FINAL).exists():
        log(f"{run_dir}: training already finished; nothing to resume")
    if latest is not None:
        meta = json.loads((latest / "meta.json").read_text())
        tensors = load_tensors(latest / "state.safetensors")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        first = {k[6:]: v for k, v in tensors.items() if k.startswith("first.")}
        first_state = first or None
        _load_opt(opt, tensors, meta["param_groups"])
        start_epoch, step, losses = meta["epoch"], meta["step"], meta["losses"]
        val_losses, best_val, best_epoch = meta.get("val_losses", []), meta.get("best_val", float("inf")), meta.get("best_epoch", 0)
        best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        log(f"resuming {run_dir} after epoch {start_epoch} (step {step})")
        if meta.get("stopped"):
            log(f"{run_dir}: the run had stopped early at epoch {start_epoch}; nothing to resume")
            start_epoch = tc.epochs

    kill_at = int(os.environ.get("DLSR_TEST_KILL_AT_STEP", "-1"))  # test hook: SIGKILL mid-epoch
    n = len(z)
    zt = torch.from_numpy(z)
    steps_per_epoch = (n + tc.batch_size - 1) // tc.batch_size
    t0 = time.time()
    bar = tqdm(total=tc.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc="train", unit="step", disable=not progress)
    for epoch in range(start_epoch, tc.epochs):
        g = torch.Generator().manual_seed(tc.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g)
        model.train()
        total, count = 0.0, 0
        for i in range(0, n, tc.batch_size):
            x0 = zt[perm[i : i + tc.batch_size]]
            b = len(x0)
            t = torch.randint(0, cfg.schedule.timesteps, (b,), generator=g)
            eps = torch.randn(b, x0.shape[1], generator=g)
            xt = sqrt_ab[t, None] * x0 + sqrt_1m[t, None] * eps
            loss = ((model(xt, t) - x0) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            decay = min(tc.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
            total += loss.item() * b
            count += b
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        losses.append(total / count)
        if epoch == 0:
            first_state = {k: v.clone() for k, v in ema.state_dict().items()}
            _save_tensors(run_dir / FIRST, first_state)
        done = epoch + 1
        stop = False
        if val is not None:
            v = val.loss(ema)
            val_losses.append(v)
            bar.set_postfix(epoch=done, loss=f"{losses[-1]:.4f}", val=f"{v:.4f}", best=best_epoch)
            if v < best_val:
                best_val, best_epoch = v, done
                best_state = {k: t.clone() for k, t in ema.state_dict().items()}
                _save_tensors(run_dir / FINAL, best_state)
            elif tc.patience is not None and done - best_epoch >= tc.patience:
                stop = True
        _write_log(run_dir / "train_log.csv", losses, val_losses)
        if done % tc.checkpoint_every == 0 or done == tc.epochs or stop:
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
            tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
            if first_state is not None:
                tensors.update({f"first.{k}": v for k, v in first_state.items()})
            if best_state is not None:
                tensors.update({f"best.{k}": v for k, v in best_state.items()})
            tensors.update(_opt_tensors(opt))
            groups = opt.state_dict()["param_groups"]
            ckpt.save(done, tensors, {"epoch": done, "step": step, "losses": losses, "param_groups": groups,
                                      "val_losses": val_losses, "best_val": best_val, "best_epoch": best_epoch, "stopped": stop})
        if stop:
            log(f"early stop after epoch {done}: held-out loss has not improved for {tc.patience} epochs (best {best_val:.4f} at epoch {best_epoch})")
            break
    bar.close()
    # the best held-out epoch's EMA (restored from the checkpoint after a resume), else the last EMA
    _save_tensors(run_dir / FINAL, best_state if val is not None and best_state is not None else ema.state_dict())
    if first_state is not None and not (run_dir / FIRST).exists():
        _save_tensors(run_dir / FIRST, first_state)
    return TrainResult(run_dir, len(losses), losses, time.time() - t0, val_losses, best_epoch if val is not None else len(losses))


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
            total += ((model(self.zt[i : i + 512], self.t[i : i + 512]) - self.z[i : i + 512]) ** 2).mean(1).sum().item()
        return total / len(self.z)


def _write_log(path: Path, losses: List[float], val_losses: Optional[List[float]] = None) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["epoch", "loss", "heldout_loss"])
    for i, l in enumerate(losses, 1):
        v = val_losses[i - 1] if val_losses and i <= len(val_losses) else ""
        w.writerow([i, f"{l:.6f}", f"{v:.6f}" if v != "" else ""])
    atomic_write_text(path, buf.getvalue())
