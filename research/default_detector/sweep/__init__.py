"""The default-detector sweep (issue 23) as a package: `python -m research.default_detector.sweep STEP`."""
