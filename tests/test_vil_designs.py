"""Vision-LSTM's design space: direction designs (which token order each sub-block reads, which parameters it
owns) and the middle / class-token poolings, each checked for what defines it, plus compile and ONNX export."""
import pytest
import torch
import torch.nn as nn

from conftest import perturb_
from lstmvision import create_model
from lstmvision import list_models as lstmvision_models
from lstmvision.commands import export as ex
from lstmvision.layers import GridConv2d, MLSTMLayer
from lstmvision.models.flops import count_macs
from lstmvision.models.vil import DIRECTION_DESIGNS, ViLBlock

SMALL = dict(embed_dim=32, depth=4, patch_size=16, img_size=64, num_classes=7)
DESIGNS = sorted(DIRECTION_DESIGNS)
# the scan directions each of 4 sub-blocks reads, per design (0: rows from the top left, 1: flipped,
# 2: columns from the top left, 3: columns flipped)
EXPECTED_DIRECTIONS = {
    "alternating": [(0,), (1,), (0,), (1,)],
    "quad_alternating": [(0,), (1,), (2,), (3,)],
    "unidirectional": [(0,)] * 4,
    "bidirectional": [(0, 1)] * 4,
    "bidirectional_shared": [(0, 1)] * 4,
    "quaddirectional": [(0, 1, 2, 3)] * 4,
}


def _small(name="vil2_tiny", **kw):
    return perturb_(create_model(name, **{**SMALL, **kw})).eval()


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Probe(nn.Module):
    """Stands in for an mLSTM layer: records the sequence in the order it reads it (channel 0; from the end when
    told `reverse`), its grid and the class tokens' slot in that order."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, grid, cls_at=None, reverse=False):
        seq = x[0, :, 0].round().long().tolist()
        if reverse:
            seq = seq[::-1]
            cls_at = (len(seq) - cls_at[0] - cls_at[1], cls_at[1]) if cls_at else None
        self.calls.append((seq, grid, cls_at))
        return torch.zeros_like(x)


def _scan_order(direction, h, w):
    idx = torch.arange(h * w).reshape(h, w)
    idx = idx.t() if direction >= 2 else idx
    order = idx.flatten()
    return (order.flip(0) if direction % 2 else order).tolist()


def _probe_block(block: ViLBlock) -> list[Probe]:
    """Replace the block's norm by identity and each distinct layer by a Probe; returns the probes in
    scan_layers order (a shared layer appears once per direction, as the same probe)."""
    block.norm = nn.Identity()
    block.layer = Probe()
    block.extra_layers = nn.ModuleList(Probe() for _ in block.extra_layers)
    return [layer for _, layer in block.scan_layers()]


def _position_coded(B, h, w, C):
    return torch.arange(h * w, dtype=torch.float32).reshape(1, h, w, 1).expand(B, h, w, C).clone()


@pytest.mark.parametrize("design", DESIGNS)
def test_each_sub_block_reads_the_designs_token_orders(design):
    """A position-coded 3x5 map through each sub-block: the layers read exactly the design's scan orders,
    on the matching grid (transposed for column scans), the row-major order first for every design."""
    model = create_model("vil2_tiny", **SMALL, direction_design=design)
    h, w = 3, 5
    got = []
    for block in model.blocks:
        probes = _probe_block(block)
        block(_position_coded(2, h, w, 32))
        calls = [c for p in dict.fromkeys(probes) for c in p.calls]
        got.append(tuple(block.directions))
        assert len(calls) == len(block.directions)
        for (order, grid, cls_at), direction in zip(calls, block.directions):
            assert order == _scan_order(direction, h, w)
            assert grid == ((w, h) if direction >= 2 else (h, w)) and cls_at is None
    assert got == EXPECTED_DIRECTIONS[design]


@pytest.mark.parametrize("direction", [0, 1, 2, 3])
def test_class_tokens_sit_in_the_middle_of_every_scan(direction):
    """Class tokens (coded -1, -2) are inserted at index h·w // 2 of the row-major sequence; a column scan
    keeps them there, a flip reverses them with the rest; the layer is told where they are."""
    h, w = 3, 5
    block = ViLBlock(32, (direction,))
    (probe,) = _probe_block(block)
    cls = -torch.arange(1, 3, dtype=torch.float32).reshape(1, 2, 1).expand(2, 2, 32)
    x_out, cls_out = block(_position_coded(2, h, w, 32), cls)
    order, grid, cls_at = probe.calls[0]
    patches = _scan_order(2 if direction >= 2 else 0, h, w)
    row = patches[:7] + [-1, -2] + patches[7:]
    assert order == (row[::-1] if direction % 2 else row)
    start = order.index(-2 if direction % 2 else -1)
    assert cls_at == (start, 2)
    torch.testing.assert_close(x_out, _position_coded(2, h, w, 32))  # the probe adds zeros
    torch.testing.assert_close(cls_out, cls)


def _random_(block: ViLBlock) -> ViLBlock:
    """Every parameter random (a bare ViLBlock leaves its block-diagonal weights to VisionLSTM.init_weights)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return block.eval()


def _rot(x):  # 180° rotation of an NHWC map
    return x.flip(1, 2)


def _tr(x):  # transpose of an NHWC map
    return x.transpose(1, 2)


@pytest.mark.parametrize("direction", [1, 2, 3])
def test_a_scan_direction_is_the_first_one_on_the_rotated_or_transposed_map(direction):
    """With the real layer (2-D conv + mLSTM): a sub-block reading direction d equals the top-left row-major
    sub-block with the same weights applied to the correspondingly rotated/transposed map, and mapped back."""
    torch.manual_seed(0)
    first = _random_(ViLBlock(16, (0,)))
    other = ViLBlock(16, (direction,)).eval()
    other.load_state_dict(first.state_dict())
    x = torch.randn(2, 3, 5, 16)
    forward = {1: lambda t: _rot(t), 2: lambda t: _tr(t), 3: lambda t: _rot(_tr(t))}[direction]
    back = {1: lambda t: _rot(t), 2: lambda t: _tr(t), 3: lambda t: _tr(_rot(t))}[direction]
    with torch.no_grad():
        out = other(x)
        torch.testing.assert_close(out, back(first(forward(x))), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(out).all() and not torch.allclose(out, first(x))


@pytest.mark.parametrize("design", ["bidirectional", "bidirectional_shared", "quaddirectional"])
def test_multi_direction_sub_block_sums_its_one_direction_parts(design):
    """x + Σ_d (sub-block_d(x) - x): each direction's part is the one-direction sub-block with that direction's
    layer (the LayerNorm and residual shared)."""
    directions, shared = DIRECTION_DESIGNS[design][0][0], DIRECTION_DESIGNS[design][1]
    torch.manual_seed(0)
    block = _random_(ViLBlock(16, directions, shared))
    x = torch.randn(2, 3, 4, 16)
    expected = x.clone()
    for direction, layer in block.scan_layers():
        single = ViLBlock(16, (direction,)).eval()
        single.norm.load_state_dict(block.norm.state_dict())
        single.layer.load_state_dict(layer.state_dict())
        with torch.no_grad():
            expected = expected + single(x) - x
    with torch.no_grad():
        out = block(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_parameter_sharing_and_counts():
    models = {d: create_model("vil2_tiny", **SMALL, direction_design=d) for d in DESIGNS}
    layer = _count(models["alternating"].blocks[0].layer)
    base = _count(models["alternating"])
    for d in ("alternating", "quad_alternating", "unidirectional", "bidirectional_shared"):
        assert _count(models[d]) == base, d
    assert _count(models["bidirectional"]) == base + 4 * layer  # one more mLSTM layer per sub-block
    assert _count(models["quaddirectional"]) == base + 4 * 3 * layer
    shared = models["bidirectional_shared"].blocks[0]
    assert len(shared.extra_layers) == 0
    (_, a), (_, b) = shared.scan_layers()
    assert a is b and a.proj_up.weight is b.proj_up.weight
    separate = models["bidirectional"].blocks[0]
    (_, a), (_, b) = separate.scan_layers()
    assert a is not b and not torch.equal(a.proj_up.weight, b.proj_up.weight)  # initialised independently
    assert "blocks.0.extra_layers.0.proj_up.weight" in dict(separate.named_parameters(prefix="blocks.0"))


def test_registered_ablation_configs():
    """ViL-T v1 (causal 1-D conv, no biases), each with its pretrained_cfg; directions at IN-100/128 px."""
    names = lstmvision_models("vil_tiny_*")
    for d in ("unidirectional", "alternating", "quad_alternating", "bidirectional", "bidirectional_shared", "quaddirectional"):
        assert f"vil_tiny_dir_{d}" in names
    for p in ("avg", "bilateral_flatten", "bilateral_avg", "middle", "cls"):
        assert f"vil_tiny_pool_{p}" in names
    with torch.device("meta"):
        ref = create_model("vil_tiny", num_classes=100, img_size=128)
        bi = create_model("vil_tiny_dir_bidirectional")
        shared = create_model("vil_tiny_dir_bidirectional_shared")
        cls = create_model("vil_tiny_pool_cls")
        ref192 = create_model("vil_tiny", img_size=192)
    assert bi.direction_design == "bidirectional" and bi.num_classes == 100 and bi.pos_embed.shape[1:3] == (8, 8)
    assert type(bi.blocks[0].layer.conv).__name__ == "CausalConv1d" and bi.blocks[0].layer.proj_up.bias is None
    assert bi.pretrained_cfg["input_size"] == (3, 128, 128) and bi.pretrained_cfg["num_classes"] == 100
    assert _count(shared) == _count(ref)
    assert _count(bi) == _count(ref) + 24 * _count(ref.blocks[0].layer)
    assert cls.pretrained_cfg["input_size"] == (3, 192, 192) and cls.num_prefix_tokens == 1
    assert _count(cls) == _count(ref192) + 192 and cls.cls_token.shape == (1, 1, 192)


def test_alternation_is_an_alias():
    assert create_model("vil2_tiny", **SMALL, alternation="quaddirectional").direction_design == "quad_alternating"
    assert create_model("vil2_tiny", **SMALL, alternation="bidirectional").direction_design == "alternating"
    assert create_model("vil2_tiny", **SMALL).direction_design == "alternating"
    with pytest.raises(ValueError, match="contradicting"):
        create_model("vil2_tiny", **SMALL, alternation="bidirectional", direction_design="bidirectional")
    with pytest.raises(ValueError, match="direction_design must be one of"):
        create_model("vil2_tiny", **SMALL, direction_design="spiral")


def test_default_design_is_unchanged():
    """direction_design='alternating' given explicitly is the default model, key for key and output for output."""
    torch.manual_seed(0)
    default = create_model("vil2_tiny", **SMALL).eval()
    torch.manual_seed(0)
    explicit = create_model("vil2_tiny", **SMALL, direction_design="alternating").eval()
    assert list(default.state_dict()) == list(explicit.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(default(x), explicit(x), rtol=0, atol=0)


@pytest.mark.parametrize("kw", [*({"direction_design": d} for d in DESIGNS), {"global_pool": "cls"},
                                {"global_pool": "cls", "direction_design": "quaddirectional", "num_cls_tokens": 2}])
@pytest.mark.parametrize("name", ["vil2_tiny", "vil_tiny"])
def test_gradients_reach_every_parameter(name, kw):
    model = _small(name, depth=4, **kw).train()
    model(torch.randn(2, 3, 48, 80)).square().sum().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


# ------------------------------------------------------------------------------------------- poolings
def test_middle_pooling_is_the_middle_patch_token():
    model = _small(global_pool="middle")
    x = torch.randn(2, 3, 48, 80)  # 3x5 grid: token 7 = row 1, column 2
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
    torch.testing.assert_close(pooled, model.pool_norm(feats[:, 1, 2]), rtol=0, atol=0)
    assert model.head_hidden_size == 32


@pytest.mark.parametrize("name", ["vil2_tiny", "vil_tiny"])
@pytest.mark.parametrize("n", [1, 2])
def test_cls_pooling_contract(name, n):
    model = _small(name, global_pool="cls", num_cls_tokens=n)
    x = torch.randn(2, 3, 48, 80)
    assert model.num_prefix_tokens == n and model.head_hidden_size == n * 32
    assert model.no_weight_decay() == {"pos_embed", "cls_token"}
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, n + 15, 32)  # class tokens first, then the 3x5 patch tokens
        pooled = model.forward_head(feats, pre_logits=True)
        torch.testing.assert_close(pooled, model.pool_norm(feats[:, :n].flatten(1)), rtol=0, atol=0)
        assert model(x).shape == (2, 7)
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, feats, rtol=0, atol=0)
        assert [m.shape for m in maps] == [(2, 32, 3, 5)] * 4  # patch tokens only
        torch.testing.assert_close(model.norm(maps[-1].permute(0, 2, 3, 1)).flatten(1, 2), feats[:, n:])
    model.reset_classifier(3, "avg")  # the class tokens stay in the sequence; avg reads the patches only
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), model.pool_norm(feats[:, n:].mean(1)))
        assert model(x).shape == (2, 3)
    model.reset_classifier(0, "")
    with torch.no_grad():
        torch.testing.assert_close(model(x), feats, rtol=0, atol=0)
    with pytest.raises(ValueError, match="to_image"):
        model.reset_classifier(0, "to_image")
    with pytest.raises(ValueError, match="needs class tokens"):
        _small(name).reset_classifier(3, "cls")
    feature_model = create_model(name, **SMALL, global_pool="cls", features_only=True, out_indices=(1, 3))
    assert [t.shape for t in feature_model(x)] == [(2, 32, 3, 5)] * 2
    for feature_cls in ("hook", "fx"):
        with pytest.raises(ValueError, match="use feature_cls='getter'"):
            create_model(name, **SMALL, global_pool="cls", features_only=True, feature_cls=feature_cls)


def test_class_token_skips_the_2d_conv():
    """The conv output at the class tokens is their input; the patch tokens get the conv of the patches alone."""
    torch.manual_seed(0)
    conv = GridConv2d(4)
    patches, cls = torch.randn(2, 15, 4), torch.randn(2, 2, 4)
    seq = torch.cat([patches[:, :8], cls, patches[:, 8:]], dim=1)
    out = conv(seq, (3, 5), (8, 2))
    torch.testing.assert_close(out[:, 8:10], cls, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([out[:, :8], out[:, 10:]], 1), conv(patches, (3, 5)), rtol=0, atol=0)


def test_class_tokens_take_part_in_the_scan():
    """The class token is read by the mLSTM: changing it changes the patch tokens after the blocks."""
    model = _small(global_pool="cls")
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        a = model.forward_features(x)
        model.cls_token.add_(1.0)
        b = model.forward_features(x)
    assert not torch.allclose(a[:, 1:], b[:, 1:])


# ------------------------------------------------------------------------------------ compile / export
@pytest.mark.slow
@pytest.mark.parametrize("kw", [*({"direction_design": d} for d in DESIGNS), {"global_pool": "cls"}])
def test_no_graph_breaks(kw):
    torch._dynamo.reset()
    model = _small(embed_dim=16, depth=4, **kw)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, [str(r.reason)[:200] for r in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("kw", [{"direction_design": "bidirectional"}, {"direction_design": "quad_alternating"},
                                {"global_pool": "cls"}])
def test_onnx_export_verified_by_onnxruntime(kw, tmp_path):
    pytest.importorskip("onnxruntime")

    model = _small(embed_dim=16, depth=4, img_size=48, **kw)
    result = ex.export(model, tmp_path / "m.onnx", img_size=48, dynamic_size=True)
    assert result.ok and len(result.checks) == 2, [str(c) for c in result.checks]


def test_unidirectional_differs_from_alternating_only_in_odd_sub_blocks():
    """Same weights: sub-block 0 gives the same output in both designs, sub-block 1 does not."""
    alt = _small(direction_design="alternating")
    uni = _small(direction_design="unidirectional")
    uni.load_state_dict(alt.state_dict())
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        a, b = alt.forward_intermediates(x, indices=[0, 1])[1], uni.forward_intermediates(x, indices=[0, 1])[1]
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    assert not torch.allclose(a[1], b[1])
    assert isinstance(alt.blocks[1].layer, MLSTMLayer)


def test_macs_of_class_token_and_two_direction_models():
    """The MAC counter (module hooks under no_grad) runs a class-token model; two directions cost about twice."""

    size = (3, 64, 64)
    base = count_macs(_small(), size)["total"]
    assert count_macs(_small(global_pool="cls"), size)["total"] > base
    two = count_macs(_small(direction_design="bidirectional_shared"), size)["total"]
    assert two > 1.5 * base and count_macs(_small(direction_design="bidirectional"), size)["total"] == two
