"""research/precision: see its README.md."""
