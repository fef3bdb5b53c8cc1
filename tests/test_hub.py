"""Released weights by name, against a local stand-in hub (tests/hub_server.py) with the real clients.

Downloads run in subprocesses: huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE when it is imported. Every file
served is written here: random weights of the right architecture in the publisher's layout (timm's on the Hub,
the official training code's `.th` for ViL, from the reference fixture), never a real checkpoint.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf

import lstmvision
from hub_server import StandInHub
from lstmvision.models.registry import build_model, default_tag, get_pretrained_cfg, list_pretrained

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
VIL_FIXTURE = TESTS / "fixtures" / "reference" / "vil2_released.safetensors"


def _random_head(model: torch.nn.Module) -> None:
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The stand-in hub with timm's `sequencer2d_s.in1k` (random weights, timm's layout, full size) and the ViL
    reference fixture's released-layout state dict as a publisher `.th` download."""
    folder = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    seq = build_model("sequencer2d_s")
    _random_head(seq)
    save_file({k: v.contiguous() for k, v in seq.state_dict().items()}, str(folder / "seq.safetensors"))
    tensors = load_file(str(VIL_FIXTURE))
    state = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    torch.save({"state_dict": state}, folder / "vil2_test.th")
    with StandInHub() as server:
        server.add_repo_file("timm/sequencer2d_s.in1k", "model.safetensors", folder / "seq.safetensors")
        server.vil_url = server.add_url_file("vil2_test.th", folder / "vil2_test.th")
        yield server


def _run(code: str, hub: StandInHub, home: Path, offline: bool = False, cwd: Path | None = None,
         args: list[str] | None = None) -> subprocess.CompletedProcess:
    """`code` (or, with `args`, `python -m lstmvision ARGS`) in a fresh process pointed at the stand-in hub."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home / "hf"), TORCH_HOME=str(home / "torch"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(TESTS)]), HF_HUB_DISABLE_TELEMETRY="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    cmd = [sys.executable, "-m", "lstmvision", *args] if args else [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(cmd, env=env, cwd=cwd or home, capture_output=True, text=True, timeout=600)


def _last_json(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ the registry
def test_every_released_checkpoint_has_a_tag():
    tags = list_pretrained()
    assert {"sequencer2d_s.in1k", "sequencer2d_m.in1k", "sequencer2d_l.in1k"} <= set(tags)
    assert len(list_pretrained("vil*")) == 13 and "vil_tinyplus_stride8.in1k_e800" not in tags
    assert list_pretrained("vil2_tiny") == ["vil2_tiny.in1k_e400", "vil2_tiny.in1k_e800"]
    assert default_tag("vil2_tiny") == "in1k_e800" and default_tag("sequencer2d_s") == "in1k"
    assert default_tag("sequencer2d_s_392") is None  # no 392 px weights are published
    seq = get_pretrained_cfg("sequencer2d_s")
    assert (seq["tag"], seq["hf_hub_id"], seq["top1"], seq["license"]) == ("in1k", "timm/sequencer2d_s.in1k", 82.3,
                                                                            "apache-2.0")
    assert seq["url"] == "https://github.com/okojoalg/sequencer/releases/download/weights/sequencer2d_s.pth"
    vil = get_pretrained_cfg("vil2_tiny.in1k_e400")
    assert vil["url"].endswith("/vision_lstm/download/vil2_tiny16_e400_in1k.th") and vil["top1"] == 77.2
    assert (vil["input_size"], vil["crop_pct"], vil["interpolation"]) == ((3, 224, 224), 1.0, "bicubic")
    assert get_pretrained_cfg("vil_base_stride8.in1k_e400")["file_name"] == "vil_base16_e400_in1k_stride8.th"
    with pytest.raises(ValueError, match=r"no pretrained tag 'in21k' \(released: vil2_tiny.in1k_e800, "):
        get_pretrained_cfg("vil2_tiny.in21k")


def test_offline_without_cache_is_one_clear_error(tmp_path, monkeypatch):
    """Never random weights in silence: the error names the file and how to fetch it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(lstmvision.WeightsError) as e:
        lstmvision.create_model("vil2_tiny", pretrained=True)
    assert "vil2_tiny16_e800_in1k.th" in str(e.value) and "lstmvision download vil2_tiny.in1k_e800" in str(e.value)
    with pytest.raises(lstmvision.WeightsError, match=r"timm/sequencer2d_m\.in1k.*sequencer2d_m\.pth"):
        lstmvision.create_model("sequencer2d_m.in1k", pretrained=True)


# ------------------------------------------------------------------------------------ downloads and caches
@pytest.mark.slow
def test_download_then_offline_from_the_cache(hub, tmp_path):
    out = _run("", hub, tmp_path, args=["download", "sequencer2d_s"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sequencer2d_s.in1k:" in out.stdout and "hf-hub:timm/sequencer2d_s.in1k" in out.stdout
    assert "verified" in out.stdout and hub.downloads("/timm/sequencer2d_s.in1k/resolve/main/model.safetensors") == 1
    assert list((tmp_path / "hf" / "hub").glob("models--timm--sequencer2d_s.in1k/snapshots/*/model.safetensors"))

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    result = _last_json(_run("""
        import json, torch, lstmvision
        m = lstmvision.create_model("sequencer2d_s", pretrained=True).eval()
        with torch.no_grad():
            y = m(torch.load("x.pt"))
        torch.save(y, "y.pt")
        print(json.dumps(dict(source=m.weights_source, tag=m.pretrained_cfg["tag"])))
    """, hub, tmp_path, offline=True))
    assert "models--timm--sequencer2d_s.in1k" in result["source"] and result["tag"] == "in1k"
    served = build_model("sequencer2d_s")
    served.load_state_dict(load_file(str(next((tmp_path / "hf" / "hub").rglob("model.safetensors")))))
    with torch.no_grad():
        torch.testing.assert_close(served.eval()(x), torch.load(tmp_path / "y.pt"), rtol=0, atol=1e-5)
    assert hub.downloads("model.safetensors") == 1  # offline: the cache only

    offline = _run("", hub, tmp_path, offline=True, args=["download", "vil2_tiny"])
    err = offline.stderr.strip().splitlines()
    assert offline.returncode == 2 and len(err) == 1, offline.stderr
    assert err[0].startswith("lstmvision download: error: no weights for vil2_tiny.in1k_e800")
    assert "vil2_tiny16_e800_in1k.th" in err[0] and "HF_HUB_OFFLINE=1" in err[0]


@pytest.mark.slow
def test_url_source_in_the_publishers_layout(hub, tmp_path):
    """A ViL `.th` as the official code saves it, fetched by torch.hub into $TORCH_HOME and converted on load: the
    logits are the official implementation's (the reference fixture's)."""
    result = _last_json(_run(f"""
        import json, torch
        from safetensors.torch import load_file
        from lstmvision.models import create_model
        from official_convert import OFFICIAL_FAMILIES
        from safetensors import safe_open
        with safe_open({str(VIL_FIXTURE)!r}, "pt") as f:
            meta = f.metadata()
        name, kwargs = OFFICIAL_FAMILIES[meta["family"]](json.loads(meta["kwargs"]))
        fixture = load_file({str(VIL_FIXTURE)!r})
        overlay = dict(url={hub.vil_url!r}, file_name="vil2_test.th")
        errors = []
        for _ in range(2):  # the second call reads torch.hub's cache
            m = create_model("vil2_tiny", pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()
            with torch.no_grad():
                errors.append((m(fixture["input"]) - fixture["logits"]).abs().max().item())
        print(json.dumps(dict(errors=errors, source=m.weights_source)))
    """, hub, tmp_path))
    assert max(result["errors"]) <= 1e-4
    assert result["source"] == str(tmp_path / "torch" / "hub" / "checkpoints" / "vil2_test.th")
    assert hub.downloads("/downloads/vil2_test.th") == 1


@pytest.mark.slow
def test_equal_logits_with_timm_on_the_same_hub_file(hub, tmp_path):
    result = _last_json(_run("""
        import json, timm, torch, lstmvision
        x = torch.randn(2, 3, 224, 224)
        ours = lstmvision.create_model("sequencer2d_s.in1k", pretrained=True).eval()
        theirs = timm.create_model("sequencer2d_s.in1k", pretrained=True).eval()
        with torch.no_grad():
            print(json.dumps(dict(diff=(ours(x) - theirs(x)).abs().max().item())))
    """, hub, tmp_path))
    assert result["diff"] <= 1e-5


# ------------------------------------------------------------------------------------- timm's hub layout
@pytest.mark.slow
def test_save_for_hf_round_trips_through_timm(hub, tmp_path):
    """`save_for_hf` writes timm's layout: after `register_timm()`, timm rebuilds the model from `local-dir:` and
    from `hf-hub:` (the folder served as a Hub repo) with equal logits, and so does lstmvision."""
    narrow = dict(embed_dim=32, depth=2, img_size=64)
    model = lstmvision.create_model("vil2_tiny", num_classes=5, **narrow)
    _random_head(model)
    model.class_names = list("abcde")
    saved = lstmvision.save_for_hf(model, tmp_path / "vil-narrow")
    config = json.loads((saved / "config.json").read_text())
    assert config["architecture"] == "vil2_tiny" and config["num_classes"] == 5
    assert config["model_args"] == narrow and config["label_names"] == list("abcde")
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64] and "paper_top1" not in config["pretrained_cfg"]
    seq = lstmvision.create_model("sequencer2d_s", num_classes=3, layers=(1, 1, 1, 1), img_size=64)
    _random_head(seq)
    lstmvision.save_for_hf(seq, tmp_path / "seq-narrow")
    for name in ("config.json", "model.safetensors"):
        hub.add_repo_file("acme/vil-narrow", name, saved / name)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(dict(vil=model.eval()(x), seq=seq.eval()(x)), tmp_path / "ref.pt")
    result = _last_json(_run("""
        import json, timm, torch, lstmvision
        x, ref = torch.load("x.pt"), torch.load("ref.pt")
        lstmvision.register_timm()
        built = dict(
            timm_local=timm.create_model("local-dir:vil-narrow", pretrained=True),
            timm_hub=timm.create_model("hf-hub:acme/vil-narrow", pretrained=True),
            ours_local=lstmvision.create_model("local-dir:vil-narrow", pretrained=True),
            ours_hub=lstmvision.create_model("hf-hub:acme/vil-narrow", pretrained=True),
        )
        seq = timm.create_model("local-dir:seq-narrow", pretrained=True).eval()  # timm's own Sequencer2D class
        with torch.no_grad():
            diffs = {k: (m.eval()(x) - ref["vil"]).abs().max().item() for k, m in built.items()}
            diffs["timm_sequencer"] = (seq(x) - ref["seq"]).abs().max().item()
        names = built["ours_hub"].class_names
        print(json.dumps(dict(diffs=diffs, names=names, timm_cls=type(seq).__module__)))
    """, hub, tmp_path))
    assert len(result["diffs"]) == 5 and max(result["diffs"].values()) <= 1e-5  # same file, same function
    assert result["names"] == list("abcde") and result["timm_cls"].startswith("timm.")


@pytest.mark.slow
def test_readme_quickstart_runs_as_written(hub, tmp_path):
    text = (ROOT / "README.md").read_text()
    marker = "<!-- quickstart -->\n```python\n"
    assert marker in text, "README.md lost its quickstart block"
    code = text.split(marker, 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 10
    out = _run(code, hub, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "my-sequencer" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- folders timm itself wrote
@pytest.fixture(scope="module")
def timm_saved(tmp_path_factory):
    """Folders written by timm's own `save_for_hf` (its defaults: pytorch_model.bin), as a timm user pushes a
    fine-tuned model: a grayscale 7-class Sequencer2D at 64 px (timm records num_classes, in_chans and img_size in
    `model_args`) and a resnet18, which has no lstmvision twin; with an input and each model's logits."""
    root = tmp_path_factory.mktemp("timm_saved")
    torch.manual_seed(0)
    seq = timm.create_model("sequencer2d_s", num_classes=7, in_chans=1, img_size=64).eval()
    res = timm.create_model("resnet18", num_classes=5, in_chans=1).eval()
    with torch.no_grad():  # heads that tell the classes apart (timm's Sequencer head is a ClassifierHead)
        for head in (seq.head.fc, res.fc):
            head.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    save_for_hf(seq, root / "seq-gray")
    save_for_hf(res, root / "res-gray")
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.save(dict(x=x, seq=seq(x), res=res(x)), root / "ref.pt")
    return root


@pytest.mark.slow
def test_a_folder_timm_saved_loads_as_timm_loads_it(timm_saved):
    config = json.loads((timm_saved / "seq-gray" / "config.json").read_text())
    assert {k: config["model_args"][k] for k in ("num_classes", "in_chans", "img_size")} == dict(
        num_classes=7, in_chans=1, img_size=[64, 64])
    ref = torch.load(timm_saved / "ref.pt")
    for name, arch in (("seq", "sequencer2d_s"), ("res", "timm:resnet18")):
        model = lstmvision.create_model(f"local-dir:{timm_saved / name}-gray", pretrained=True).eval()
        assert model.model_name == arch and tuple(model.pretrained_cfg["input_size"])[0] == 1
        with torch.no_grad():
            torch.testing.assert_close(model(ref["x"]), ref[name], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_explicit_arguments_override_a_timm_folders_model_args(timm_saved):
    """num_classes and in_chans given by the caller win over the saved ones, as in timm: the same weights as
    timm's create_model of the same call (the stem adapted from 1 to 3 channels, a new head)."""
    folder = f"local-dir:{timm_saved / 'seq-gray'}"
    with pytest.warns(UserWarning, match="classifier has 7 classes, model has 3; the head was re-initialised"):
        ours = lstmvision.create_model(folder, pretrained=True, num_classes=3, in_chans=3).eval()
    theirs = timm.create_model(folder, pretrained=True, num_classes=3, in_chans=3).eval()
    assert ours.num_classes == 3 and tuple(ours.pretrained_cfg["input_size"]) == (3, 64, 64)
    ours.head.fc.load_state_dict(theirs.head.fc.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_a_folder_timm_saved_loads_from_the_hub(hub, timm_saved, tmp_path):
    """The same folders served as Hub repos (hf-hub:), and one line for a repo or weights the Hub does not have."""
    for name in ("seq", "res"):
        for file in ("config.json", "pytorch_model.bin"):
            hub.add_repo_file(f"acme/{name}-gray", file, timm_saved / f"{name}-gray" / file)
    hub.add_repo_file("acme/config-only", "config.json", timm_saved / "seq-gray" / "config.json")
    result = _last_json(_run(f"""
        import json, torch, lstmvision
        ref = torch.load({str(timm_saved / "ref.pt")!r})
        diffs, errors = {{}}, {{}}
        for name in ("seq", "res"):
            model = lstmvision.create_model(f"hf-hub:acme/{{name}}-gray", pretrained=True).eval()
            with torch.no_grad():
                diffs[name] = (model(ref["x"]) - ref[name]).abs().max().item()
        for repo in ("acme/absent", "acme/config-only"):
            try:
                lstmvision.create_model(f"hf-hub:{{repo}}", pretrained=True)
            except lstmvision.WeightsError as e:
                errors[repo] = str(e)
        print(json.dumps(dict(diffs=diffs, errors=errors)))
    """, hub, tmp_path))
    assert max(result["diffs"].values()) <= 1e-5 and len(result["diffs"]) == 2
    absent, config_only = result["errors"]["acme/absent"], result["errors"]["acme/config-only"]
    assert absent == ("no weights for hf-hub:acme/absent: acme/absent (HF Hub): the Hub answered HTTP 404 for "
                      "config.json. Check the repo id and the network, or load a copy of the repo's files as "
                      "local-dir:FOLDER")
    assert "the Hub answered HTTP 404 for model.safetensors or pytorch_model.bin" in config_only
