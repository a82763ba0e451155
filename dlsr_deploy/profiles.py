"""Profiles a user picks by budget (issue 32): `dlsr-train --profile fast|balanced|accurate`.

Each profile is the selection rule's choice among the sweep's candidates (one view or several)
whose batch-32 cost is within a bound relative to the package default on the same machine:
fast <= 0.6x, balanced <= 1.0x (the package default), accurate <= 2.5x. The evidence and the
command behind each choice: research/default_detector/README.md, "Profiles".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from dlsr_deploy.config import DEFAULT_BACKBONE, DEFAULT_INPUT_SIZE, ViewConfig
from dlsr_deploy.errors import ConfigError
from dlsr_deploy.names import view_name

# the most a profile may cost, as a multiple of the balanced profile's (the package default's)
# batch-32 cost per image on the same machine
PROFILE_BOUNDS = {"fast": 0.6, "balanced": 1.0, "accurate": 2.5}


@dataclass(frozen=True)
class Profile:
    """A primary view (backbone, input size) and the extra views (`lite1@128`, `lite2@160:flip`)."""

    name: str
    backbone: str
    input_size: int
    views: Tuple[str, ...] = ()
    why: str = ""
    # what it costs and buys against balanced, as measured (research/default_detector/results/
    # pareto_profiles.md for the cost, pareto_views.md for the AUROC at 10k training images)
    trade: str = ""

    def view_configs(self) -> Tuple[ViewConfig, ...]:
        """The extra views as ViewConfigs."""
        return tuple(ViewConfig.parse(v) for v in self.views)

    @property
    def summary(self) -> str:
        """'lite2@160 + lite2@160:flip + ...' (the primary view first)."""
        return " + ".join([view_name(self.backbone, self.input_size), *self.views])


PROFILES: Dict[str, Profile] = {
    "fast": Profile(
        "fast",
        "efficientnet-lite0",
        128,
        (),
        "the rule's choice within 0.6x the default's batch-32 cost (0.52x measured)",
        "0.5x the cost; Tiny ImageNet AUROC 83.7 against 86.6: no detector within 0.6x matches balanced",
    ),
    "balanced": Profile(
        "balanced",
        DEFAULT_BACKBONE,
        DEFAULT_INPUT_SIZE,
        (),
        "the package default: the rule's choice within 1.0x",
        "Tiny ImageNet AUROC 86.6",
    ),
    "accurate": Profile(
        "accurate",
        "efficientnet-lite2",
        128,
        ("lite1@128:flip",),
        "the rule's choice within 2.5x the default's batch-32 cost (1.10x on ONNX Runtime, 1.32x on OpenVINO measured)",
        "1.1-1.3x the cost; Tiny ImageNet AUROC 87.6 against 86.6",
    ),
}


def get_profile(name: str) -> Profile:
    """The named profile, or a ConfigError listing them."""
    if name not in PROFILES:
        raise ConfigError(f"profile: expected one of {list(PROFILES)}, got {name!r}", param="profile")
    return PROFILES[name]


def profile_of(backbone: str, input_size: int, views: Sequence[ViewConfig]) -> Optional[str]:
    """The profile these settings are (None: a configuration of one's own)."""
    names = tuple(v.name for v in views)
    for p in PROFILES.values():
        if (p.backbone, p.input_size, p.views) == (backbone, input_size, names):
            return p.name
    return None
