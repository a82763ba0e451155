"""PyTorch side: backbones, feature extractor, LFDN, training and scoring (needs torch)."""
