"""One way in for every input (issue 20) and the image rules a hostile tour found wanting (issue 21)."""

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from dlsr_deploy.errors import DataError, InputError
from dlsr_deploy.inputs import display_id, list_inputs, read_listing
from dlsr_deploy.preprocess import read_image


def _kinds(tmp_path):
    """Every input kind, each holding 3 images of 32 px."""
    r = np.random.default_rng(0)
    imgs = r.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    d = tmp_path / "src"
    (d / "folder" / "sub").mkdir(parents=True)
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(d / "folder" / ("sub" if i else ".") / f"{i}.png")
    np.savez(d / "pack.npz", images=imgs)
    import pyarrow as pa
    import pyarrow.parquet as pq

    def png(im):
        import io

        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG")
        return buf.getvalue()

    pq.write_table(pa.table({"id": [f"t{i}" for i in range(3)], "image": [png(im) for im in imgs]}), d / "t.parquet")
    from scipy.io import savemat

    savemat(d / "svhn.mat", {"X": imgs.transpose(1, 2, 3, 0)})
    cifar = d / "cifar"
    cifar.mkdir()
    import pickle

    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        with open(cifar / name, "wb") as f:
            pickle.dump({b"data": imgs.transpose(0, 3, 1, 2).reshape(3, -1)}, f)
    return {
        "file": [str(d / "folder" / "0.png")],
        "folder": [str(d / "folder")],
        "glob": [str(d / "folder" / "**" / "*.png")],
        "npz": [str(d / "pack.npz")],
        "parquet": [str(d / "t.parquet")],
        "cifar": [f"{cifar}#test"],
        "svhn": [str(d / "svhn.mat")],
    }, imgs


COUNTS = {"file": 1, "folder": 3, "glob": 3, "npz": 3, "parquet": 3, "cifar": 3, "svhn": 3}


def test_every_input_kind_is_listed_lazily_and_read_alike(tmp_path):
    kinds, imgs = _kinds(tmp_path)
    for kind, src in kinds.items():
        listing = list_inputs(src)
        assert len(listing) == COUNTS[kind], kind
        images, kept, skipped = read_listing(listing, 32)
        assert len(kept) == COUNTS[kind] and not skipped, kind
        if kind in ("npz", "parquet", "cifar", "svhn"):
            np.testing.assert_array_equal(images, imgs, err_msg=kind)


@pytest.mark.parametrize("kind", sorted(COUNTS))
def test_every_command_takes_every_input_kind(kind, tmp_path, bundles, tiny_run):
    """The same sources through dlsr-score (with and without Ray's lister), training/eval data
    loading and the exporter's verify sets: the same images, in the same order."""
    from click.testing import CliRunner

    from dlsr_deploy.cli import score
    from dlsr_deploy.data import load_images
    from dlsr_deploy.export.verify import verify_sets
    from dlsr_deploy.scale.sources import decode_batch
    from dlsr_deploy.scale.sources import list_inputs as ray_list

    kinds, imgs = _kinds(tmp_path)
    src = kinds[kind]
    n = COUNTS[kind]
    assert len(load_images(src[0], size=32)) == n
    assert len(next(iter(verify_sets(src, 32, 10).values()))) == n
    cols = ray_list(src)
    dec = decode_batch({**cols, "shard": np.zeros(len(cols["id"]), int)}, 32)
    assert len(dec["image"]) == n and not any(dec["error"])
    out = tmp_path / "s.json"
    r = CliRunner().invoke(score, [str(bundles["fp32"]), *src, "--backend", "ort-cpu", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert len(json.loads(out.read_text())["results"]) == n


def test_links_that_loop_or_dangle_get_a_row_with_an_error(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "a.png")
    os.symlink(d / "missing.png", d / "broken.png")
    os.symlink(d, d / "loop")
    listing = list_inputs([str(d)])
    errors = dict(zip(listing.ids, listing.errors))
    assert errors[str(d / "a.png")] == ""
    assert "broken symbolic link" in errors[str(d / "broken.png")]
    assert any("loop" in e for e in listing.errors)
    images, kept, skipped = read_listing(listing, 8)
    assert len(kept) == 1 and len(skipped) == len(listing) - 1


def test_tiff_modes_exif_orientation_and_odd_file_names(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    tifffile.imwrite(tmp_path / "f.tif", f)
    got = read_image(tmp_path / "f.tif")
    assert got.max() == 255 and got.min() == 0  # a [0, 1] float image is not black
    i32 = np.arange(64, dtype=np.int32).reshape(8, 8) * 1500  # up to 94,500: 24-bit levels
    tifffile.imwrite(tmp_path / "i.tif", i32)
    got = read_image(tmp_path / "i.tif")
    assert 0 < got.max() < 255 and (got[..., 0] == 255).mean() < 0.05  # scaled, not saturated
    tifffile.imwrite(tmp_path / "nan.tif", np.full((8, 8), np.nan, np.float32))
    with pytest.raises(InputError, match="NaN"):
        read_image(tmp_path / "nan.tif")
    im = Image.fromarray(np.concatenate([np.zeros((8, 16, 3), np.uint8), np.full((8, 16, 3), 255, np.uint8)]))
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated 180 degrees
    im.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    assert read_image(tmp_path / "r.jpg")[0].mean() > 200  # the bright half is on top once upright
    if sys.platform.startswith("linux"):
        odd = os.fsdecode(b"\xff\xfeimg.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(os.path.join(tmp_path, odd))
        listing = list_inputs([os.path.join(tmp_path, odd)])
        assert "\\xff" in display_id(listing.ids[0])


def test_same_input_twice_and_broken_packs_are_clear_errors(tmp_path):
    np.savez(tmp_path / "p.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="given twice"):
        list_inputs([str(tmp_path / "p.npz"), str(tmp_path / "." / "p.npz")])
    blob = (tmp_path / "p.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="not a readable .npz"):
        list_inputs([str(tmp_path / "t.npz")])
    with pytest.raises(DataError, match="matches no file"):
        list_inputs([str(tmp_path / "*.jpeg")])
    with pytest.raises(DataError, match="not found"):
        list_inputs([str(tmp_path / "nope")])
