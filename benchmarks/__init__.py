"""Runtime-measurement suites of the shipped runtime (`python -m benchmarks --list`).

Each suite measures what a user of `dlsr_deploy.runtime` gets on this machine (speed, memory,
footprint, serving load) and writes its result files into `benchmarks/results/`; README.md names
every file. Studies that chose something live in `research/`, platform checks in
`tests/platform/`, upkeep scripts in `tools/`. The package never imports this tree."""
