"""research/data_scale: see its README.md."""
