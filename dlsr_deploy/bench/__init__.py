"""dlsr-bench: latency / throughput of every available backend against PyTorch eager,
on the same images in one process, with accuracy in the same row."""

from dlsr_deploy.bench.harness import BenchResult, run_bench  # noqa: F401
