"""research/dlsr_adds: see its README.md."""
