"""UperNet segmentation (lstmvision.models.upernet): shapes, features, weights, inference, optimiser groups."""
from __future__ import annotations

import copy
import json
import re

import pytest
import timm
import timm.optim
import torch
import torch.nn as nn
from timm.optim._param_groups import param_groups_layer_decay

from lstmvision import create_model, save_pretrained
from lstmvision.models.upernet import (
    BackboneFeatures,
    MultiScaleNeck,
    UperNet,
    create_segmenter,
    isotropic_indices,
    prefix_group_matcher,
    segment_logits,
    slide_inference,
)
from lstmvision.models.vil import VisionLSTM
from lstmvision.tasks.segment import SegmentationLoss

TINY_VIL = dict(embed_dim=32, depth=4, patch_size=4)
CASES = [  # (model, in_chans, img_size, model_kwargs)
    ("sequencer2d_tiny", 1, 32, {}),
    ("sequencer2d_tiny", 3, 64, {}),
    ("vil2_tiny", 3, 32, TINY_VIL),
    ("timm:resnet18", 3, 32, {}),
    ("timm:convnext_atto", 3, 32, {}),
    ("timm:deit_tiny_patch16_224", 3, 32, {}),
]


def _scales(model: nn.Module) -> dict[str, float]:
    """lr_scale of each parameter name under timm's layer-wise decay (0.65)."""

    groups = param_groups_layer_decay(model, layer_decay=0.65, no_weight_decay_list=model.no_weight_decay())
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}


@pytest.mark.parametrize("name,in_chans,size,kwargs", CASES, ids=[f"{c[0]}-{c[1]}ch-{c[2]}" for c in CASES])
def test_shapes_and_gradients(name, in_chans, size, kwargs):
    seg = create_segmenter(name, 5, in_chans=in_chans, img_size=size, model_kwargs=kwargs)
    x = torch.randn(2, in_chans, size, size)  # batch 2: BatchNorm of 1x1 pooled maps needs >1 value in training
    maps = seg.features(x)
    assert [m.shape[1] for m in maps] == seg.feature_channels
    seg.eval()
    assert seg(x).shape == (2, 5, size, size)
    seg.train()
    out = seg(x)
    assert isinstance(out, tuple) and [o.shape for o in out] == [(2, 5, size, size)] * 2
    target = torch.randint(0, 5, (2, size, size))
    SegmentationLoss(255, aux_weight=0.4)(out, target).backward()
    assert [n for n, p in seg.named_parameters() if p.requires_grad and p.grad is None] == []
    assert seg.pretrained_cfg["architecture"] == f"upernet_{name}" and seg.pretrained_cfg["num_classes"] == 5
    assert (seg.neck is not None) == (name.startswith("vil") or "deit" in name)


def test_isotropic_indices():
    assert isotropic_indices(24) == [7, 11, 15, 23]
    assert isotropic_indices(12) == [3, 5, 7, 11]
    assert isotropic_indices(8) == [2, 3, 4, 7]
    backbone = BackboneFeatures(VisionLSTM(num_classes=0, embed_dim=16, depth=24, img_size=32, patch_size=8))
    assert backbone.indices == [7, 11, 15, 23] and backbone.isotropic and len(backbone.model.blocks) == 24


def test_vil_taps_and_neck_strides():
    vil = create_model("vil2_tiny", num_classes=0, img_size=32, embed_dim=32, depth=8, patch_size=4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = copy.deepcopy(vil).forward_intermediates(x, indices=[2, 3, 4, 7], intermediates_only=True)
        backbone = BackboneFeatures(vil)
        maps = backbone(x)
    assert backbone.indices == [2, 3, 4, 7]
    assert isinstance(vil.norm, nn.Identity) and isinstance(vil.head, nn.Identity)  # pruned: pre-norm taps
    for a, b in zip(maps, ref):
        torch.testing.assert_close(a, b)
    assert all(m.shape == (2, 32, 8, 8) for m in maps)
    neck = MultiScaleNeck(32).eval()
    assert [tuple(m.shape[-2:]) for m in neck(maps)] == [(32, 32), (16, 16), (8, 8), (4, 4)]


def test_default_decoder_channels():
    tiny = create_segmenter("vil2_tiny", 3, img_size=32, model_kwargs=TINY_VIL)
    assert tiny.segmenter_args["decoder_channels"] == 192
    wide = dict(TINY_VIL, embed_dim=256)
    assert create_segmenter("vil2_tiny", 3, img_size=32, model_kwargs=wide).segmenter_args["decoder_channels"] == 384
    seg = create_segmenter("sequencer2d_tiny", 3, img_size=32)
    assert seg.segmenter_args["decoder_channels"] == 256 and seg.classifier.in_channels == 256
    assert create_segmenter("sequencer2d_tiny", 3, img_size=32, decoder_channels=64).classifier.in_channels == 64


def _assert_backbone_equals(seg: UperNet, clf: nn.Module) -> None:
    ours, theirs = seg.backbone.model.state_dict(), clf.state_dict()
    assert ours and all(k in theirs for k in ours)
    for k, v in ours.items():
        assert torch.equal(v, theirs[k]), k


def test_pretrained_sequencer(tmp_path):
    clf = create_model("sequencer2d_tiny", num_classes=10, in_chans=1)
    save_pretrained(clf, tmp_path / "clf")
    seg = create_segmenter("sequencer2d_tiny", 4, in_chans=1, img_size=32, pretrained=str(tmp_path / "clf"))
    _assert_backbone_equals(seg, clf)


def test_pretrained_vil_and_timm(tmp_path):
    vil = create_model("vil2_tiny", num_classes=10, img_size=32, **TINY_VIL)
    save_pretrained(vil, tmp_path / "vil")  # head and pool norm dropped, position embedding resized to 64 px
    seg = create_segmenter("vil2_tiny", 4, img_size=64, pretrained=tmp_path / "vil", model_kwargs=TINY_VIL)
    state = {k: v for k, v in vil.state_dict().items() if k != "pos_embed"}
    assert all(torch.equal(v, state[k]) for k, v in seg.backbone.model.state_dict().items() if k != "pos_embed")
    assert seg.backbone.model.pos_embed.shape == (1, 16, 16, 32)

    resnet = timm.create_model("resnet18", num_classes=7)
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")
    _assert_backbone_equals(create_segmenter("timm:resnet18", 3, img_size=32, pretrained=tmp_path / "r18.pth"), resnet)


class PixelConv(nn.Module):
    """A per-pixel (translation-equivariant) stand-in model."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, num_classes, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


def test_slide_inference_matches_whole():
    model = PixelConv()
    img = torch.randn(2, 3, 50, 70)
    out = slide_inference(model, img, crop=32, stride=20, num_classes=4)
    assert model.calls == 2 * 3  # mmseg's grids: (50-32+19)//20+1 rows, (70-32+19)//20+1 columns
    torch.testing.assert_close(out, model(img).detach())
    ones = slide_inference(lambda x: torch.ones(x.shape[0], 2, *x.shape[-2:]), img, crop=32, stride=24, num_classes=2)
    assert torch.equal(ones, torch.ones(2, 2, 50, 70))  # every pixel covered
    small = torch.randn(1, 3, 20, 25)  # smaller than the crop: padded
    torch.testing.assert_close(slide_inference(model, small, 32, 21, 4), model(small).detach())


def test_segment_logits_tta():
    model = PixelConv()
    img = torch.randn(2, 3, 40, 48)
    single = segment_logits(model, img, crop=32, stride=21)
    torch.testing.assert_close(single, model(img).detach())  # one pass: raw logits
    tta = segment_logits(model, img, crop=32, stride=21, scales=(0.5, 1.0, 1.5), flip=True, out_size=(30, 36))
    assert tta.shape == (2, 4, 30, 36)
    torch.testing.assert_close(tta.sum(1), torch.ones(2, 30, 36))  # several passes: mean probabilities
    flipped = segment_logits(model, img, mode="whole", flip=True)  # a per-pixel model is flip-equivariant
    torch.testing.assert_close(flipped, single.softmax(1))
    seg = create_segmenter("sequencer2d_tiny", 3, img_size=32).eval()
    assert segment_logits(seg, torch.randn(1, 3, 40, 52), crop=32, stride=16, flip=True).shape == (1, 3, 40, 52)
    assert segment_logits(seg, torch.randn(1, 3, 40, 52), mode="whole", scales=(0.75, 1.0)).shape == (1, 3, 40, 52)


@pytest.mark.parametrize("name,kwargs", [("sequencer2d_tiny", {}), ("vil2_tiny", TINY_VIL)])
def test_layer_decay_groups(name, kwargs):
    seg = create_segmenter(name, 3, img_size=32, model_kwargs=kwargs)
    scales = _scales(seg)
    head = [n for n in scales if not n.startswith("backbone.")]
    assert head and all(scales[n] == 1.0 for n in head)  # neck, decoder, classifier, aux head
    stem = next(n for n in scales if re.match(r"backbone\.model\.(stem|patch_embed)", n))
    assert scales[stem] == min(scales.values()) < 1.0
    assert max(s for n, s in scales.items() if n.startswith("backbone.")) < 1.0
    opt = timm.optim.create_optimizer_v2(seg, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.65)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(seg.parameters()))
    if name.startswith("vil"):
        assert "backbone.model.pos_embed" in seg.no_weight_decay()


def test_group_matcher_prefix():
    matcher = prefix_group_matcher(dict(stem=r"^stem|^pos_embed", blocks=[(r"^blocks\.(\d+)", None)]), "backbone.")
    assert re.match(matcher["stem"], "backbone.pos_embed") and not re.match(matcher["stem"], "pos_embed")
    assert re.match(matcher["blocks"][0][0], "backbone.blocks.3.x").groups() == ("3",)


def test_no_aux_head_returns_logits():
    backbone = BackboneFeatures(create_model("sequencer2d_tiny", num_classes=0))
    seg = UperNet(backbone, backbone.channels, 3, decoder_channels=32, aux_index=None).train()
    out = seg(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError):
        UperNet(backbone, backbone.channels, 3, aux_index=2)
    no_aux = create_segmenter("sequencer2d_tiny", 3, img_size=32, aux=False).train()
    assert no_aux.aux_head is None and isinstance(no_aux(torch.randn(2, 3, 32, 32)), torch.Tensor)


@pytest.mark.parametrize("name,kwargs", [("vil2_tiny", TINY_VIL), ("timm:resnet18", {})])
def test_segmenter_args_round_trip(name, kwargs):
    seg = create_segmenter(name, 6, img_size=32, model_kwargs=kwargs, drop_path_rate=0.1)
    args = json.loads(json.dumps(seg.segmenter_args))
    assert args["aux"] and seg.model_name == f"upernet:{name}"
    assert create_segmenter(num_classes=6, **seg.model_kwargs).segmenter_args == args
    again = create_segmenter(**args)
    assert [(n, p.shape) for n, p in seg.state_dict().items()] == [(n, p.shape) for n, p in again.state_dict().items()]
    again.load_state_dict(seg.state_dict())
