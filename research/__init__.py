"""Studies that chose something; each folder answers one question (see research/README.md)."""
