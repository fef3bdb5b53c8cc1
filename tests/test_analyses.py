"""Analysis tools (issue 6): corruptions, mCE arithmetic, attacks, ERF, memory, resolution sweep and their CLIs.

Everything runs on tiny models and a 24-image idx dataset written to a temp folder, on CPU, in well under a minute.
"""
from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch
import torch.nn as nn

from lstmvision.cli import main
from lstmvision.commands.analysis import common as C
from lstmvision.commands.analysis import corruptions as K
from lstmvision.commands.analysis import erf as E
from lstmvision.commands.analysis import memory as M
from lstmvision.commands.analysis import robustness as R
from lstmvision.models import create_model
from lstmvision.models.timm_models import create_timm_model
from lstmvision.weights import save_pretrained


def tiny_sequencer(**kw):
    m = create_model("sequencer2d_s", num_classes=10, in_chans=1, img_size=32, layers=(1, 1), patch_sizes=(4, 2),
                     embed_dims=(16, 32), hidden_sizes=(8, 16), mlp_ratios=2.0, **kw)
    m.pretrained_cfg = {**m.pretrained_cfg, "mean": (0.5,), "std": (0.5,), "input_size": (1, 32, 32)}
    return m.eval()


def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """24 28x28 grayscale idx images in 10 classes (train and t10k)."""
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28]
    for split in ("train", "t10k"):
        labels = np.arange(24) % 10
        imgs = np.stack([np.clip(128 + 100 * np.sin(xx / (1 + l) + yy / 3) + rng.normal(0, 10, (28, 28)), 0, 255)
                         for l in labels])
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", imgs)
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ck") / "seq"
    torch.manual_seed(0)
    m = tiny_sequencer()
    nn.init.normal_(m.head.fc.weight, std=0.5)  # non-zero head so predictions and gradients vary
    save_pretrained(m, folder)
    return folder


# ------------------------------------------------------------------------------------ corruptions
def _photo(size=32):
    yy, xx = np.mgrid[0:size, 0:size]
    checker = 60 * (((yy // 2) + (xx // 2)) % 2)  # fine detail, so that blurs show at 32 px
    img = np.stack([100 + 60 * np.sin(xx / 4) + checker, 100 + 60 * np.cos(yy / 5) + checker, 40 + xx * 4], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(K.CORRUPTIONS))
def test_corruptions_valid_at_all_severities(name):
    img = _photo()
    diffs = []
    for s in K.SEVERITIES:
        out = K.corrupt(img, name, s, seed=1)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert np.array_equal(out, K.corrupt(img, name, s, seed=1)), "not deterministic for a fixed seed"
        diffs.append(np.abs(out.astype(float) - img).mean())
    assert max(diffs) > 1.0, f"{name} barely changes the image: {diffs}"


def test_corruption_errors_and_count():
    assert len(K.CORRUPTIONS) == 15 and set(K.CORRUPTIONS) == set(K.ALEXNET_ERR)
    with pytest.raises(ValueError, match="unknown corruption"):
        K.corrupt(_photo(), "speckle", 1)
    with pytest.raises(ValueError, match="severity"):
        K.corrupt(_photo(), "fog", 6)
    with pytest.raises(ValueError, match="uint8"):
        K.corrupt(_photo().astype(float), "fog", 1)


def test_noise_statistics_match_definition():
    img = np.full((64, 64, 3), 128, np.uint8)
    out = K.corrupt(img, "gaussian_noise", 1, seed=0).astype(float) / 255
    assert abs(out.std() - 0.08) < 0.005  # N(0, 0.08) added to 0.5 (no clipping at this level)
    imp = K.corrupt(img, "impulse_noise", 5, seed=0)
    assert abs(((imp == 0) | (imp == 255)).mean() - 0.27) < 0.03


# ----------------------------------------------------------------------------------- mCE arithmetic
def test_mce_alexnet_by_hand():
    err = {"gaussian_noise": {s: 0.5 for s in K.SEVERITIES}, "brightness": {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4, 5: 0.5}}
    ce = R.ce_alexnet(err)
    assert ce["gaussian_noise"] == pytest.approx(0.5 / 0.886428)
    assert ce["brightness"] == pytest.approx(0.3 / 0.564592)
    assert R.mean_pct(ce) == pytest.approx(100 * (0.5 / 0.886428 + 0.3 / 0.564592) / 2)


def test_ce_against_baseline_by_hand():
    err = {"fog": {1: 0.2, 2: 0.4}}
    base = {"fog": {1: 0.4, 2: 0.6}}
    ce, rce = R.ce_baseline(err, base, clean=0.1, base_clean=0.2)
    assert ce["fog"] == pytest.approx(0.6 / 1.0)
    assert rce["fog"] == pytest.approx((0.1 + 0.3) / (0.2 + 0.4))


# ------------------------------------------------------------------------------------------ attacks
def _linear_model():
    lin = nn.Linear(16, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.ones(16), -torch.ones(16)]))
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval(), lin


def test_attacks_bounded_and_effective():
    lin = nn.Linear(16, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.ones(16), -torch.ones(16)]))
        lin.bias.copy_(torch.tensor([-16 * 0.5, 16 * 0.5]))  # class 0 iff mean(x) > 0.5
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.cat([torch.full((4, 1, 4, 4), 0.51), torch.full((4, 1, 4, 4), 0.49)])
    y = torch.tensor([0] * 4 + [1] * 4)
    assert (model(x).argmax(1) == y).all()
    eps = 0.02
    for adv in (R.fgsm(model, x, y, eps), R.pgd(model, x, y, eps, steps=5, step_size=0.01,
                                                 generator=torch.Generator().manual_seed(0))):
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert (model(adv).argmax(1) != y).all()  # every margin (0.01) is within eps


def test_attack_on_sequencer_keeps_modes_and_bounds(ckpt):
    model = create_model(str(ckpt)).eval()
    net = C.Normalized(model, (0.5,), (0.5,)).eval()
    x, y = torch.rand(2, 1, 32, 32), torch.tensor([1, 2])
    acc, max_delta = R.adversarial_top1(net, [(x, y)], torch.device("cpu"), "pgd", 2 / 255, 2, 1 / 255)
    assert max_delta <= 2 / 255 + 1e-6 and 0 <= acc <= 100
    assert not any(m.training for m in model.modules()), "modes not restored after the attack"


# ---------------------------------------------------------------------------------------------- ERF
def test_centre_scalar_layouts():
    t = torch.zeros(2, 8, 8, 3)
    t[:, 3, 3, :] = 1  # (H//2-1, W//2-1)
    assert E.centre_scalar(t, "nhwc", (32, 32)).item() == 6
    assert E.centre_scalar(t.permute(0, 3, 1, 2), "nchw", (32, 32)).item() == 6
    tok = t.reshape(2, 64, 3)
    assert E.centre_scalar(tok, "nhwc", (32, 32)).item() == 6
    with_cls = torch.cat([torch.zeros(2, 1, 3), tok], 1)
    assert E.centre_scalar(with_cls, "nhwc", (32, 32), prefix_tokens=1).item() == 6
    rect = torch.zeros(1, 4 * 8, 1)
    rect[0, 1 * 8 + 3] = 1  # grid 4x8 from a 16x32 input: centre (1, 3)
    assert E.centre_scalar(rect, "nhwc", (16, 32)).item() == 1


def test_erf_exact_n_and_per_image_sum():
    torch.manual_seed(0)
    model = tiny_sequencer()
    imgs = torch.randn(3, 1, 32, 32)
    maps, n = E.erf_maps(model, ["stages.0", "stages.1"], [imgs[:2], imgs[2:]])
    assert n == 3 and maps["stages.0"].shape == (32, 32)
    single = sum(E.erf_maps(model, ["stages.0"], [imgs[i:i + 1]])[0]["stages.0"] for i in range(3))
    np.testing.assert_allclose(maps["stages.0"], single, rtol=1e-5, atol=1e-9)
    assert (maps["stages.1"] >= 0).all() and maps["stages.1"].sum() > 0
    scaled = E.joint_minmax([E.log_map(maps["stages.0"]), E.log_map(maps["stages.1"])])
    assert min(s.min() for s in scaled) == 0 and max(s.max() for s in scaled) == pytest.approx(1)
    with pytest.raises(ValueError, match="no layer"):
        E.erf_maps(model, ["stages.9"], [imgs[:1]])


def test_cross_ratio_shapes():
    yy, xx = np.mgrid[0:31, 0:31]
    iso = np.exp(-((yy - 15) ** 2 + (xx - 15) ** 2) / 40)
    cross = np.exp(-np.minimum(abs(yy - 15), abs(xx - 15)) ** 2 / 2.0) * (1 + iso)  # peak at the centre
    assert E.cross_ratio(iso) == pytest.approx(1, abs=0.1)
    assert E.cross_ratio(cross) > 3
    assert np.isnan(E.cross_ratio(np.exp(-((yy - 15) ** 2 + (xx - 15) ** 2) / 0.5)))  # compact: no shape


def test_sequencer_first_stage_erf_is_cross_shaped_vs_cnn():
    """BiLSTM2D mixes along rows and columns only, so one block's ERF is exactly a cross (the centre patch's rows
    and columns, reaching the image borders); a conv stack's ERF is a blob."""

    torch.manual_seed(0)
    seq = create_model("sequencer2d_s", num_classes=10, in_chans=1, layers=(1, 1), patch_sizes=(2, 2),
                       embed_dims=(16, 32), hidden_sizes=(8, 16), mlp_ratios=2.0).eval()  # 2 px patches: thin arms
    cnn = nn.Sequential(*[nn.Sequential(nn.Conv2d(1 if i == 0 else 8, 8, 3, padding=1), nn.GELU()) for i in range(6)])
    imgs = torch.randn(4, 1, 32, 32)
    s_map = E.erf_maps(seq, ["stages.0"], [imgs])[0]["stages.0"]
    c_map = E.erf_maps(cnn, ["5"], [imgs], layout="nchw")[0]["5"]
    band = np.zeros((32, 32), bool)
    band[14:16, :] = band[:, 14:16] = True  # centre cell (7, 7) of the 16x16 grid = pixels 14-15
    assert s_map[~band].max() == 0 and s_map[14:16, :4].sum() > 0 and s_map[:4, 14:16].sum() > 0
    assert c_map[~band].max() > 0
    assert E.centre_cell((16, 16), (32, 32)) == (14, 14, 2, 2)
    assert E.cross_ratio(s_map, E.centre_cell((16, 16), (32, 32))) == float("inf")
    assert E.cross_ratio(c_map, E.centre_cell((32, 32), (32, 32))) < 2


def test_default_erf_layers_per_stage_or_evenly_spaced():
    """Without --layers: every stage's output (its last block) of a hierarchical model, four evenly spaced blocks
    ending with the last of an isotropic one; a timm ResNet's stem activation is no stage."""
    assert E.default_layers(tiny_sequencer()) == ["stages.0", "stages.1"]
    vil = create_model("vil2_tiny", num_classes=10, in_chans=1, img_size=32, patch_size=4, embed_dim=16, depth=8)
    assert E.default_layers(vil) == ["blocks.1", "blocks.3", "blocks.5", "blocks.7"]
    deit = create_timm_model("deit_tiny_patch16_224", 10, 1, 32, dict(patch_size=4, embed_dim=16, depth=6,
                                                                      num_heads=2))
    assert E.default_layers(deit) == ["blocks.1", "blocks.2", "blocks.4", "blocks.5"]
    resnet = create_timm_model("resnet10t", 10, 1, None, dict(channels=(8, 8, 8, 8), stem_width=8))
    assert E.default_layers(resnet) == ["layer1", "layer2", "layer3", "layer4"]
    cnx = create_timm_model("convnext_atto", 10, 1, None, dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8)))
    assert E.default_layers(cnx) == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert E.evenly_spaced(24) == [5, 11, 17, 23] and E.evenly_spaced(2) == [0, 1]
    with pytest.raises(ValueError, match="--layers"):
        E.default_layers(nn.Linear(2, 2))
    assert E.layers_for(tiny_sequencer(), None) == ["stages.0", "stages.1"]


# ------------------------------------------------------------------------------------------- memory
def test_live_tensor_bytes_peak():
    x = torch.randn(256, 256)  # 256 KiB
    with M.LiveTensorBytes() as m:
        y = x * 2
        z = y + 1
        del y
        w = z.relu()
        del z, w
    assert m.peak == 2 * 256 * 256 * 4 and m.live == 0


def test_live_tensor_bytes_ignores_parameters_and_views():
    lin = nn.Linear(1000, 1000)  # 4 MB of weights: views of them (weight.t()) allocate nothing
    x = torch.randn(2, 1000)
    peak = M.peak_forward_bytes(lin, x)
    assert 2 * 1000 * 4 <= peak < 4 * 2 * 1000 * 4


def test_sequencer_peak_memory_grows_with_resolution():
    model = tiny_sequencer()
    small = M.peak_forward_bytes(model, torch.randn(1, 1, 32, 32))
    big = M.peak_forward_bytes(model, torch.randn(1, 1, 64, 64))
    assert 2 < big / small < 8  # ~4x pixels


# --------------------------------------------------------------------------------------------- CLIs
def test_resolution_sweep_cli(data, ckpt, tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["resolution-sweep", "--checkpoint", str(ckpt), "--model", "timm:resnet10t", "--num-classes", "10",
               "--in-chans", "1", "--native-size", "32", "--factors", "0.5", "1", "2", "--data", str(data),
               "--limit", "10", "-o", str(out)])
    assert rc == 0
    rep = json.loads((out / "resolution.json").read_text())
    assert [r["model"] for r in rep["results"]] == ["seq", "resnet10t"]
    assert set(rep["results"][0]["top1"]) == {"16", "32", "64"} and rep["images"] == 10
    assert (out / "resolution.png").stat().st_size > 1000 and "drop at 2x" in (out / "resolution.md").read_text()


def test_erf_cli(data, ckpt, tmp_path):
    out = tmp_path / "erf"
    rc = main(["erf", "--checkpoint", str(ckpt), "--layers", "stages.0", "seq=stages.1", "--data", str(data),
               "--images", "3", "-b", "2", "-o", str(out)])
    assert rc == 0
    rep = json.loads((out / "erf.json").read_text())
    assert [m["images"] for m in rep["maps"]] == [3, 3]
    arr = np.load(out / "seq__stages.0.npy")
    assert arr.shape == (32, 32) and arr.min() >= 0
    assert (out / "erf.png").is_file()
    # without --layers: each model's default layers (here every stage of the Sequencer)
    out2 = tmp_path / "erf_default"
    assert main(["erf", "--checkpoint", str(ckpt), "--data", str(data), "--images", "2", "-o", str(out2)]) == 0
    rep = json.loads((out2 / "erf.json").read_text())
    assert [m["layer"] for m in rep["maps"]] == ["stages.0", "stages.1"] and rep["layers"].startswith("default")


def test_robustness_cli(data, ckpt, tmp_path):
    out = tmp_path / "rob"
    rc = main(["robustness", "--checkpoint", str(ckpt), "--data", str(data), "--corruptions", "fog", "contrast",
               "--severities", "1", "5", "--baseline", str(ckpt), "--attack", "fgsm", "--eps", "2/255",
               "-o", str(out)])
    assert rc == 0
    rep = json.loads((out / "robustness.json").read_text())
    assert set(rep["top1"]) == {"fog", "contrast"} and set(rep["top1"]["fog"]) == {"1", "5"}
    assert rep["ce_vs_baseline"]["fog"] == pytest.approx(100)  # a model against itself
    assert rep["adversarial"]["max_abs_perturbation"] <= 2 / 255 + 1e-6
    assert "mce" not in rep  # 10 classes: no AlexNet normalisation
    assert (out / "robustness.png").is_file()


def test_memory_cli(tmp_path):
    out = tmp_path / "mem"
    rc = main(["memory", "--model", "timm:resnet10t", "--in-chans", "1", "--sizes", "32", "48", "--iters", "1",
               "--warmup", "0", "-o", str(out)])
    assert rc == 0
    rep = json.loads((out / "memory.json").read_text())
    r = rep["models"][0]["results"]
    assert r["48"]["peak_mib"] > r["32"]["peak_mib"] > 0 and r["32"]["images_per_s"] > 0
    assert (out / "memory.png").is_file()


def test_throughput_is_interleaved_over_rounds(monkeypatch, tmp_path):
    """Each round times every model at every size in turn; the report holds the median, min and max."""
    calls = []

    def fake_throughput(model, x, warmup, iters):
        calls.append((model.label, x.shape[-1]))
        return float(len(calls))

    monkeypatch.setattr(M, "throughput", fake_throughput)
    models = []
    for label in ("a", "b"):
        m = nn.Conv2d(1, 2, 3)
        m.label = label
        models.append(m)
    rep = M.memory_report(models, [16, 24], tmp_path, iters=1, warmup=0, repeats=3, device=torch.device("cpu"))
    assert calls == [("a", 16), ("a", 24), ("b", 16), ("b", 24)] * 3
    r = rep["models"][1]["results"]["16"]  # model b at 16 px was call 3, 7 and 11
    assert (r["images_per_s_min"], r["images_per_s"], r["images_per_s_max"]) == (3, 7, 11) and rep["repeats"] == 3
    assert "median (min-max) of 3 interleaved rounds" in (tmp_path / "memory.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["erf", "--model", "nope_model", "--layers", "x", "--images", "2", "--data", "{data}", "-o", "{tmp}"],
     "unknown model"),
    (["erf", "--checkpoint", "{ckpt}", "--layers", "stages.0", "--images", "0", "--data", "{data}", "-o", "{tmp}"],
     "--images"),
    (["robustness", "--checkpoint", "{ckpt}", "--corruptions", "speckle", "--data", "{data}", "-o", "{tmp}"],
     "unknown corruption"),
    (["robustness", "--checkpoint", "{ckpt}", "--attack", "fgsm", "--eps", "8", "--data", "{data}", "-o", "{tmp}"],
     "--eps"),
    (["resolution-sweep", "--checkpoint", "{ckpt}", "--data", "{tmp}/missing", "-o", "{tmp}"], "not found"),
    (["resolution-sweep", "--data", "{data}", "-o", "{tmp}"], "at least one"),
    (["resolution-sweep", "--checkpoint", "{tmp}", "--data", "{data}", "-o", "{tmp}/o"], "holds no checkpoint"),
    (["memory", "--checkpoint", "{ckpt}", "--sizes", "32", "--repeats", "0", "-o", "{tmp}"], "--repeats"),
])
def test_bad_inputs_one_line_error(argv, message, data, ckpt, tmp_path, capsys):
    argv = [a.format(data=data, ckpt=ckpt, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
