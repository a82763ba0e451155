"""Upkeep scripts (python -m tools.NAME): not part of the package, not run by the tests."""
