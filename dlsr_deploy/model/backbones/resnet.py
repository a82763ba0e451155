"""ResNet-50 in the torchvision key format; taps are layer1..layer3 (after the final ReLU)."""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from dlsr_deploy.errors import WeightsError


class Bottleneck(nn.Module):
    CONV_BN = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))  # fold_batchnorm; downsample is a Sequential

    def __init__(self, cin: int, width: int, stride: int, downsample: bool):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if downsample else None
        )

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNet50(nn.Module):
    CONV_BN = (("conv1", "bn1"),)  # fold_batchnorm
    tap_strides = [4, 8, 16]

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.native_size = 224
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (n, width, stride) in enumerate([(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)], start=1):
            blocks = []
            for b in range(n):
                blocks.append(Bottleneck(cin, width, stride if b == 0 else 1, downsample=b == 0))
                cin = width * 4
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(2048, num_classes)
        self.tap_channels = [256, 512, 1024]

    def forward_taps(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        t1 = self.layer1(x)
        t2 = self.layer2(t1)
        t3 = self.layer3(t2)
        return [t1, t2, t3]  # layer4 is not needed and not run

    def forward(self, x):
        x = self.layer4(self.forward_taps(x)[-1])
        return self.fc(x.mean((2, 3)))

    def load_published(self, state: dict, source: str = "state dict") -> None:
        own = {k for k in self.state_dict() if not k.endswith("num_batches_tracked")}
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        if missing or unexpected:
            raise WeightsError(
                f"{source}: key mismatch for ResNet50 (torchvision format expected); "
                f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})"
            )
        self.load_state_dict(state, strict=False)
