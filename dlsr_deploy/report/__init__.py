"""Self-contained HTML reports (numpy and Pillow only: the torch-free runtime writes them too)."""
