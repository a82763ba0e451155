"""How long and how often each (runner, path, batch) is timed; interleaved rounds (dlsr_deploy.timing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from dlsr_deploy.timing import measure


@dataclass(frozen=True)
class TimingSettings:
    """Warm-up, minimum duration and calls per configuration, split over interleaved rounds."""

    warmup_s: float = 1.0
    min_duration: float = 3.0
    min_iters: int = 5
    rounds: int = 3
    cv_warn: float = 0.15


def time_batch(runners: List, imgs: np.ndarray, ts: TimingSettings, bar):
    """One batch size: `rounds` interleaved rounds, each giving every runner a slice of the
    warm-up and measuring time, so drift of a shared or throttling machine hits the baseline and
    the backends alike -> ({i: [latencies per round]}, {i: [stage medians per round]}, {i: failure})."""
    rounds = max(1, int(ts.rounds))
    lats: Dict[int, List[np.ndarray]] = {i: [] for i in range(len(runners))}
    stages: Dict[int, List[dict]] = {i: [] for i in range(len(runners))}
    failed: Dict[int, str] = {}
    for _ in range(rounds):
        for i, runner in enumerate(runners):
            if i not in failed:
                try:
                    t = measure(
                        lambda r=runner: r.run(imgs),
                        ts.warmup_s / rounds,
                        ts.min_duration / rounds,
                        max(1, -(-ts.min_iters // rounds)),
                    )
                    lats[i].append(t.seconds)
                    stages[i].append(t.stages)
                except Exception as exc:
                    failed[i] = f"{type(exc).__name__}: {exc}"
            bar.update(1)
    return lats, stages, failed
