"""The bundle contract: read, validate, verify, build and describe manifest.json (stdlib + numpy only).

A bundle is a folder with manifest.json and the files it lists. Loading verifies every file's
sha256 and the manifest's own digest, and refuses file names that leave the folder.

    model.py     the typed view (`Manifest`, `Threshold`, `safe_join`)
    check.py     read_manifest, validate, digest, file hashes (+ the signature via signing.py)
    build.py     build_manifest, write_manifest and the prose constants they record
    describe.py  what dlsr-inspect prints
"""

from dlsr_deploy.manifest.build import (  # noqa: F401
    PRECISION_HOW,
    BundleFacts,
    build_manifest,
    write_manifest,
)
from dlsr_deploy.manifest.check import (  # noqa: F401
    content_digest,
    read_manifest,
    validate,
    verify_digest,
    verify_files,
)
from dlsr_deploy.manifest.describe import describe  # noqa: F401
from dlsr_deploy.manifest.model import (  # noqa: F401
    DEFAULT_PROFILE,
    REQUIRED,
    SCHEMA_VERSION,
    Manifest,
    Threshold,
    safe_join,
)
from dlsr_deploy.names import SCORE_PREFIX, output_name, score_of  # noqa: F401
