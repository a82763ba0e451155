"""No command writes over anything it reads (issue 29): inputs (globs expanded), bundle files and
keys are compared with the output path after resolution, before any work."""

import shutil

import pytest
from click.testing import CliRunner

from dlsr_deploy.cli import check, score
from dlsr_deploy.errors import DataError
from dlsr_deploy.paths import refuse_overwrite


@pytest.fixture
def victim(tmp_path, tiny_images_dir):
    v = tmp_path / "vic"
    shutil.copytree(tiny_images_dir, v)
    return v


@pytest.fixture
def tiny_images_dir(tmp_path_factory):
    from conftest import tiny_images
    from PIL import Image

    d = tmp_path_factory.mktemp("imgs")
    for i, im in enumerate(tiny_images(3)):
        Image.fromarray(im).save(d / f"id{i}.png")
    return d


def _score(*args):
    return CliRunner().invoke(score, [*map(str, args), "--quiet", "--backend", "ort-cpu"])


def test_a_glob_never_loses_the_image_it_lists(bundles, victim):
    before = (victim / "id1.png").read_bytes()
    r = _score(bundles["fp32"], f"{victim}/*.png", "--out", victim / "id1.png")
    assert r.exit_code == 1 and "is one of the inputs" in r.output
    assert (victim / "id1.png").read_bytes() == before


@pytest.mark.parametrize("name", ["manifest.json", "denoiser.onnx", "new.csv"])
def test_no_output_inside_the_bundle(bundles, tmp_path, victim, name):
    b = tmp_path / "b"
    shutil.copytree(bundles["fp32"], b)
    was = {p.name: p.read_bytes() for p in b.iterdir()}
    r = _score(b, victim, "--out", b / name)
    assert r.exit_code == 1 and "inside the bundle" in r.output
    assert {p.name: p.read_bytes() for p in b.iterdir()} == was


def test_no_output_onto_the_trusted_key(bundles, tmp_path, victim):
    pytest.importorskip("cryptography")
    from dlsr_deploy.signing import generate_keypair

    _, pub = generate_keypair(tmp_path / "fleet")
    key = pub.read_bytes()
    r = _score(bundles["fp32"], victim, "--trusted-key", pub, "--out", pub)
    assert r.exit_code == 1 and "is the key" in r.output and pub.read_bytes() == key


def test_dlsr_check_report_never_inside_the_bundle(bundles, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(bundles["fp32"], b)
    r = CliRunner().invoke(check, [str(b), "--on-target", "--backend", "ort-cpu", "--report", str(b / "golden.npz")])
    assert r.exit_code == 1 and "inside the bundle" in r.output


def test_refuse_overwrite_resolves_links_and_dotdots(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(tmp_path / "in" / "a.png")
    for out in (tmp_path / "link.png", tmp_path / "in" / ".." / "in" / "a.png"):
        with pytest.raises(DataError, match="one of the inputs"):
            refuse_overwrite(out, "out", [str(tmp_path / "in" / "*.png")])
    assert refuse_overwrite(tmp_path / "rows.csv", "out", [str(tmp_path / "in")]) == (tmp_path / "rows.csv").resolve()
