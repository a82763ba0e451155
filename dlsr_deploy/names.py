"""Names (stdlib only): graph outputs of scores (`score_<name>`, and back) and feature views (`lite2@160:flip`)."""

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


def view_name(backbone: str, input_size, flip: bool = False) -> str:
    """A feature view as users write it: 'lite2@160', 'lite1@128:flip' (efficientnet- dropped)."""
    return f"{str(backbone).replace('efficientnet-', '')}@{input_size}" + (":flip" if flip else "")
