"""The 4/8/16/32 feature pyramid (`features_only=True, feature_cls='pyramid'`, and timm's `NAME_pyramid` names)
as segmentation_models_pytorch's `tu-` encoders, torchvision's FeaturePyramidNetwork and transformers'
TimmBackbone take it; the default features_only maps unchanged."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models import FeatureListNet
from timm.models._features import FeatureGetterNet
from torchvision.ops import FeaturePyramidNetwork

import lstmvision
from lstmvision.layers.pyramid import FeaturePyramid
from lstmvision.models.timm_pyramids import register_timm_pyramids

_SEQ = dict(layers=(1, 1, 1, 1), embed_dims=(16, 32, 32, 32), hidden_sizes=(4, 8, 8, 8))
_VIL = dict(embed_dim=32, depth=2, img_size=64)
SMALL = {
    "sequencer2d_tiny": {},  # the registered small preset: native strides 4 / 8
    "sequencer2d_s": _SEQ,  # native strides 7 / 14 / 14 / 14
    "vil2_tiny": _VIL,  # isotropic: stride 16 for every block
    "vil_tiny": _VIL,
}


@pytest.fixture(scope="module", autouse=True)
def _timm_names():
    register_timm_pyramids()  # NAME_pyramid, after NAME (import lstmvision registers the plain names)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _check_maps(model, maps, size):
    """NCHW maps whose channels and strides are those feature_info lists."""
    assert len(maps) == len(model.feature_info.channels())
    for y, chs, red in zip(maps, model.feature_info.channels(), model.feature_info.reduction()):
        assert y.shape[1:] == (chs, size // red, size // red)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_pyramid_maps_match_feature_info(name):
    model = lstmvision.create_model(name, **SMALL[name], features_only=True, feature_cls="pyramid")
    assert isinstance(model, FeaturePyramid)
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.output_fmt == "NCHW"
    _check_maps(model, model(torch.randn(2, 3, 64, 64)), 64)


@pytest.mark.slow  # 44 architectures, ~20 s
def test_every_model_has_the_pyramid():
    """Every registered architecture (built on the meta device: no memory, no compute)."""
    for name in lstmvision.list_models():
        with torch.device("meta"):
            model = lstmvision.create_model(name, features_only=True, feature_cls="pyramid")
        assert model.feature_info.reduction() == [4, 8, 16, 32], name


def test_pyramid_levels_formats_and_strides():
    kw = dict(**_VIL, features_only=True, feature_cls="pyramid")
    picked = lstmvision.create_model("vil2_tiny", out_indices=(1, -1), **kw)
    assert picked.feature_info.reduction() == [8, 32]
    nhwc = lstmvision.create_model("vil2_tiny", feature_fmt="NHWC", **kw)
    assert [tuple(y.shape) for y in nhwc(torch.randn(1, 3, 64, 64))][0] == (1, 16, 16, 32)
    other = lstmvision.create_model("sequencer2d_tiny", features_only=True,
                                    feature_cfg=dict(feature_cls="pyramid", strides=(8, 16, 32, 64)))
    assert other.feature_info.reduction() == [8, 16, 32, 64]
    _check_maps(other, other(torch.randn(1, 3, 64, 64)), 64)
    with pytest.raises(ValueError, match="level indices 0..3"):
        lstmvision.create_model("vil2_tiny", out_indices=(0, 4), **kw)
    with pytest.raises(ValueError, match="powers of two"):
        lstmvision.create_model("vil2_tiny", feature_cfg=dict(strides=(4, 12)), **kw)
    with pytest.raises(ValueError, match="not flatten_sequential"):
        lstmvision.create_model("vil2_tiny", feature_cfg=dict(flatten_sequential=True), **kw)


def test_default_features_only_unchanged():
    vil = lstmvision.create_model("vil2_tiny", **_VIL, features_only=True)
    assert isinstance(vil, FeatureGetterNet) and vil.feature_info.reduction() == [16, 16]
    seq = lstmvision.create_model("sequencer2d_tiny", features_only=True)
    assert isinstance(seq, FeatureGetterNet) and seq.feature_info.reduction() == [4, 8]
    timm_own = timm.create_model("sequencer2d_s", **_SEQ, features_only=True)  # timm's own model and wrapper
    assert isinstance(timm_own, FeatureListNet) and timm_own.feature_info.reduction()[0] == 7


def test_timm_routes():
    via_option = timm.create_model("vil2_tiny", **_VIL, features_only=True, feature_cls="pyramid", in_chans=1)
    assert isinstance(via_option, FeaturePyramid) and via_option.feature_info.reduction() == [4, 8, 16, 32]
    via_name = timm.create_model("vil2_tiny_pyramid", **_VIL, features_only=True, out_indices=(0, 1, 2))
    assert via_name.feature_info.reduction() == [4, 8, 16]
    _check_maps(via_name, via_name(torch.randn(1, 3, 64, 64)), 64)
    timm_class = timm.create_model("sequencer2d_s_pyramid", **_SEQ, features_only=True)
    assert type(timm_class.model).__module__ == "timm.models.sequencer"  # the name timm has stays timm's model
    _check_maps(timm_class, timm_class(torch.randn(1, 3, 64, 64)), 64)
    classifier = timm.create_model("sequencer2d_s_pyramid", **_SEQ, num_classes=5)
    assert classifier(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    assert timm.models.get_pretrained_cfg("sequencer2d_s_pyramid").hf_hub_id == "timm/sequencer2d_s.in1k"
    assert {t.split(".")[1] for t in timm.list_pretrained("vil2_tiny_pyramid.*")} == \
        {t.split(".")[1] for t in lstmvision.list_pretrained("vil2_tiny.*")}
    with pytest.raises(ValueError, match="need features_only=True"):
        timm.create_model("vil2_tiny_pyramid", **_VIL, out_indices=(0,))
    with pytest.raises(ValueError, match="feature_cls='pyramid'"):
        timm.create_model("vil2_tiny_pyramid", **_VIL, features_only=True, feature_cls="getter")


@pytest.mark.parametrize("name,kw", [("vil2_tiny", _VIL), ("sequencer2d_s", _SEQ)])
def test_pyramid_name_loads_the_weights_of_its_model(tmp_path, name, kw):
    """pretrained=True (smp: encoder_weights=True) reads the weights NAME reads; here a local file."""
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model(name, **kw).state_dict().items()}, str(weights))
    reference = timm.create_model(name, **kw, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)))
    pyramid = timm.create_model(f"{name}_pyramid", **kw, pretrained=True, features_only=True,
                                pretrained_cfg_overlay=dict(file=str(weights)))
    state = reference.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in pyramid.model.state_dict().items())


def test_torchvision_fpn_takes_the_pyramid():
    body = lstmvision.create_model("sequencer2d_s", **_SEQ, features_only=True, feature_cls="pyramid")
    fpn = FeaturePyramidNetwork(body.feature_info.channels(), 16)
    maps = body(torch.randn(1, 3, 64, 64))
    out = fpn(OrderedDict((f"p{i + 2}", y) for i, y in enumerate(maps)))
    assert [tuple(y.shape) for y in out.values()] == [(1, 16, 16, 16), (1, 16, 8, 8), (1, 16, 4, 4), (1, 16, 2, 2)]


@pytest.mark.slow  # importing transformers takes seconds
def test_transformers_timm_backbone_takes_the_pyramid():
    transformers = pytest.importorskip("transformers")
    config = transformers.TimmBackboneConfig(backbone="vil2_tiny_pyramid", out_indices=(0, 1, 2, 3))
    backbone = transformers.TimmBackbone(config, embed_dim=32, depth=2)
    maps = backbone(torch.randn(1, 3, 64, 64)).feature_maps
    assert [tuple(y.shape[-2:]) for y in maps] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert backbone.channels == [32] * 4


def _train_step(model, in_channels, size=32):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(2, in_channels, size, size), torch.randint(0, 2, (2, size, size))
    before = [p.detach().clone() for p in model.encoder.parameters()]
    logits = model.train()(x)
    assert logits.shape == (2, 2, size, size)
    F.cross_entropy(logits, y).backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.encoder.parameters()))
    assert model.encoder.out_channels[:2] == [in_channels, 0]  # smp's transformer-style layout: no stride-2 map


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("arch,name,kw", [
    (smp.Unet, "tu-vil2_tiny_pyramid", dict(embed_dim=32)),
    (smp.FPN, "tu-sequencer2d_s_pyramid", _SEQ),
    (smp.Unet, "tu-sequencer2d_tiny_pyramid", {}),
])
def test_smp_small(arch, name, kw, in_channels):
    """smp's own construction, forward and a training step, on small widths (smp passes `kw` to timm)."""
    _train_step(arch(name, encoder_weights=None, in_channels=in_channels, classes=2, **kw), in_channels)


@pytest.mark.slow
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("arch,name", [(smp.Unet, "tu-vil2_tiny_pyramid"), (smp.FPN, "tu-sequencer2d_s_pyramid")])
def test_smp_full_size(arch, name, in_channels):
    _train_step(arch(name, encoder_weights=None, in_channels=in_channels, classes=2), in_channels)
