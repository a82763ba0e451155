"""What a bench run produces: rows (one per runner, scoring path and batch size) and the result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional


@dataclass
class Row:
    backend: str
    precision: str
    batch: int
    steps: int
    status: str = "ok"  # ok | exported-but-failed-parity | failed
    bundle: str = ""
    reason: str = ""
    path: str = "all"  # scoring path: "headline" (the graphs the decision needs) or "all" (every score)
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")
    mean_ms: float = float("nan")
    images_per_s: float = float("nan")
    speedup_vs_eager: float = float("nan")
    speedup_rounds: List[float] = field(default_factory=list)  # the ratio within each timing round
    round_p50_ms: List[float] = field(default_factory=list)
    bound_share: float = float("nan")  # images/s / the compute bound of this bundle's FLOPs
    stages_ms: Dict[str, float] = field(default_factory=dict)
    cv: float = float("nan")
    warning: str = ""
    iters: int = 0
    auroc: Dict[str, float] = field(default_factory=dict)
    max_score_err: float = float("nan")
    raw_ms: List[float] = field(default_factory=list)
    extra: Dict[str, float] = field(default_factory=dict)  # e.g. compile_seconds, compiled_graphs


@dataclass
class BenchResult:
    header: dict
    rows: List[Row]
    unavailable: List[dict]
    compute_bound: dict

    def to_dict(self) -> dict:
        return {
            "header": self.header,
            "rows": [asdict(r) for r in self.rows],
            "unavailable": self.unavailable,
            "compute_bound": self.compute_bound,
        }

    def row(self, backend: str, batch: int, precision: Optional[str] = None, path: Optional[str] = None) -> Row:
        for r in self.rows:
            if (
                r.backend == backend
                and r.batch == batch
                and (precision is None or r.precision == precision)
                and (path is None or r.path == path)
            ):
                return r
        raise KeyError((backend, batch, precision, path))
