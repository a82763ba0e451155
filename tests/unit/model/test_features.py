import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_images

from dlsr_deploy.config import FeatureConfig
from dlsr_deploy.errors import InputError
from dlsr_deploy.model.features import build_extractor, extract_features, zscore_layers


def test_zscore_is_per_layer_unbiased():
    f = torch.randn(3, 10, dtype=torch.float64)
    z = zscore_layers(f, [4, 6], 1e-5)
    for a, b in [(0, 4), (4, 10)]:
        x = f[:, a:b]
        expect = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True, unbiased=True) + 1e-5)
        torch.testing.assert_close(z[:, a:b], expect)


def test_extractor_matches_manual_pipeline():
    cfg = FeatureConfig(backbone="efficientnet-lite0", input_size=64)
    ext = build_extractor(cfg)
    imgs = tiny_images(2)
    with torch.no_grad():
        z = ext(torch.from_numpy(imgs))
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        x = (x - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
        taps = ext.backbone.forward_taps(x)
        grid = taps[3].shape[-2:]
        f = torch.cat([F.interpolate(t, size=grid, mode="bilinear", align_corners=True).mean((2, 3)) for t in taps], 1)
        expect = zscore_layers(f, [16, 24, 40, 112, 320], 1e-5)
    assert z.shape == (2, 512)
    torch.testing.assert_close(z, expect, rtol=1e-4, atol=1e-4)


def test_feature_cache_hits(tmp_path):
    cfg = FeatureConfig(backbone="efficientnet-lite0", input_size=64)
    imgs = tiny_images(3)
    a = extract_features(imgs, cfg, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    np.save(files[0], a + 1)  # a hit returns the cached array
    b = extract_features(imgs, cfg, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(b, a + 1)
    c = extract_features(imgs[:2], cfg, cache_dir=tmp_path, progress=False)  # new content, new key
    assert len(list(tmp_path.glob("*.npy"))) == 2 and c.shape == (2, 512)


@pytest.mark.parametrize(
    "bad,msg",
    [
        (np.zeros((2, 32, 32), np.uint8), "shape"),
        (np.zeros((2, 32, 32, 3), np.float32), "dtype uint8"),
        (np.zeros((0, 32, 32, 3), np.uint8), "empty"),
    ],
)
def test_extract_rejects_bad_input(bad, msg):
    with pytest.raises(InputError, match=msg):
        extract_features(bad, FeatureConfig(backbone="efficientnet-lite0", input_size=64), progress=False)
