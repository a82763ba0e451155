"""Graph output names of scores (stdlib only): `score_<name>`, and back."""

from __future__ import annotations

SCORE_PREFIX = "score_"


def output_name(score: str) -> str:
    """Graph output name of a score."""
    return SCORE_PREFIX + score


def score_of(output: str) -> str:
    """Score name of a graph output (`score_<name>`)."""
    from dlsr_deploy.errors import BundleError

    if not output.startswith(SCORE_PREFIX):
        raise BundleError(f"graph output {output!r} is not a score (expected {SCORE_PREFIX}<name>)")
    return output[len(SCORE_PREFIX) :]
