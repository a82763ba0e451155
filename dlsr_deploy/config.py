"""Frozen configuration dataclasses with a strict JSON round-trip.

Unknown keys are rejected (a typo in a config file is an error, not a silent default).
The defaults are the method as DESIGN.md section 3 fixes it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Tuple

from dlsr_deploy.errors import ConfigError
from dlsr_deploy.names import view_name

BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "efficientnet-b4", "resnet50")
# the package default, chosen by the sweep (README "The best detector per millisecond",
# research/default_detector/results/pareto.md): EfficientNet-Lite2 at 160 px, LFDN width 2D with 8 blocks, K = 1
DEFAULT_BACKBONE = "efficientnet-lite2"
DEFAULT_INPUT_SIZE = 160
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _from_dict(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - dataclass signature errors
        raise ConfigError(f"{where}: {exc}") from None


class _JsonMixin:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any):
        return _from_dict(cls, data, cls.__name__)


@dataclass(frozen=True)
class FeatureConfig(_JsonMixin):
    """Backbone and the image -> z0 path.

    input_size: images are resized (bilinear) to input_size x input_size.
    native_size: every image (ID or OOD) is first brought to this size, so all sets
        reach the backbone through the same resize (the fair protocol). None keeps
        the source size.
    """

    backbone: str = DEFAULT_BACKBONE
    input_size: int = DEFAULT_INPUT_SIZE
    native_size: Optional[int] = 32
    weights: Optional[str] = None  # path; None = the packaged default (lite0 only)
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    zscore_eps: float = 1e-5

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone: expected one of {list(BACKBONES)}, got {self.backbone!r}")
        if not isinstance(self.input_size, int) or self.input_size < 32:
            raise ConfigError(f"input_size: expected an integer >= 32, got {self.input_size!r}")
        if self.native_size is not None and (not isinstance(self.native_size, int) or self.native_size < 8):
            raise ConfigError(f"native_size: expected an integer >= 8 or null, got {self.native_size!r}")


@dataclass(frozen=True)
class DenoiserConfig(_JsonMixin):
    """LFDN sizes. width None = 2 * D (the paper's rule); blocks 8 by default (the sweep's choice:
    the held-out ID loss of 16 blocks at half the cost), 16 in the paper preset."""

    dim: int = 512
    width: Optional[int] = None
    blocks: int = 8

    def __post_init__(self):
        if self.dim < 2 or self.blocks < 1 or (self.width is not None and self.width < 2):
            raise ConfigError(f"denoiser: dim, width and blocks must be positive, got {self}")

    @property
    def hidden(self) -> int:
        """Residual width: `width`, or 2 * dim when width is None."""
        return self.width if self.width is not None else 2 * self.dim

    @classmethod
    def preset(cls, name: str, dim: int) -> "DenoiserConfig":
        """The 'paper' (width 2D, 16 blocks) or 'small' (width 128, 2 blocks) LFDN size."""
        if name == "paper":
            return cls(dim=dim, width=None, blocks=16)
        if name == "default":
            return cls(dim=dim, width=None, blocks=8)
        if name == "small":
            return cls(dim=dim, width=128, blocks=2)
        raise ConfigError(f"preset: expected 'default', 'paper' or 'small', got {name!r}", param="preset")


@dataclass(frozen=True)
class ScheduleConfig(_JsonMixin):
    """The diffusion schedule: T steps, betas linear in sqrt space between beta_start and beta_end."""

    timesteps: int = 100
    beta_start: float = 0.0015
    beta_end: float = 0.0195


@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """LFDN training on cached z0: optimiser, EMA, seed, checkpoints, early stopping."""

    epochs: int = 150
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-4
    ema_decay: float = 0.9999
    seed: int = 0
    checkpoint_every: int = 5
    # early stopping on the held-out ID images: stop after `patience` epochs without a
    # lower held-out denoising loss; model.safetensors is then the best epoch's EMA
    patience: Optional[int] = None

    def __post_init__(self):
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience: expected >= 1 or null, got {self.patience}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"train: epochs, batch_size and lr must be positive, got {self}")


@dataclass(frozen=True)
class ScoreConfig(_JsonMixin):
    """Test-time reconstruction.

    mode "ddim": noise z0 to t_start with stored noise, K DDIM steps with correct
    coefficients, reconstruction = final x0 prediction.
    mode "paper": the official procedure (eta=1, 3 model calls from t=3, off-by-one
    coefficients, returns the DDIM iterate) so numbers compare with the paper.
    """

    t_start: int = 3
    steps: int = 1  # K = 1: the sweep's held-out ID reconstruction error is lower than K = 2's (README)
    eta: float = 0.0
    noise_seed: int = 0
    n_noise: int = 1
    mode: str = "ddim"
    mfsim_skip_first: bool = False

    def __post_init__(self):
        if self.mode not in ("ddim", "paper"):
            raise ConfigError(f"score mode: expected 'ddim' or 'paper', got {self.mode!r}")
        if self.t_start < 0 or self.steps < 1 or self.steps > self.t_start + 1:
            raise ConfigError(
                f"scoring: expected 1 <= steps <= t_start + 1 and t_start >= 0, got t_start={self.t_start}, "
                f"steps={self.steps}"
            )
        if self.n_noise < 1:
            raise ConfigError(f"n_noise: expected >= 1, got {self.n_noise}")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"eta: expected a value in [0, 1], got {self.eta}")


VIEW_BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")  # packaged weights


@dataclass(frozen=True)
class ViewConfig(_JsonMixin):
    """A second feature view of each image: another backbone and/or input size, or the horizontal
    flip of the image (a test-time view). Each view has its own density head (`head`, fitted on the
    run's training images seen through the view); a detector of several views scores `ensemble`:
    the mean of its views' head scores, each standardised by its held-out ID median / IQR.

    Written `lite1@128` or `lite2@160:flip` (`ViewConfig.parse`). layer_sizes: the view's tap
    channels (filled in by training). Views use the packaged ImageNet weights."""

    backbone: str
    input_size: int
    flip: bool = False
    head: str = "maha_ridge"
    layer_sizes: Tuple[int, ...] = ()

    def __post_init__(self):
        if self.backbone not in VIEW_BACKBONES:
            raise ConfigError(f"view backbone: expected one of {list(VIEW_BACKBONES)}, got {self.backbone!r}")
        if not isinstance(self.input_size, int) or isinstance(self.input_size, bool) or self.input_size < 32:
            raise ConfigError(f"view input_size: expected an integer >= 32, got {self.input_size!r}")
        if not isinstance(self.flip, bool):
            raise ConfigError(f"view flip: expected true or false, got {self.flip!r}")

    @property
    def name(self) -> str:
        """'lite1@128' or 'lite2@160:flip'."""
        return view_name(self.backbone, self.input_size, self.flip)

    @property
    def dim(self) -> int:
        """Length of the view's z0 (0 until training fills layer_sizes)."""
        return int(sum(self.layer_sizes))

    @classmethod
    def parse(cls, text: str) -> "ViewConfig":
        """'lite1@128', 'efficientnet-lite2@160:flip' -> a ViewConfig."""
        point, _, mod = str(text).strip().partition(":")
        bb, at, size = point.partition("@")
        if not at or not size.isdigit() or mod not in ("", "flip"):
            raise ConfigError(
                f"view: expected BACKBONE@SIZE or BACKBONE@SIZE:flip (e.g. lite1@128, lite2@160:flip), got {text!r}",
                param="view",
            )
        bb = bb if bb.startswith("efficientnet-") else f"efficientnet-{bb}"
        return cls(backbone=bb, input_size=int(size), flip=mod == "flip")

    def feature(self, primary: FeatureConfig) -> FeatureConfig:
        """The FeatureConfig of this view (native size, normalisation from the primary view)."""
        same = self.backbone == primary.backbone
        return dataclasses.replace(
            primary, backbone=self.backbone, input_size=self.input_size, weights=primary.weights if same else None
        )


@dataclass(frozen=True)
class ModelConfig(_JsonMixin):
    """Everything needed to rebuild a trained detector (stored as config.json)."""

    feature: FeatureConfig = field(default_factory=FeatureConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    layer_sizes: Tuple[int, ...] = ()
    # extra feature views after the primary one (`feature`): empty for a one-view detector
    views: Tuple[ViewConfig, ...] = ()
    profile: Optional[str] = None  # the dlsr-train --profile this config came from, if any

    def __post_init__(self):
        names = [v.name for v in self.views]
        primary = view_name(self.feature.backbone, self.feature.input_size)
        dup = sorted({n for n in names if names.count(n) > 1 or n == primary})
        if dup:
            raise ConfigError(
                f"views: each view must differ from the others and from the primary view, got {dup} twice"
            )

    @property
    def z0_dim(self) -> int:
        """Length of the bundle's z0: the primary view's (the denoiser's input), then each view's."""
        return int(self.denoiser.dim + sum(v.dim for v in self.views))

    def view_bounds(self) -> List[Tuple[int, int]]:
        """[(start, end)] of each extra view's z0 inside the bundle's z0."""
        out, a = [], self.denoiser.dim
        for v in self.views:
            out.append((a, a + v.dim))
            a += v.dim
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "ModelConfig":
        """Parse a config.json object; unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError(f"model config: expected a JSON object, got {type(data).__name__}")
        parts = {
            "feature": FeatureConfig,
            "denoiser": DenoiserConfig,
            "schedule": ScheduleConfig,
            "train": TrainConfig,
        }
        unknown = sorted(set(data) - set(parts) - {"layer_sizes", "views", "profile"})
        if unknown:
            raise ConfigError(f"model config: unknown key(s) {unknown}")
        kwargs = {k: c.from_dict(data[k]) for k, c in parts.items() if k in data}
        kwargs["layer_sizes"] = tuple(int(x) for x in data.get("layer_sizes", ()))
        views = data.get("views", [])
        if not isinstance(views, (list, tuple)):
            raise ConfigError(f"model config: views: expected a list, got {type(views).__name__}")
        kwargs["views"] = tuple(ViewConfig.from_dict(v) for v in views)
        profile = data.get("profile")
        if profile is not None and not isinstance(profile, str):
            raise ConfigError(f"model config: profile: expected a name or null, got {profile!r}")
        kwargs["profile"] = profile
        return cls(**kwargs)

    def save(self, path: Path) -> None:
        """Write config.json atomically."""
        from dlsr_deploy.io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "ModelConfig":
        """Read and validate config.json."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data)
