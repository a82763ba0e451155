"""Error hierarchy. Every message says what was expected, what came, and how to fix it."""


class DLSRError(Exception):
    """Base class; the CLI prints these as one line and exits with code 1.

    param: the library parameter the error is about (e.g. "headline"), when there is one. Messages
    name the parameter the caller passed (`headline: expected ...`); the CLI rewrites that name to
    the command's flag (`--headline: expected ...`), so each side reads its own language."""

    def __init__(self, message: str = "", *, param: str = None):
        super().__init__(message)
        self.param = param


class ConfigError(DLSRError, ValueError):
    """A configuration value or file is invalid."""


class DataError(DLSRError, ValueError):
    """A dataset could not be read or has the wrong content."""


class InputError(DLSRError, ValueError):
    """An input array given to a model or detector has the wrong shape, dtype or values."""


class WeightsError(DLSRError):
    """Backbone or checkpoint weights are missing, corrupt or do not match."""


class TrainingError(DLSRError):
    """Training cannot go on (e.g. the loss became NaN or infinite)."""


class BundleError(DLSRError):
    """An exported bundle is missing files, tampered with or inconsistent."""


class BackendUnavailable(DLSRError):
    """A requested backend (TensorRT, ORT-CUDA, ...) is not installed or has no device."""


class ParityError(DLSRError):
    """An exported graph disagrees with the PyTorch reference beyond tolerance."""


def missing_extra(package: str, extra: str) -> DLSRError:
    """The error for an optional package that is not installed, naming the extra that brings it."""
    return BackendUnavailable(
        f"the Python package '{package}' is not installed; install it with `pip install 'dlsr-deploy[{extra}]'`"
    )
