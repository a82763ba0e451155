"""research/headline: see its README.md."""
