"""Vision-LSTM: sizes, geometry at any resolution, options, the timm contract and the weight API."""
import warnings

import pytest
import timm.models
import torch
import torch.nn.functional as F

from conftest import perturb_
from lstmvision import create_model
from lstmvision import list_models as lstmvision_models
from lstmvision.layers import CausalConv1d, GridConv2d
from lstmvision.layers import from_scan as _from_scan
from lstmvision.layers import to_scan as _to_scan
from lstmvision.models.vil import VisionLSTM, convert_official_vil
from lstmvision.ops.dispatch import reload_environment, use_backend
from lstmvision.weights import WeightsError, save_pretrained

SMALL = dict(embed_dim=32, depth=4, patch_size=16, img_size=64, num_classes=7)


def _small(name="vil2_tiny", **kw):
    return perturb_(create_model(name, **{**SMALL, **kw})).eval()


def _params(name, **kw):
    with torch.device("meta"):
        model = create_model(name, **kw)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name,count",
    [("vil2_tiny", 6_391_528), ("vil2_small", 23_398_696), ("vil2_base", 89_263_528),
     ("vil_tiny", 6_088_360), ("vil_tinyplus", 7_277_840), ("vil_small", 22_792_360),
     ("vil_smallplus", 24_628_664), ("vil_base", 88_050_856)],
)
def test_parameter_counts(name, count):
    """v2 with legacy_norm (the default here) at 224: the counts of the official models and training logs."""
    assert _params(name) == count


def test_vil2_large_and_legacy_norm_off():
    assert round(_params("vil2_large") / 1e6, 1) == 310.5
    assert _params("vil2_tiny", legacy_norm=False) == 6_391_528 - 2 * 384


@pytest.mark.parametrize("direction", [0, 1, 2, 3])
def test_scan_orders_and_conv_geometry(direction):
    """Tokens in any scan order, run through the 2-D conv on the scan's grid (read backwards for directions 1
    and 3: the kernel rotated, never the map) and back, equal the conv applied to the correspondingly
    rotated/transposed image: the conv always sees the real (non-square) geometry."""
    torch.manual_seed(0)
    B, C, h, w = 2, 4, 3, 5
    img = torch.randn(B, C, h, w)
    conv = GridConv2d(C)
    tokens = img.flatten(2).transpose(1, 2)  # row-major
    scan, grid = _to_scan(tokens, (h, w), direction)
    out = _from_scan(conv(scan, grid, reverse=direction % 2 == 1), (h, w), direction)
    ref_img = img.transpose(2, 3) if direction >= 2 else img
    ref_img = ref_img.flip(2, 3) if direction % 2 else ref_img
    ref = F.conv2d(ref_img, conv.weight, conv.bias, padding=1, groups=C)
    ref = ref.flip(2, 3) if direction % 2 else ref
    ref = ref.transpose(2, 3) if direction >= 2 else ref
    torch.testing.assert_close(out, ref.flatten(2).transpose(1, 2))
    assert grid == ((w, h) if direction >= 2 else (h, w))


def test_causal_conv_read_backwards_is_the_flipped_causal_conv():
    torch.manual_seed(0)
    conv = CausalConv1d(6, 4)
    x = torch.randn(2, 9, 6)
    torch.testing.assert_close(conv(x, (3, 3), reverse=True), conv(x.flip(1), (3, 3)).flip(1))


@pytest.mark.parametrize("name", ["vil2_tiny", "vil_tiny"])
def test_new_resolution_equals_native_model(name, tmp_path):
    """A model built for 64 px run at 96 px equals the same weights built natively for 96 px (the position
    embedding is resized bicubically both on the fly and on load)."""
    model = _small(name)
    save_pretrained(model, tmp_path / "m")
    native = create_model(name, pretrained=tmp_path / "m" / "model.safetensors", **{**SMALL, "img_size": 96}).eval()
    assert native.pos_embed.shape[1:3] == (6, 6)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), native(x), rtol=0, atol=1e-6)
        y = model(torch.randn(2, 3, 64, 64))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["vil2_tiny", "vil_tiny"])
def test_stride8_and_non_square_inputs(name):
    model = _small(name, stride=8)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 64, 96))
        assert feats.shape == (1, 7, 11, 32)  # (64-16)/8+1, (96-16)/8+1: overlapping patches, real grid
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    plain = _small(name)
    with torch.no_grad():
        assert plain.forward_features(torch.randn(1, 3, 48, 112)).shape == (1, 3, 7, 32)


def test_stride8_at_224_gives_729_tokens():
    model = create_model("vil_tinyplus_stride8", embed_dim=16, depth=2, num_classes=3).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 27, 27, 16)
    assert model.pos_embed.shape == (1, 27, 27, 16)


def test_backends_give_the_same_model_output(monkeypatch):
    x = torch.randn(2, 3, 64, 64)
    model = _small()
    outs = {}
    for backend in ("parallel", "fused", "chunkwise", "recurrent"):
        m = _small(mlstm_backend=backend, mlstm_chunk_size=5)
        m.load_state_dict(model.state_dict())
        with torch.no_grad():
            outs[backend] = m(x)
    for backend in ("fused", "chunkwise", "recurrent"):
        torch.testing.assert_close(outs[backend], outs["parallel"], rtol=0, atol=1e-5)
    with use_backend():  # the variable is read once (at import): re-read it, and undo that afterwards
        monkeypatch.setenv("LSTMVISION_MLSTM_BACKEND", "bogus")
        reload_environment()
        with pytest.raises(ValueError, match="unknown mLSTM backend"):
            model(x)
    with pytest.raises(ValueError, match="unknown mLSTM backend"):
        create_model("vil2_tiny", **SMALL, mlstm_backend="module")  # an rnn2d backend, not an mLSTM one


@pytest.mark.parametrize(
    "pool,width", [("bilateral_flatten", 64), ("bilateral_avg", 32), ("avg", 32), ("first", 32), ("last", 32)]
)
def test_poolings(pool, width):
    model = _small(global_pool=pool)
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        assert model(x).shape == (2, 7)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, width)
    assert model.head_hidden_size == width


def test_feature_mode_returns_the_grid():
    model = _small(global_pool="to_image", num_classes=0)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 96)).shape == (2, 32, 4, 6)
    with pytest.raises(ValueError, match="num_classes=0"):
        create_model("vil2_tiny", **{**SMALL, "global_pool": ""})


def test_options_change_the_architecture():
    x = torch.randn(1, 3, 64, 64)
    base = _small()
    quad = _small(alternation="quaddirectional")
    assert [b.direction for b in quad.blocks] == [0, 1, 2, 3]
    conv1d = _small(conv_kind="causal1d")
    assert conv1d.blocks[0].layer.conv.weight.shape == (64, 1, 4)
    nobias = _small(proj_bias=False, norm_bias=False)
    assert nobias.blocks[0].layer.proj_up.bias is None and nobias.blocks[0].norm.bias is None
    quad.load_state_dict(base.state_dict())
    with torch.no_grad():
        assert not torch.allclose(quad(x), base(x))
    with pytest.raises(ValueError, match="alternation"):
        create_model("vil2_tiny", **SMALL, alternation="spiral")
    with pytest.raises(ValueError, match="conv_kind"):
        create_model("vil2_tiny", **SMALL, conv_kind="3d")


def test_drop_path_schedules_and_init_modes():
    const = create_model("vil2_tiny", **SMALL, drop_path_rate=0.2)
    assert [b.drop_path.drop_prob for b in const.blocks] == [0.2] * 4
    lin = create_model("vil2_tiny", **SMALL, drop_path_rate=0.2, drop_path_decay=True)
    assert [round(getattr(b.drop_path, "drop_prob", 0.0), 6) for b in lin.blocks[1:]] == [0.0, 0.2, 0.2]  # per pair, as v2
    torch.manual_seed(0)
    released = create_model("vil2_tiny", embed_dim=64, depth=8, num_classes=1)
    torch.manual_seed(0)
    fixed = create_model("vil2_tiny", embed_dim=64, depth=8, num_classes=1, init_mode="original-fixed")
    std_r = released.blocks[0].layer.proj_down.weight.std().item()
    std_f = fixed.blocks[0].layer.proj_down.weight.std().item()
    assert abs(std_r - 2 / 8) < 0.02 and abs(std_f - 2 / (8 * 8)) < 0.004
    assert torch.equal(released.blocks[0].layer.mlstm_cell.fgate.bias, torch.tensor([3.0, 4.0, 5.0, 6.0]))


def test_grad_checkpointing_gives_identical_grads():
    x = torch.randn(2, 3, 64, 64)
    model = _small(drop_path_rate=0.3).train()
    grads = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(1)
        model(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=0, atol=0, msg=n)


def test_features_only_and_forward_intermediates():
    backbone = create_model("vil2_tiny", **{**SMALL, "num_classes": 0}, features_only=True, out_indices=(1, 3))
    feats = backbone(torch.randn(2, 3, 64, 96))
    assert [f.shape for f in feats] == [(2, 32, 4, 6)] * 2
    assert backbone.feature_info.channels() == [32, 32] and backbone.feature_info.reduction() == [16, 16]
    model = _small()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=[0, 2], output_fmt="NHWC")
        torch.testing.assert_close(final, model.forward_features(x))
        assert [t.shape for t in inter] == [(1, 4, 4, 32)] * 2
        only = model.forward_intermediates(x, indices=2, intermediates_only=True, stop_early=True)
        assert len(only) == 2 and only[-1].shape == (1, 32, 4, 4)
    assert model.prune_intermediate_layers([1]) == [1]
    assert len(model.blocks) == 2 and model.num_classes == 0


def test_reset_classifier_and_contract_bits():
    model = _small()
    x = torch.randn(2, 3, 64, 64)
    model.reset_classifier(5)
    with torch.no_grad():
        assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, 64)
    model.reset_classifier(3, "avg")  # pooled width changes: the legacy pool norm is rebuilt for it
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    model.reset_classifier(0, "to_image")
    with torch.no_grad():
        assert model(x).shape == (2, 32, 4, 4)
    model.reset_classifier(0, "")  # timm's feature mode: the unpooled map in the model's output_fmt (NHWC)
    with torch.no_grad():
        assert model(x).shape == (2, 4, 4, 32) and model.output_fmt == "NHWC"
    assert "pos_embed" in model.no_weight_decay()
    assert model.pretrained_cfg["classifier"] == "head" and model.pretrained_cfg["first_conv"] == "patch_embed.proj"
    groups = model.group_matcher()
    assert "pos_embed" in groups["stem"]
    assert model.get_classifier() is model.head


def _official_v2_keys(model):
    """Our state dict in the standalone VisionLSTM2 layout (for round-trip tests of the converter)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("blocks."):
            _, j, rest = k.split(".", 2)
            side = "bot_right" if int(j) % 2 else "top_left"
            k = f"blocks.{int(j) // 2}.rowwise_from_{side}.{rest}"
        k = {"pos_embed": "pos_embed.embed"}.get(k, k).replace("pool_norm.", "legacy_norm.")
        out[k] = v
    return out


def test_all_layouts_are_detected(tmp_path):
    model = _small()
    sd = model.state_dict()
    v2 = _official_v2_keys(model)
    released = {}
    for k, v in sd.items():
        k = k.replace("layer.conv.", "layer.conv1d.")
        if k.startswith("blocks."):
            _, j, part, rest = k.split(".", 3)
            k = f"xlstm.blocks.{j}.{'xlstm' if part == 'layer' else 'xlstm_norm'}.{rest}"
        k = k.replace("pos_embed", "pos_embed.embed").replace("pool_norm.", "head.0.").replace("head.weight", "head.1.weight").replace("head.bias", "head.1.bias")
        k = "xlstm.post_blocks_norm." + k[5:] if k.startswith("norm.") else k
        released[k] = v
    for layout in (sd, v2, released):
        conv = convert_official_vil(layout)
        assert set(conv) == set(sd)
        assert all(torch.equal(conv[k], sd[k]) for k in sd)
        file = tmp_path / f"{len(layout)}_{next(iter(layout))}.pth"
        torch.save({"state_dict": layout}, file)
        loaded = create_model("vil2_tiny", pretrained=file, **SMALL)
        assert all(torch.equal(loaded.state_dict()[k], sd[k]) for k in sd)


def test_v1_standalone_layout(tmp_path):
    model = _small("vil_tiny")
    v1 = {}
    for k, v in model.state_dict().items():
        k = k.replace("layer.conv.", "layer.conv1d.conv.").replace("pos_embed", "pos_embed.embed")
        k = {"norm.weight": "legacy_norm.weight"}.get(k, k).replace("pool_norm.", "norm.")
        v1[k] = v
    torch.save(v1, tmp_path / "v1.pth")
    loaded = create_model("vil_tiny", pretrained=tmp_path / "v1.pth", **SMALL)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x), rtol=0, atol=0)


def test_checkpoint_errors_and_head_reinit(tmp_path):
    v2 = _small()
    save_pretrained(v2, tmp_path / "v2")
    file = tmp_path / "v2" / "model.safetensors"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        other = create_model("vil2_tiny", pretrained=file, **{**SMALL, "num_classes": 3})
    assert any("re-initialised" in str(w.message) for w in caught)
    assert other.head.weight.shape == (3, 64)
    torch.testing.assert_close(other.blocks[0].layer.proj_up.weight, v2.blocks[0].layer.proj_up.weight)
    with pytest.raises(WeightsError, match="does not fit vil_tiny"):  # v2 weights into a v1 model
        create_model("vil_tiny", pretrained=file, **SMALL)
    with pytest.raises(WeightsError, match="does not fit vil2_tiny"):  # another width
        create_model("vil2_tiny", pretrained=file, **{**SMALL, "embed_dim": 48})
    with pytest.raises(WeightsError, match="missing"):  # fewer blocks in the checkpoint
        create_model("vil2_tiny", pretrained=file, **{**SMALL, "depth": 6})


def test_bf16_autocast_forward_is_finite():
    model = _small()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 64, 64))
    with torch.no_grad():
        ref = model(torch.randn(2, 3, 64, 64))
    assert torch.isfinite(out).all() and out.shape == ref.shape


@pytest.mark.parametrize("name", lstmvision_models("vil*"))
def test_each_registered_name_builds_its_version(name):
    """The exported class behind every vil* name, with the options of the version its name says."""
    with torch.device("meta"):
        model = create_model(name, embed_dim=16, depth=2)
    assert type(model) is VisionLSTM and model.model_name == name
    v2 = name.startswith("vil2")
    assert type(model.blocks[0].layer.conv).__name__ == ("GridConv2d" if v2 else "CausalConv1d")
    # the pooling-ablation names (vil_tiny_pool_*) say their pooling; every other name its version's default
    pool = name.split("_pool_")[1] if "_pool_" in name else ("bilateral_flatten" if v2 else "bilateral_avg")
    assert model.global_pool == pool
    assert model.head_hidden_size == (32 if pool == "bilateral_flatten" else 16) and model.num_features == 16


def test_legacy_norm_means_each_versions_own_norm():
    """The official `legacy_norm` is the pool norm in v2 and the post-blocks norm in v1; contradictions fail."""
    v2 = create_model("vil2_tiny", **SMALL, legacy_norm=False)
    assert isinstance(v2.pool_norm, torch.nn.Identity) and not isinstance(v2.norm, torch.nn.Identity)
    v1 = create_model("vil_tiny", **SMALL, legacy_norm=False)
    assert isinstance(v1.norm, torch.nn.Identity) and isinstance(v1.pool_norm, torch.nn.LayerNorm)
    assert isinstance(create_model("vil_tiny", **SMALL, post_norm=False).norm, torch.nn.Identity)
    with pytest.raises(ValueError, match="legacy_norm is pool_norm here"):
        create_model("vil2_tiny", **SMALL, legacy_norm=True, pool_norm=False)


def test_layer_decay_groups_block_pairs():
    """Layer-wise lr decay (transfer, segmentation) counts block pairs as the official code does: stem, one layer
    per pair of sub-blocks, then the head - not one layer per sub-block."""

    model = create_model("vil2_tiny", img_size=32)  # 24 sub-blocks = 12 pairs
    groups = timm.models.group_parameters(model, model.group_matcher())
    assert len(groups) == 1 + 12 + 1
    pair = [n for n in groups[1]]
    assert {n.split(".")[1] for n in pair} == {"0", "1"}
