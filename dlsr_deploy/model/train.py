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
) -> TrainResult:
    """Train LFDN on z0 vectors [N, D]; writes config.json, model.safetensors (EMA),
    model_first_epoch.safetensors (EMA after epoch 1, for LR), train_log.csv."""
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
        old = ModelConfig.load(cfg_path)
        if old.to_dict() != cfg.to_dict():
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
        log(f"resuming {run_dir} after epoch {start_epoch} (step {step})")

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
        _write_log(run_dir / "train_log.csv", losses)
        done = epoch + 1
        if done % tc.checkpoint_every == 0 or done == tc.epochs:
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
            tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
            if first_state is not None:
                tensors.update({f"first.{k}": v for k, v in first_state.items()})
            tensors.update(_opt_tensors(opt))
            groups = opt.state_dict()["param_groups"]
            ckpt.save(done, tensors, {"epoch": done, "step": step, "losses": losses, "param_groups": groups})
    bar.close()
    _save_tensors(run_dir / FINAL, ema.state_dict())
    if first_state is not None and not (run_dir / FIRST).exists():
        _save_tensors(run_dir / FIRST, first_state)
    return TrainResult(run_dir, tc.epochs, losses, time.time() - t0)


def _write_log(path: Path, losses: List[float]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["epoch", "loss"])
    for i, l in enumerate(losses, 1):
        w.writerow([i, f"{l:.6f}"])
    atomic_write_text(path, buf.getvalue())
