"""dlsr-deploy: DLSR out-of-distribution detection from training to the edge.

Importing the package is light (no torch, no onnxruntime); the heavy parts are
imported inside the functions that need them.
"""

__version__ = "0.1.0"

from dlsr_deploy.errors import (  # noqa: F401
    BackendUnavailable,
    BundleError,
    ConfigError,
    DataError,
    DLSRError,
    InputError,
    ParityError,
    WeightsError,
)
