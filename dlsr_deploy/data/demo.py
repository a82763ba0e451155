"""The embedded demo set: real images that ship inside PyPI packages (no download).

ID  = scikit-learn's 1,797 handwritten digits (8x8, 0..16), scaled to 0..255, upsampled
      to 32x32 and made RGB.
OOD = 32x32 crops of scikit-image's bundled photographs and textures (brick, grass,
      gravel, astronaut, camera, coffee, chelsea, rocket).
"""

from __future__ import annotations

import numpy as np

from dlsr_deploy.errors import DataError

_OOD_IMAGES = ("brick", "grass", "gravel", "astronaut", "camera", "coffee", "chelsea", "rocket")


def demo_images(which: str, n_ood_per_image: int = 40, seed: int = 0) -> np.ndarray:
    from PIL import Image

    if which == "id":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DataError("the demo set needs scikit-learn: `pip install 'dlsr-deploy[demo]'`") from None
        digits = load_digits().images  # [1797, 8, 8] in 0..16
        u8 = np.clip(digits * (255.0 / 16.0), 0, 255).astype(np.uint8)
        out = np.stack([np.asarray(Image.fromarray(d).resize((32, 32), Image.BILINEAR)) for d in u8])
        return np.repeat(out[..., None], 3, axis=-1)
    if which == "ood":
        try:
            import skimage.data as skd
        except ImportError:
            raise DataError("the demo set needs scikit-image: `pip install 'dlsr-deploy[demo]'`") from None
        rng = np.random.default_rng(seed)
        crops = []
        for name in _OOD_IMAGES:
            img = np.asarray(getattr(skd, name)())
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=-1)
            img = img[..., :3].astype(np.uint8)
            h, w = img.shape[:2]
            for _ in range(n_ood_per_image):
                side = int(rng.integers(48, min(h, w) // 2))
                y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
                crop = Image.fromarray(img[y : y + side, x : x + side]).resize((32, 32), Image.BILINEAR)
                crops.append(np.asarray(crop))
        return np.stack(crops)
    raise DataError(f"demo set: expected 'demo:id' or 'demo:ood', got 'demo:{which}'")
