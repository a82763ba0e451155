"""`GET /metrics` of dlsr-serve: the Prometheus text exposition format (version 0.0.4), written
here from plain counters so that the counts of every replica can live in one place.

Metrics (each labelled with the bundle's name and precision):
- `dlsr_requests_total{path, status}`: every request answered, refusals included (413, 421, ...);
- `dlsr_request_seconds`: histogram of the time from the request to its answer (POST /score);
- `dlsr_batch_images`: histogram of the images per backend call (how well batching works);
- `dlsr_images_scored_total`, `dlsr_images_flagged_ood_total`, and `dlsr_flagged_ood_ratio`
  (their ratio, a gauge);
- `dlsr_bundle_info{backend, score_name}`: 1.

With several replicas the counts are kept by one Ray actor (`build_app` makes it), so a scrape
sees the whole service, whichever replica answers it.
"""

from __future__ import annotations

import bisect
from typing import Dict, Sequence, Tuple

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PATHS = ("/", "/score", "/metrics", "/healthz", "/info", "/stats")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(d: Dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in d.items()) + "}" if d else ""


def _num(x: float) -> str:
    x = float(x)
    if x == float("inf"):
        return "+Inf"
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


class Histogram:
    """A Prometheus histogram: cumulative buckets, sum and count."""

    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last: over the largest bound (+Inf only)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        """Count one value."""
        self.counts[bisect.bisect_left(self.buckets, v)] += 1
        self.sum += v
        self.count += 1

    def lines(self, name: str, labels: Dict[str, str]) -> list:
        """Its exposition lines."""
        out, cum = [], 0
        for b, c in zip(self.buckets + (float("inf"),), self.counts):
            cum += c
            out.append(f"{name}_bucket{_labels({**labels, 'le': _num(b)})} {cum}")
        out.append(f"{name}_sum{_labels(labels)} {_num(self.sum)}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class ServiceMetrics:
    """The counts behind /metrics; `render()` is the exposition text."""

    def __init__(self, bundle: str, precision: str, backend: str = "", score_name: str = ""):
        self.const = {"bundle": bundle, "precision": precision}
        self.info = {"backend": backend, "score_name": score_name}
        self.requests: Dict[Tuple[str, int], int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batches = Histogram(BATCH_BUCKETS)
        self.scored = 0
        self.flagged = 0

    def request(self, path: str, status: int, seconds: float) -> None:
        """One answered request (any path; unknown paths count as 'other')."""
        key = (path if path in PATHS else "other", int(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        if key[0] == "/score":
            self.latency.observe(max(0.0, float(seconds)))

    def batch(self, n_images: int, n_flagged: int) -> None:
        """One backend call of n_images, n_flagged of them over the threshold."""
        self.batches.observe(int(n_images))
        self.scored += int(n_images)
        self.flagged += int(n_flagged)

    def render(self) -> str:
        """The exposition text of every metric."""
        c = self.const
        out = [
            "# HELP dlsr_requests_total Requests answered, by path and HTTP status (refusals included).",
            "# TYPE dlsr_requests_total counter",
        ]
        for (path, status), n in sorted(self.requests.items()):
            out.append(f"dlsr_requests_total{_labels({**c, 'path': path, 'status': str(status)})} {n}")
        out += [
            "# HELP dlsr_request_seconds Time from a POST /score request to its answer.",
            "# TYPE dlsr_request_seconds histogram",
            *self.latency.lines("dlsr_request_seconds", c),
        ]
        out += [
            "# HELP dlsr_batch_images Images per backend call.",
            "# TYPE dlsr_batch_images histogram",
            *self.batches.lines("dlsr_batch_images", c),
        ]
        out += [
            "# HELP dlsr_images_scored_total Images scored.",
            "# TYPE dlsr_images_scored_total counter",
            f"dlsr_images_scored_total{_labels(c)} {self.scored}",
            "# HELP dlsr_images_flagged_ood_total Images over the threshold (flagged OOD).",
            "# TYPE dlsr_images_flagged_ood_total counter",
            f"dlsr_images_flagged_ood_total{_labels(c)} {self.flagged}",
            "# HELP dlsr_flagged_ood_ratio Share of the scored images flagged OOD (0 before any).",
            "# TYPE dlsr_flagged_ood_ratio gauge",
            f"dlsr_flagged_ood_ratio{_labels(c)} {_num(self.flagged / self.scored if self.scored else 0.0)}",
            "# HELP dlsr_bundle_info The bundle this service scores with.",
            "# TYPE dlsr_bundle_info gauge",
            f"dlsr_bundle_info{_labels({**c, **self.info})} 1",
        ]
        return "\n".join(out) + "\n"


class MetricsStore:
    """The counts of every replica in one Ray actor (made with `ray.remote(MetricsStore)`)."""

    def __init__(self, *args, **kwargs):
        self.m = ServiceMetrics(*args, **kwargs)

    def request(self, path: str, status: int, seconds: float) -> None:
        """As ServiceMetrics.request."""
        self.m.request(path, status, seconds)

    def batch(self, n_images: int, n_flagged: int) -> None:
        """As ServiceMetrics.batch."""
        self.m.batch(n_images, n_flagged)

    def render(self) -> str:
        """As ServiceMetrics.render."""
        return self.m.render()


class LocalMetrics:
    """The counts in this process (one ScoreService, or a test)."""

    def __init__(self, metrics: ServiceMetrics):
        self.m = metrics

    def request(self, path: str, status: int, seconds: float) -> None:
        """As ServiceMetrics.request."""
        self.m.request(path, status, seconds)

    def batch(self, n_images: int, n_flagged: int) -> None:
        """As ServiceMetrics.batch."""
        self.m.batch(n_images, n_flagged)

    async def render(self) -> str:
        """As ServiceMetrics.render."""
        return self.m.render()


class ActorMetrics(LocalMetrics):
    """The counts in a MetricsStore actor: updates are sent without waiting (ordered per replica)."""

    def __init__(self, handle):
        self.h = handle

    def request(self, path: str, status: int, seconds: float) -> None:
        """As ServiceMetrics.request."""
        self.h.request.remote(path, status, seconds)

    def batch(self, n_images: int, n_flagged: int) -> None:
        """As ServiceMetrics.batch."""
        self.h.batch.remote(n_images, n_flagged)

    async def render(self) -> str:
        """As ServiceMetrics.render."""
        return await self.h.render.remote()
