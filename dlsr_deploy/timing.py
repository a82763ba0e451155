"""Timing, in one place (stdlib + numpy): warm-up, timed loops, interleaved rounds, percentiles.

Used by `auto`'s backend choice, `dlsr-bench` and every benchmark script, so a "p50" means the
same thing everywhere: wall time of one call, after warm-up, from `time.perf_counter()`.

- `measure(call, ...)` times one callable: a warm-up (at least one call, then until
  `warmup_s` has passed), then calls until both `min_duration` seconds and `min_iters` calls
  are reached (capped at `max_iters`). It returns the per-call seconds and, when the call
  returns `(result, {stage: seconds})`, the median of each stage.
- `interleaved(calls, rounds, ...)` times several callables in turns: every round gives each
  call 1/rounds of the warm-up and duration, so a machine that slows down during the run slows
  all of them alike; ratios are read per round as well as pooled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np


@dataclass
class Timing:
    """Per-call wall times (seconds) and the median per-stage seconds when the call reports them."""

    seconds: np.ndarray
    stages: Dict[str, float] = field(default_factory=dict)

    def percentile_ms(self, q: float) -> float:
        """The q-th percentile of the call time, in milliseconds."""
        return float(np.percentile(self.seconds, q) * 1e3)

    @property
    def p50_ms(self) -> float:
        """Median call time in milliseconds."""
        return self.percentile_ms(50)

    def summary(self, batch: int = 1) -> dict:
        """p50 / p90 / p95 / p99 in ms, images per second at `batch` images per call, iterations."""
        p50 = float(np.median(self.seconds))
        return {
            **{f"p{q}_ms": self.percentile_ms(q) for q in (50, 90, 95, 99)},
            "images_per_s": batch / p50 if p50 > 0 else float("inf"),
            "iters": int(len(self.seconds)),
        }


def _split(ret) -> Optional[Dict[str, float]]:
    if isinstance(ret, tuple) and len(ret) == 2 and isinstance(ret[1], dict):
        return ret[1]
    return None


def measure(
    call: Callable[[], object],
    warmup_s: float = 0.0,
    min_duration: float = 0.0,
    min_iters: int = 3,
    max_iters: int = 10_000,
) -> Timing:
    """Time `call()` (see the module docstring)."""
    t_end = time.perf_counter() + warmup_s
    call()
    while time.perf_counter() < t_end:
        call()
    lat: List[float] = []
    stages: List[Dict[str, float]] = []
    t0 = time.perf_counter()
    while (time.perf_counter() - t0 < min_duration or len(lat) < min_iters) and len(lat) < max_iters:
        t = time.perf_counter()
        ret = call()
        lat.append(time.perf_counter() - t)
        st = _split(ret)
        if st is not None:
            stages.append(st)
    med = {k: float(np.median([s[k] for s in stages])) for k in stages[0]} if stages else {}
    return Timing(np.asarray(lat), med)


def median_seconds(call: Callable[[], object], reps: int = 3) -> float:
    """Median wall time of `reps` calls after one warm-up call (quick comparisons)."""
    return float(np.median(measure(call, min_iters=reps, max_iters=reps).seconds))


def interleaved(
    calls: Dict[str, Callable[[], object]],
    rounds: int = 3,
    warmup_s: float = 1.0,
    min_duration: float = 3.0,
    min_iters: int = 5,
) -> Dict[str, List[Timing]]:
    """{name: [Timing per round]}: each round times every call in turn for 1/rounds of the
    warm-up and duration (at least one warm-up call and ceil(min_iters / rounds) calls)."""
    out: Dict[str, List[Timing]] = {name: [] for name in calls}
    per_iters = max(1, -(-min_iters // rounds))
    for _ in range(rounds):
        for name, call in calls.items():
            out[name].append(measure(call, warmup_s / rounds, min_duration / rounds, per_iters))
    return out


def pooled(timings: List[Timing]) -> Timing:
    """Several rounds' timings as one (stages: the median over rounds)."""
    stages = {k: float(np.median([t.stages[k] for t in timings])) for k in (timings[0].stages if timings else {})}
    return Timing(np.concatenate([t.seconds for t in timings]), stages)
