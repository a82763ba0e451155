"""What every command shares: one-line errors (with the library's parameter names turned into
this command's flags), option groups, small parsers."""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import shlex
import sys
from pathlib import Path

import click

from dlsr_deploy.errors import DLSRError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
MISSING_EXTRAS = {
    "torch": "train",
    "onnx": "train",
    "onnxruntime": "cpu",
    "tensorrt": "trt",
    "sklearn": "demo",
    "skimage": "demo",
    "safetensors": "train",
    "matplotlib": "train",
    "pyarrow": "ray",
    "ray": "ray",
}


def flag_for(param: str) -> str:
    """The current command's flag for a library parameter name ('headline' -> '--headline'), or the
    name itself when the command has no such option."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return param
    for p in ctx.command.params:
        if p.name == param and isinstance(p, click.Option):
            return max(p.opts, key=len)
        if p.name == param and isinstance(p, click.Argument):
            return p.human_readable_name
    return param


def in_cli_terms(exc: DLSRError) -> str:
    """The error's message with its leading parameter name replaced by the command's flag."""
    msg = str(exc)
    param = getattr(exc, "param", None)
    if param and msg.startswith(param + ":"):
        msg = flag_for(param) + msg[len(param) :]
    elif param and msg.startswith(param + " "):
        msg = flag_for(param) + msg[len(param) :]
    import re

    # other parameters a message names are written `name`: shown as this command's flags
    return re.sub(r"`([a-z_]+)`", lambda m: flag_for(m.group(1)) if flag_for(m.group(1)) != m.group(1) else m.group(0), msg)


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


@contextlib.contextmanager
def command_logging(quiet: bool = False, verbose: bool = False):
    """The package's logger for one command: its messages alone on the command's stderr, at INFO
    (progress and tables), WARNING with --quiet, DEBUG with --verbose; as it was afterwards. Only the
    CLI sets levels and handlers."""
    log = logging.getLogger("dlsr_deploy")
    before = (log.level, log.propagate)
    handler = logging.StreamHandler(sys.stderr)  # the stderr of this invocation (tests swap it)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    try:
        yield log
    finally:
        log.removeHandler(handler)
        log.setLevel(before[0])
        log.propagate = before[1]


def friendly(fn):
    """Turn DLSRError (and a missing optional package) into one line on stderr, exit code 1; set the
    logger's level from --quiet / --verbose first."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with command_logging(bool(kwargs.get("quiet")), bool(kwargs.pop("verbose", False))):
                return fn(*args, **kwargs)
        except DLSRError as exc:
            click.echo(f"error: {in_cli_terms(exc)}", err=True)
            sys.exit(1)
        except ModuleNotFoundError as exc:
            extra = MISSING_EXTRAS.get((exc.name or "").split(".")[0])
            if extra is None:
                raise
            click.echo(
                f"error: the package '{exc.name}' is missing; install it with `pip install 'dlsr-deploy[{extra}]'`",
                err=True,
            )
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as exc:  # a disk that filled or turned read-only late: one line, not a traceback
            if exc.errno not in DISK_ERRNOS:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            click.echo(f"error: {exc.strerror}{where}; nothing was left half-written (files are renamed into "
                       "place only when complete)", err=True)  # fmt: skip
            sys.exit(1)

    return wrapper


def command_line() -> str:
    """The command as the user typed it (recorded in reports)."""
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name] + sys.argv[1:])


def fields(cls, options: dict) -> dict:
    """The options that are fields of the dataclass `cls` (click names them alike)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in options.items() if k in names}


def apply(opts):
    """Decorate a command with a list of click options, in order."""

    def deco(fn):
        for o in reversed(opts):
            fn = o(fn)
        return fn

    return deco


def parse_ood(values):
    """[(name, source)] from PATH or NAME=PATH values (a PATH that exists wins over a '=' in it)."""
    out = []
    for v in values:
        if "=" in v and not Path(v).exists():
            name, src = v.split("=", 1)
        else:
            name, src = Path(v.rsplit("#", 1)[0]).stem if not v.startswith("demo:") else v, v
        out.append((name, src))
    return out


class BackendChoice(click.Choice):
    """--backend's choices, read from the registry when the command runs (a backend registered by
    an application or plugin after import is a valid choice)."""

    def __init__(self):
        super().__init__(["auto"])

    @property
    def choices(self):
        from dlsr_deploy.registry import backend_names

        return ["auto", *backend_names()]

    @choices.setter
    def choices(self, value):  # click's __init__ assigns it; the registry is the source
        pass


def backend_option(help_extra: str = ""):
    """--backend with the registry's names as choices and auto's behaviour as help."""
    from dlsr_deploy.registry import auto_help

    return click.option(
        "--backend",
        type=BackendChoice(),
        default="auto",
        show_default=True,
        help=(help_extra + " " if help_extra else "") + auto_help() + ".",
    )


def scores_option():
    """--scores: which scores to compute (pay for what you read)."""
    return click.option(
        "--scores",
        default="headline",
        show_default=True,
        help="Which scores to compute and write: 'headline' (the calibrated decision; only the graphs it needs run, "
        "e.g. no denoiser for a density headline), 'all', or names separated by commas (mfsim,maha_lw).",
    )


def parse_scores(value: str):
    """'headline' / 'all' / 'a,b' -> what Detector.resolve_scores takes."""
    value = "headline" if value is None else value.strip()
    if value in ("headline", "all"):
        return value
    names = [s.strip() for s in value.split(",") if s.strip()]
    if not names:
        raise click.BadParameter(f"expected 'headline', 'all' or score names, got {value!r}", param_hint="--scores")
    return names


def trusted_key_option():
    """--trusted-key (repeatable): the bundle must be signed by one of these keys; without it,
    $DLSR_TRUSTED_KEYS (when set) makes the same demand."""
    return click.option(
        "--trusted-key",
        "trusted_keys",
        multiple=True,
        type=click.Path(dir_okay=False, exists=True),
        help="Ed25519 public key (PEM; a file may hold several); the bundle must be signed by one of them "
        "(repeatable). Without it, $DLSR_TRUSTED_KEYS (key paths separated by ':') makes signatures mandatory: "
        "set it once in an edge image.",
    )


def keys_from(trusted_keys):
    """--trusted-key values -> key bytes, or $DLSR_TRUSTED_KEYS's, or None (no signature required)."""
    from dlsr_deploy.signing import resolve_trusted_keys

    return resolve_trusted_keys(list(trusted_keys) or None)
