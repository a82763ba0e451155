import pickle

import numpy as np
import pytest
from conftest import SHARED_DATA, tiny_images
from PIL import Image

from dlsr_deploy.data import load_images
from dlsr_deploy.errors import DataError


def test_npz_roundtrip(tmp_path):
    imgs = tiny_images(4)
    np.savez(tmp_path / "a.npz", images=imgs)
    s = load_images(str(tmp_path / "a.npz"))
    np.testing.assert_array_equal(s.images, imgs)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "noimg.npz", x=tiny_images(2))
    with pytest.raises(DataError, match="'images'"):
        load_images(str(tmp_path / "noimg.npz"))
    np.savez(tmp_path / "float.npz", images=tiny_images(2).astype(np.float32))
    with pytest.raises(DataError, match="uint8"):
        load_images(str(tmp_path / "float.npz"))
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="empty"):
        load_images(str(tmp_path / "empty.npz"))
    np.savez(tmp_path / "shape.npz", images=np.zeros((2, 32, 32, 5), np.uint8))
    with pytest.raises(DataError, match="shape"):
        load_images(str(tmp_path / "shape.npz"))
    (tmp_path / "broken.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable"):
        load_images(str(tmp_path / "broken.npz"))
    with pytest.raises(DataError, match="not found"):
        load_images(str(tmp_path / "missing.npz"))


def test_folder_any_size_and_mode_reports_unreadable(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(tiny_images(1, 50)[0]).save(d / "a.png")
    Image.fromarray(tiny_images(1, 40)[0][:, :30, 0]).save(d / "sub" / "b.jpg")  # greyscale, non-square
    Image.fromarray(tiny_images(1, 20)[0]).convert("RGBA").save(d / "c.png")
    (d / "d.jpg").write_bytes(b"not an image")
    s = load_images(str(d), size=32)
    assert s.images.shape == (3, 32, 32, 3) and s.images.dtype == np.uint8
    assert len(s.skipped) == 1 and "d.jpg" in s.skipped[0]


def test_cifar_pickles_and_svhn(tmp_path):
    imgs = tiny_images(5)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": imgs.transpose(0, 3, 1, 2).reshape(5, -1), b"labels": [0] * 5}, f)
    np.testing.assert_array_equal(load_images(str(d)).images, imgs)
    scipy_io = pytest.importorskip("scipy.io")
    scipy_io.savemat(tmp_path / "test_32x32.mat", {"X": imgs.transpose(1, 2, 3, 0), "y": np.zeros((5, 1))})
    np.testing.assert_array_equal(load_images(str(tmp_path / "test_32x32.mat")).images, imgs)


def test_demo_set():
    pytest.importorskip("sklearn")
    pytest.importorskip("skimage")
    a = load_images("demo:id")
    b = load_images("demo:ood")
    assert a.images.shape == (1797, 32, 32, 3) and b.images.shape[1:] == (32, 32, 3) and len(b) >= 100
    with pytest.raises(DataError):
        load_images("demo:nothing")


@pytest.mark.skipif(not (SHARED_DATA / "dtd_subset10.npz").exists(), reason="shared data packs not present")
def test_shared_pack_loads():
    s = load_images(str(SHARED_DATA / "dtd_subset10.npz"), limit=10)
    assert s.images.shape == (10, 32, 32, 3)


def test_one_rule_set_for_files_and_arrays(tmp_path):
    """16-bit PNGs keep their contrast, RGBA loses alpha alike in packs and in the API,
    zero-sized images are refused, a list item that is a batch counts every image."""
    from dlsr_deploy.errors import InputError
    from dlsr_deploy.preprocess import as_batch, as_images, read_image

    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)  # 0..65472
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    got = read_image(tmp_path / "deep.png")
    assert got.shape == (32, 32, 3) and got.min() == 0 and 250 <= got.max() <= 255
    assert (got[..., 0] == 255).mean() < 0.01  # not clipped to white
    rgba = np.dstack([tiny_images(1)[0], np.full((32, 32), 7, np.uint8)])
    np.savez(tmp_path / "rgba.npz", images=rgba[None])
    np.testing.assert_array_equal(load_images(str(tmp_path / "rgba.npz")).images[0], rgba[..., :3])
    np.testing.assert_array_equal(as_images(rgba)[0], rgba[..., :3])
    with pytest.raises(InputError, match="zero size"):
        as_images(np.zeros((2, 0, 32, 3), np.uint8))
    batch = as_batch([tiny_images(1)[0], tiny_images(4)], 32)
    assert batch.shape == (5, 32, 32, 3)
