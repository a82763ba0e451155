"""EfficientNet (B-series and Lite) with the lukemelas / efficientnet-lite key format.

Convolutions use *static* TF-"SAME" padding computed for `padding_size` (the network's
native resolution by default), as the official DLSR code and the weight packages do.
Taps are the outputs of the last block at each resolution (strides 2, 4, 8, 16, 32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from dlsr_deploy.errors import WeightsError


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int


# (r, k, s, e, i, o) from efficientnet_builder.py / efficientnet_lite_builder.py
_B0_STAGES = [
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
]


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters = filters * width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


class SameConv2d(nn.Conv2d):
    """Conv2d with TF 'SAME' padding fixed at construction for a given input size."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1, bias=False, image_size=None):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=bias)
        ih = iw = image_size
        oh, ow = math.ceil(ih / stride), math.ceil(iw / stride)
        ph = max((oh - 1) * stride + kernel - ih, 0)
        pw = max((ow - 1) * stride + kernel - iw, 0)
        self.pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)

    def forward(self, x):
        if any(self.pad):
            x = F.pad(x, self.pad)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


class MBConv(nn.Module):
    CONV_BN = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))  # fold_batchnorm

    def __init__(self, cin, cout, kernel, stride, *, expand, se_ratio, act, image_size, bn_eps):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        self.skip = stride == 1 and cin == cout
        self.act = act
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, image_size=image_size)
            self._bn0 = nn.BatchNorm2d(mid, eps=bn_eps, momentum=0.01)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, image_size=image_size)
        self._bn1 = nn.BatchNorm2d(mid, eps=bn_eps, momentum=0.01)
        out_size = math.ceil(image_size / stride)
        self.has_se = se_ratio is not None
        if self.has_se:
            squeezed = max(1, int(cin * se_ratio))
            self._se_reduce = nn.Conv2d(mid, squeezed, 1)
            self._se_expand = nn.Conv2d(squeezed, mid, 1)
        self._project_conv = SameConv2d(mid, cout, 1, image_size=out_size)
        self._bn2 = nn.BatchNorm2d(cout, eps=bn_eps, momentum=0.01)

    def forward(self, inputs):
        x = inputs
        if self.expand:
            x = self.act(self._bn0(self._expand_conv(x)))
        x = self.act(self._bn1(self._depthwise_conv(x)))
        if self.has_se:
            s = x.mean((2, 3), keepdim=True)
            s = self._se_expand(self.act(self._se_reduce(s)))
            x = torch.sigmoid(s) * x
        x = self._bn2(self._project_conv(x))
        if self.skip:
            x = x + inputs
        return x


class EfficientNet(nn.Module):
    CONV_BN = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))  # fold_batchnorm

    def __init__(
        self,
        width: float,
        depth: float,
        native_size: int,
        lite: bool,
        padding_size: Optional[int] = None,
        num_classes: int = 1000,
    ):
        super().__init__()
        size = padding_size or native_size
        self.native_size = native_size
        bn_eps = 1e-3
        act = nn.ReLU6() if lite else nn.SiLU()
        se_ratio = None if lite else 0.25
        stem = 32 if lite else _round_filters(32, width)
        self._conv_stem = SameConv2d(3, stem, 3, 2, image_size=size)
        self._bn0 = nn.BatchNorm2d(stem, eps=bn_eps, momentum=0.01)
        self.act = act
        size = math.ceil(size / 2)
        blocks: List[nn.Module] = []
        strides: List[int] = []
        stride_total = 2
        for i, st in enumerate(_B0_STAGES):
            cin = stem if i == 0 else _round_filters(st.cin, width)
            cout = _round_filters(st.cout, width)
            fixed = lite and (i == 0 or i == len(_B0_STAGES) - 1)
            reps = st.repeats if fixed else int(math.ceil(depth * st.repeats))
            for r in range(reps):
                s = st.stride if r == 0 else 1
                blocks.append(
                    MBConv(
                        cin if r == 0 else cout, cout, st.kernel, s,
                        expand=st.expand, se_ratio=se_ratio, act=act, image_size=size, bn_eps=bn_eps,
                    )  # fmt: skip
                )
                size = math.ceil(size / s)
                stride_total *= s
                strides.append(stride_total)
        self._blocks = nn.ModuleList(blocks)
        # the last block at each resolution
        self.tap_indices = [max(i for i, s in enumerate(strides) if s == target) for target in (2, 4, 8, 16, 32)]
        self.tap_strides = [2, 4, 8, 16, 32]
        self.tap_channels = [blocks[i]._bn2.num_features for i in self.tap_indices]
        head = 1280 if lite else _round_filters(1280, width)
        self._conv_head = SameConv2d(cout, head, 1, image_size=size)
        self._bn1 = nn.BatchNorm2d(head, eps=bn_eps, momentum=0.01)
        self._fc = nn.Linear(head, num_classes)

    @classmethod
    def lite0(cls, padding_size: Optional[int] = None) -> "EfficientNet":
        return cls(1.0, 1.0, 224, lite=True, padding_size=padding_size)

    @classmethod
    def lite1(cls, padding_size: Optional[int] = None) -> "EfficientNet":
        return cls(1.0, 1.1, 240, lite=True, padding_size=padding_size)

    @classmethod
    def lite2(cls, padding_size: Optional[int] = None) -> "EfficientNet":
        return cls(1.1, 1.2, 260, lite=True, padding_size=padding_size)

    @classmethod
    def b4(cls, padding_size: Optional[int] = None) -> "EfficientNet":
        return cls(1.4, 1.8, 380, lite=False, padding_size=padding_size)

    def forward_taps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """x: float [B, 3, H, W] (normalised) -> list of 5 tap maps, strides 2..32.
        Blocks after the last tap (and the head) are not run."""
        x = self.act(self._bn0(self._conv_stem(x)))
        taps = []
        last = self.tap_indices[-1]
        wanted = set(self.tap_indices)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in wanted:
                taps.append(x)
            if i == last:
                break
        return taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classification logits (used to check the weights against reference code)."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))

    def load_published(self, state: dict, source: str = "state dict") -> None:
        own = self.state_dict()
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        own_keys = {k for k in own if not k.endswith("num_batches_tracked")}
        missing = sorted(own_keys - set(state))
        unexpected = sorted(set(state) - own_keys)
        if missing or unexpected:
            raise WeightsError(
                f"{source}: key mismatch for {type(self).__name__} (lukemelas format expected); "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
            )
        for k in own_keys:
            if tuple(own[k].shape) != tuple(state[k].shape):
                raise WeightsError(f"{source}: {k} has shape {tuple(state[k].shape)}, expected {tuple(own[k].shape)}")
        self.load_state_dict(state, strict=False)
