"""Command-line entry points. Heavy modules are imported inside each command, so `--help` is
instant and a missing extra says which one to install.

    workflow.py  dlsr-train, dlsr-eval, dlsr-demo
    bundle.py    dlsr-export, dlsr-check, dlsr-inspect, dlsr-keygen, dlsr-build
    runtime.py   dlsr-score, dlsr-serve, dlsr-bench
    score_job.py dlsr-score's work in one process: rows (runtime.scored.ScoredImages), CSV / JSON, report
    common.py    one-line errors (library parameter names shown as this command's flags), shared options
"""

from dlsr_deploy.cli.bundle import build, check, export, inspect, keygen  # noqa: F401
from dlsr_deploy.cli.runtime import bench, score, serve  # noqa: F401
from dlsr_deploy.cli.workflow import demo, evaluate, train  # noqa: F401
