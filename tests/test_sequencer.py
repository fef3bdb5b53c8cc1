"""Sequencer family: parity with timm, sizes, resolutions, the timm model contract, checkpointing."""
import argparse

import pytest
import timm
import timm.optim
import torch
from safetensors.torch import save_file

import lstmvision
from conftest import perturb_
from lstmvision.layers import RNN2DMixer

TINY = dict(layers=(1, 1, 2, 1), embed_dims=(16, 32, 32, 32), hidden_sizes=(4, 8, 8, 8), num_classes=7)


@pytest.mark.parametrize(
    "name,params",
    [("sequencer2d_s", 27_651_688), ("sequencer2d_m", 38_307_688), ("sequencer2d_l", 54_298_216)],
)
def test_parameter_counts(name, params):
    model = lstmvision.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.slow
def test_every_official_name_is_registered_and_builds():
    names = [
        "sequencer2d_s", "sequencer2d_m", "sequencer2d_l", "sequencer2d_s_392", "sequencer2d_m_392",
        "sequencer2d_l_392", "sequencer2d_s_unidirectional", "sequencer2d_s_add", "sequencer2d_s_h2x",
        "sequencer2d_s_without_fc", "sequencer2d_vertical", "sequencer2d_s_horizontal", "gru_sequencer2d_s",
        "rnn_sequencer2d_s", "sequencer2d_l_d4_3x", "v_sequencer_s", "v_sequencer_s_h", "v_sequencer_s_pe",
    ]
    assert set(names) <= set(lstmvision.list_models())
    expected_m = {"sequencer2d_s_unidirectional": 20.99, "sequencer2d_s_add": 26.55, "sequencer2d_s_h2x": 45.40,
                  "sequencer2d_s_without_fc": 25.43, "gru_sequencer2d_s": 24.87, "rnn_sequencer2d_s": 19.32,
                  "sequencer2d_l_d4_3x": 96.25, "v_sequencer_s": 33.02, "v_sequencer_s_pe": 33.11}
    for name, millions in expected_m.items():
        with torch.device("meta"):
            model = lstmvision.create_model(name)
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions, name


@pytest.mark.parametrize("name", ["sequencer2d_s", pytest.param("sequencer2d_m", marks=pytest.mark.slow),
                                  pytest.param("sequencer2d_l", marks=pytest.mark.slow)])
def test_timm_parity_both_ways(name):
    ours = perturb_(lstmvision.create_model(name)).eval()
    theirs = timm.create_model(name).eval()
    theirs.load_state_dict(ours.state_dict())  # ours -> timm: identical layout
    back = lstmvision.create_model(name).eval()
    back.load_state_dict(theirs.state_dict())  # timm -> ours
    with torch.no_grad():
        for h, w in [(224, 224), (160, 288)]:
            x = torch.randn(1, 3, h, w)
            ref = theirs(x)
            assert ref.abs().max() > 1e-3
            assert (ours(x) - ref).abs().max().item() <= 1e-5
            assert (back(x) - ref).abs().max().item() <= 1e-5


def test_timm_safetensors_file_loads(tmp_path):
    theirs = perturb_(timm.create_model("sequencer2d_s", num_classes=5)).eval()
    save_file(theirs.state_dict(), str(tmp_path / "timm.safetensors"))
    ours = lstmvision.create_model("sequencer2d_s", num_classes=5, pretrained=tmp_path / "timm.safetensors").eval()
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("hw", [(56, 56), (63, 70), (35, 91), (14, 14), (30, 14)])
def test_any_resolution_floors_like_the_stem(hw):
    model = lstmvision.create_model("sequencer2d_s", **TINY).eval()
    feats = model.forward_features(torch.randn(2, 3, *hw))
    h, w = hw[0] // 7 // 2, hw[1] // 7 // 2
    assert feats.shape == (2, h, w, 32)
    assert model(torch.randn(2, 3, *hw)).shape == (2, 7)


def test_too_small_input_is_a_clear_error():
    model = lstmvision.create_model("sequencer2d_s", **TINY)
    with pytest.raises(ValueError, match="at least 14x14"):
        model(torch.randn(1, 3, 13, 40))


def test_vanilla_pos_embed_interpolates_at_other_sizes():
    model = lstmvision.create_model("v_sequencer_s_pe", layers=(1, 1, 1, 1), embed_dims=(32,) * 4,
                                    hidden_sizes=(16,) * 4, img_size=56, num_classes=3).eval()
    assert model.pos_embed.shape == (1, 4, 4, 32)
    assert model(torch.randn(1, 3, 84, 112)).shape == (1, 3)
    assert "pos_embed" in model.no_weight_decay()


def test_mixer_channel_order_vertical_then_horizontal():
    mixer = RNN2DMixer(8, 2, union="cat", with_fc=False).eval()
    x = torch.randn(1, 3, 5, 8)
    out = mixer(x)
    v = mixer.rnn_v(x.permute(0, 2, 1, 3).reshape(5, 3, 8))[0].reshape(1, 5, 3, 4).permute(0, 2, 1, 3)
    h = mixer.rnn_h(x.reshape(3, 5, 8))[0].reshape(1, 3, 5, 4)
    assert torch.equal(out[..., :4], v) and torch.equal(out[..., 4:], h)


def test_mixer_rejects_bad_configurations():
    with pytest.raises(ValueError, match="union"):
        RNN2DMixer(8, 2, union="mul")
    with pytest.raises(ValueError, match="with_fc=False"):
        RNN2DMixer(8, 4, union="cat", with_fc=False)
    with pytest.raises(ValueError, match="rnn_type"):
        RNN2DMixer(8, 2, rnn_type="lstmx")


def test_official_init_and_linear_drop_path():
    model = lstmvision.create_model("sequencer2d_s", drop_path_rate=0.1)
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0
             for s in model.stages for b in s.blocks]
    assert len(rates) == 18 and rates[0] == 0.0 and abs(rates[-1] - 0.1) < 1e-7
    assert all(b > a for a, b in zip(rates, rates[1:]))
    assert torch.count_nonzero(model.head.fc.weight) == 0
    blk = model.stages[0].blocks[0]
    assert torch.count_nonzero(blk.rnn_tokens.fc.bias) == 0
    assert 0 < blk.mlp_channels.fc1.bias.abs().max() < 1e-4
    uniform = lstmvision.create_model("sequencer2d_s", drop_path_rate=0.1, drop_path_schedule="uniform")
    assert all(abs(b.drop_path.drop_prob - 0.1) < 1e-7 for s in uniform.stages for b in s.blocks)


def test_grad_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    model = perturb_(lstmvision.create_model("sequencer2d_s", **TINY))
    x = torch.randn(2, 3, 56, 56)

    def grads():
        model.zero_grad()
        model(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.set_grad_checkpointing(True)
    assert all(s.grad_checkpointing for s in model.stages)
    ckpt = grads()
    for n in plain:
        assert torch.allclose(plain[n], ckpt[n], atol=1e-6, rtol=1e-5), n


def test_timm_contract():
    model = perturb_(lstmvision.create_model("sequencer2d_s", **TINY)).eval()
    x = torch.randn(2, 3, 56, 56)
    feats = model.forward_features(x)
    assert feats.shape == (2, 4, 4, model.num_features)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
    assert model.get_classifier() is model.head.fc
    assert [f["reduction"] for f in model.feature_info] == [7, 14, 14, 14]
    cfg = model.pretrained_cfg
    assert f"{cfg['first_conv']}.weight" in model.state_dict()
    assert f"{cfg['classifier']}.weight" in model.state_dict()
    assert cfg["num_classes"] == 7 and cfg["mean"] == (0.485, 0.456, 0.406)

    final, inter = model.forward_intermediates(x, indices=[1, 3])
    assert [t.shape for t in inter] == [(2, 32, 4, 4), (2, 32, 4, 4)]
    assert torch.allclose(final, feats)
    only = model.forward_intermediates(x, indices=2, intermediates_only=True, output_fmt="NHWC")
    assert [t.shape[-1] for t in only] == [32, 32]

    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, 4, 4, model.num_features)
    model.reset_classifier(4, "avg")
    assert model(x).shape == (2, 4) and model.num_classes == 4

    matcher = model.group_matcher()
    assert "stem" in matcher and "blocks" in matcher
    assert model.no_weight_decay() == set()


def test_group_matcher_works_with_timm_layer_decay():
    model = lstmvision.create_model("sequencer2d_s", **TINY)
    opt = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert len(scales) > 3


def test_features_only():
    backbone = lstmvision.create_model("sequencer2d_s", features_only=True, out_indices=(0, 1, 3),
                                       **{k: v for k, v in TINY.items() if k != "num_classes"})
    outs = backbone(torch.randn(1, 3, 112, 112))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 16, 16), (1, 32, 8, 8), (1, 32, 8, 8)]
    assert backbone.feature_info.channels() == [16, 32, 32]
    assert backbone.feature_info.reduction() == [7, 14, 14]


def test_save_and_restore_folder_exactly(tmp_path):
    model = perturb_(lstmvision.create_model("gru_sequencer2d_s", in_chans=1, **TINY)).eval()
    lstmvision.save_pretrained(model, tmp_path / "saved", class_names=[str(i) for i in range(7)])
    restored = lstmvision.create_model(pretrained=tmp_path / "saved").eval()
    assert restored.model_name == "gru_sequencer2d_s" and restored.class_names[3] == "3"
    x = torch.randn(2, 1, 42, 42)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))
    with pytest.raises(ValueError, match="holds a 'gru_sequencer2d_s' model"):
        lstmvision.create_model("sequencer2d_s", pretrained=tmp_path / "saved")


def test_other_num_classes_reinitialises_head_with_warning(tmp_path):
    src = perturb_(lstmvision.create_model("sequencer2d_s", **TINY))
    torch.save(src.state_dict(), tmp_path / "w.pth")
    with pytest.warns(UserWarning, match="head was re-initialised"):
        model = lstmvision.create_model("sequencer2d_s", pretrained=tmp_path / "w.pth", **{**TINY, "num_classes": 3})
    assert torch.count_nonzero(model.head.fc.weight) == 0
    assert torch.equal(model.stem.proj.weight, src.stem.proj.weight)


def test_rgb_weights_adapt_to_grayscale(tmp_path):
    src = perturb_(lstmvision.create_model("sequencer2d_s", **TINY))
    torch.save(src.state_dict(), tmp_path / "w.pth")
    gray = lstmvision.create_model("sequencer2d_s", pretrained=tmp_path / "w.pth", in_chans=1, **TINY)
    assert torch.allclose(gray.stem.proj.weight[:, 0], src.stem.proj.weight.sum(1))


def test_mismatched_checkpoint_is_one_clear_error(tmp_path):
    other = lstmvision.create_model("sequencer2d_s_add", **TINY)
    torch.save({"model": other.state_dict()}, tmp_path / "add.pth.tar")
    with pytest.raises(lstmvision.WeightsError, match=r"does not fit sequencer2d_s: .*mis-shaped: stages"):
        lstmvision.create_model("sequencer2d_s", pretrained=tmp_path / "add.pth.tar", **TINY)
    torch.save({"stem.proj.weight": torch.zeros(1)}, tmp_path / "junk.pth")
    with pytest.raises(lstmvision.WeightsError, match="missing"):
        lstmvision.create_model("sequencer2d_s", pretrained=tmp_path / "junk.pth", **TINY)


def test_unsafe_pickles_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(lstmvision.WeightsError, match="not unpickled for safety"):
        lstmvision.create_model("sequencer2d_s", pretrained=tmp_path / "evil.pth", **TINY)


def test_training_checkpoint_with_args_namespace_loads(tmp_path):
    src = perturb_(lstmvision.create_model("sequencer2d_s", **TINY))
    official = src.checkpoint_filter_fn  # noqa: F841  (layout converter is exercised by the fixture tests)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()},
                "args": argparse.Namespace(lr=1.0)}, tmp_path / "train.pth.tar")
    model = lstmvision.create_model("sequencer2d_s", pretrained=tmp_path / "train.pth.tar", **TINY)
    assert torch.equal(model.stem.proj.weight, src.stem.proj.weight)


def test_unknown_model_and_missing_file_messages(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'sequencer3d_s'"):
        lstmvision.create_model("sequencer3d_s")
    with pytest.raises(FileNotFoundError, match="not found"):
        lstmvision.create_model("sequencer2d_s", pretrained=tmp_path / "nope.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(lstmvision.WeightsError, match="not a readable safetensors"):
        lstmvision.create_model("sequencer2d_s", pretrained=tmp_path / "bad.safetensors", **TINY)
