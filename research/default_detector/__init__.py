"""research/default_detector: see its README.md."""
