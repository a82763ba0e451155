"""One logger for the package: `logging.getLogger("dlsr_deploy")`.

Library modules report progress with `info` and what a user should see with `warning`; they never
write to stderr themselves and take no `quiet` parameter. Only `cli/` turns `--quiet` /
`--verbose` into levels and attaches a handler (stderr, the message alone). Progress bars show
when INFO is on (`progress()`), so a Python caller gets none unless it configures logging, e.g.
`logging.basicConfig(level=logging.INFO)`; warnings reach stderr either way (Python's last-resort
handler)."""

import logging

LOG = logging.getLogger("dlsr_deploy")


def info(*parts) -> None:
    """A progress message (shown by the CLI unless --quiet)."""
    LOG.info(" ".join(str(p) for p in parts))


def warning(message: str) -> None:
    """Something the user should see even with --quiet."""
    LOG.warning(message)


def progress() -> bool:
    """Whether progress bars should show: INFO is enabled on the package's logger."""
    return LOG.isEnabledFor(logging.INFO)
