"""One logger (issue 30): library code logs to `dlsr_deploy`, the CLI alone sets levels and a handler."""

import logging

from dlsr_deploy.cli.common import command_logging
from dlsr_deploy.log import LOG, info, progress, warning


def test_the_cli_sets_levels_for_one_command_and_restores_them(capsys):
    before = (LOG.level, LOG.propagate, list(LOG.handlers))
    with command_logging():
        info("step 1")
        assert progress()
    with command_logging(quiet=True):
        info("hidden")
        warning("warning: shown")
        assert not progress()
    with command_logging(verbose=True):
        LOG.debug("details")
    err = capsys.readouterr().err
    assert "step 1" in err and "hidden" not in err and "warning: shown" in err and "details" in err
    assert (LOG.level, LOG.propagate, list(LOG.handlers)) == before


def test_a_library_caller_gets_warnings_not_progress(caplog):
    with caplog.at_level(logging.WARNING, logger="dlsr_deploy"):
        info("progress")
        warning("warning: something")
    assert "something" in caplog.text and "progress" not in caplog.text
