"""timm's model contract, as timm's own tests/test_models.py checks it, for one small config of every family.

Checked per family: forward/backward, the default cfg (keys, pool_size, first_conv/classifier names),
num_features (width of forward_features at `feature_dim`) vs head_hidden_size (width of
forward_head(pre_logits=True) and of the num_classes=0 output), reset_classifier, forward_intermediates,
features_only with each feature_cls, torch.fx tracing with timm's helpers, TorchScript where supported,
no_weight_decay and group_matcher; then the input checks and `lstmvision.register_timm()`.
"""
import math
import subprocess
import sys
import warnings

import pytest
import timm
import timm.optim
import torch
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import FeatureInfo, get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import lstmvision
from conftest import perturb_
from lstmvision.commands.export import ExportError, export_torchscript

_SEQ = dict(layers=(1, 1, 1, 1), embed_dims=(16, 32, 32, 32), hidden_sizes=(4, 8, 8, 8))
_VIL = dict(embed_dim=32, depth=2, img_size=64)
CONFIGS = {
    "sequencer2d_tiny": {},  # the registered small preset (32 px)
    "sequencer2d_s": _SEQ,
    "gru_sequencer2d_s": _SEQ,
    "rnn_sequencer2d_s": _SEQ,
    "v_sequencer_s": dict(layers=(1, 1, 1, 1), embed_dims=(32,) * 4, hidden_sizes=(16,) * 4),
    "vil2_tiny": _VIL,
    "vil_tiny": _VIL,
    "vil_tiny_dir_bidirectional": _VIL,  # one representative of the direction-design ablation configs
}
NAMES = list(CONFIGS)
VIL = [n for n in NAMES if n.startswith("vil")]
FEATURE_CLASSES = ["getter", "hook", "fx", "list", "dict"]


def _model(name, **kw):
    return perturb_(lstmvision.create_model(name, **{**CONFIGS[name], **kw})).eval()


def _input(model, batch=1, size=None):
    size = size or model.pretrained_cfg["input_size"][-1]
    return torch.randn(batch, 3, size, size)


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward(name):
    model = _model(name, num_classes=42).train()
    out = model(_input(model, batch=2, size=64))
    out.mean().backward()
    assert out.shape == (2, 42) and not torch.isnan(out).any()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_default_cfg_and_feature_widths(name):
    model = _model(name)
    cfg = model.default_cfg
    for key in ("input_size", "pool_size", "crop_pct", "interpolation", "mean", "std", "first_conv", "classifier"):
        assert key in cfg, key
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    state = model.state_dict()
    assert f"{cfg['classifier']}.weight" in state and f"{cfg['first_conv']}.weight" in state
    spatial, channel = get_spatial_dim(model.output_fmt), get_channel_dim(model.output_fmt)
    assert model.feature_dim in (channel, channel - 4)  # the same axis, counted from the end
    x = _input(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert (feats.shape[spatial[0]], feats.shape[spatial[1]]) == tuple(cfg["pool_size"])
        assert feats.shape[model.feature_dim] == model.num_features
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == pre.shape
        model.reset_classifier(0, "")
        unpooled = model(x)
        assert unpooled.shape == feats.shape
        torch.testing.assert_close(unpooled, feats, rtol=0, atol=0)
    plain = lstmvision.create_model(name, **CONFIGS[name], num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert plain(x).shape == feats.shape


@pytest.mark.parametrize("name", NAMES)
def test_reset_classifier(name):
    model = _model(name)
    model.reset_classifier(3)
    with torch.no_grad():
        assert model(_input(model, batch=2)).shape == (2, 3)
    assert model.num_classes == 3 and model.get_classifier().out_features == 3


@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates(name):
    model = _model(name)
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    x = _input(model, size=64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, output_fmt="NCHW")
        assert len(inter) == len(info.channels())
        for c, r, t in zip(info.channels(), info.reduction(), inter):
            assert t.shape[1] == c and t.shape[2] <= math.ceil(64 / r) + 1 and t.shape[3] <= math.ceil(64 / r) + 1
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        model.set_grad_checkpointing()
        torch.testing.assert_close(model.forward_intermediates(x)[0], final, rtol=0, atol=0)


@pytest.mark.parametrize("feature_cls", FEATURE_CLASSES)
@pytest.mark.parametrize("name", NAMES)
def test_features_only(name, feature_cls):
    """Every feature class returns the getter's maps (in the wrapper's output_fmt), or ViL refuses the classes
    that rebuild it from its top-level modules (they would skip its position embedding)."""
    kw = dict(CONFIGS[name], features_only=True, out_indices=(0, 1))
    if name.startswith("vil") and feature_cls in ("list", "dict"):
        with pytest.raises(ValueError, match="would skip pos_embed; use feature_cls='getter', 'hook' or 'fx'"):
            lstmvision.create_model(name, **kw, feature_cls=feature_cls)
        return
    torch.manual_seed(0)
    reference = lstmvision.create_model(name, **kw, feature_cls="getter").eval()
    torch.manual_seed(0)
    backbone = lstmvision.create_model(name, **kw, feature_cls=feature_cls).eval()  # the same weights (seed)
    x = _input(backbone, size=64)
    with torch.no_grad():
        outs = backbone(x)
        expected = reference(x)
    outs = list(outs.values()) if isinstance(outs, dict) else outs
    channel = get_channel_dim(backbone.output_fmt)
    assert [o.shape[channel] for o in outs] == backbone.feature_info.channels()
    for out, ref in zip(outs, expected):
        ref = ref.permute(0, 2, 3, 1) if backbone.output_fmt == "NHWC" else ref
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert "num_classes" not in backbone.pretrained_cfg  # timm's features cfg


def test_feature_cls_is_routed_not_passed_to_the_model():
    with pytest.raises(ValueError, match="feature_cls must be one of"):
        lstmvision.create_model("vil2_tiny", **_VIL, features_only=True, feature_cls="graph")
    via_cfg = lstmvision.create_model("sequencer2d_tiny", features_only=True, feature_cfg=dict(feature_cls="hook"))
    assert type(via_cfg).__name__ == "FeatureHookNet"
    with pytest.raises(ValueError, match="need features_only=True"):
        lstmvision.create_model("sequencer2d_tiny", feature_cls="hook")
    with pytest.raises(ValueError, match="needs feature_cls='getter'"):
        lstmvision.create_model("sequencer2d_tiny", features_only=True, feature_cls="fx", feature_fmt="NCHW")
    with pytest.raises(ValueError, match="would skip pos_embed"):  # a Sequencer with a position embedding
        lstmvision.create_model("v_sequencer_s_pe", **CONFIGS["v_sequencer_s"], features_only=True, feature_cls="list")


def _fx_model(model, train=False):
    """timm's test_models._create_fx_model: trace with timm's leaf modules and autowrapped functions."""
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]],
                                    eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_fx_trace_forward_backward_and_checks(name):
    model = _model(name)
    x = _input(model, size=64)
    with torch.inference_mode():
        out = model(x)
        traced = _fx_model(model)
        fx_out = torch.cat(tuple(traced(x).values()))
        assert torch.equal(fx_out, out)
        with pytest.raises(ValueError, match="too small"):  # the input check is in the graph, on real sizes
            traced(torch.randn(1, 3, 4, 4))
    train_model = _fx_model(_model(name, num_classes=42).train(), train=True)
    y = torch.cat(tuple(train_model(_input(model, batch=2, size=64)).values()))
    y.mean().backward()
    assert y.shape[-1] == 42 and all(p.grad is not None for p in train_model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_torchscript(name, tmp_path):
    model = _model(name)
    x = _input(model, size=64)
    if name in VIL:  # the mLSTM kernels dispatch is not scriptable: refused in one line by lstmvision.export

        with pytest.raises(ExportError, match="TorchScript export is not supported for Vision-LSTM"):
            export_torchscript(model, tmp_path / "vil.pt")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))
        with pytest.raises(torch.jit.Error, match="too small"):
            scripted(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("name", NAMES + ["v_sequencer_s_pe"])
def test_feature_dim_no_weight_decay_and_group_matcher(name):
    kw = CONFIGS.get(name, CONFIGS["v_sequencer_s"])
    model = lstmvision.create_model(name, **kw)
    assert model.feature_dim == -1 and model.output_fmt == "NHWC"
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names)
    assert ("pos_embed" in model.no_weight_decay()) == ("pos_embed" in names)
    groups = timm.models.group_parameters(model, model.group_matcher())
    assert sorted(n for ps in groups.values() for n in ps) == sorted(names)  # every parameter in one group
    coarse = timm.models.group_parameters(model, model.group_matcher(coarse=True))
    assert 1 < len(coarse) <= len(groups)
    opt = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    assert len({g["lr_scale"] for g in opt.param_groups}) > 1


# ------------------------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("name", ["sequencer2d_s", "v_sequencer_s_pe", "vil2_tiny", "vil_tiny"])
def test_bad_img_size_is_one_clear_error(name):
    for bad in [(0, 0), 0, (224, -1), (3, 5)]:
        with pytest.raises(ValueError, match=r"img_size=.*needs an int or \(h, w\) pair of at least"):
            lstmvision.create_model(name, img_size=bad)


@pytest.mark.parametrize("name", VIL + ["sequencer2d_s"])
def test_bad_inputs_are_one_clear_error(name):
    model = _model(name)
    smallest = model.min_input_size
    with torch.no_grad():
        with pytest.raises(ValueError, match=f"too small: this model needs at least {smallest}x{smallest}"):
            model(torch.randn(1, 3, smallest - 1, 64))
        with pytest.raises(ValueError, match="batch is empty"):
            model(torch.randn(0, 3, 64, 64))
        with pytest.raises(ValueError, match=r"expected a \(batch, 3, height, width\) image tensor"):
            model(torch.randn(1, 1, 64, 64))
        with pytest.raises(ValueError, match="image tensor"):
            model(torch.randn(3, 64, 64))
        assert model(torch.randn(1, 3, smallest, smallest)).shape == (1, model.num_classes)


# ------------------------------------------------------------------------------------------- register_timm
@pytest.mark.slow
def test_import_registers_in_timm_and_leaves_timm_names_alone():
    code = (
        "import timm, lstmvision\n"
        "print(timm.is_model('vil2_tiny'), timm.is_model('v_sequencer_s'), timm.is_model('vil2_tiny_pyramid'), "
        "lstmvision.register_timm())\n"
        "m = timm.create_model('vil2_tiny', embed_dim=32, depth=2, num_classes=3)\n"
        "print(type(m).__module__, type(timm.create_model('sequencer2d_s')).__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    assert out.split("\n")[:2] == ["True True True []", "lstmvision.models.vil timm.models.sequencer"]


def test_timm_create_model_builds_and_loads_lstmvision_models(tmp_path):
    lstmvision.register_timm()
    ours = _model("vil_tiny", num_classes=4)
    lstmvision.save_pretrained(ours, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    theirs = timm.create_model("vil_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)),
                               **_VIL, num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(theirs(x), ours(x))
    assert timm.data.resolve_data_config({}, model=theirs)["crop_pct"] == 1.0
    assert timm.models.get_pretrained_cfg_value("vil2_tiny", "classifier") == "head"
    with pytest.raises(lstmvision.WeightsError, match=r"lstmvision download vil2_tiny\.in1k_e800"):
        timm.create_model("vil2_tiny", pretrained=True, **_VIL)  # offline, nothing cached: never random weights
    features = timm.create_model("vil2_tiny", **_VIL, features_only=True, feature_cls="hook", out_indices=(1,))
    assert [f.shape for f in features(x)] == [(1, 4, 4, 32)]
