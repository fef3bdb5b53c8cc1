"""The command line speaks timm's train.py / validate.py vocabulary in every command: -m/-b/-j, --input-size C H W,
--pretrained as a switch (the released weights of the model's tag), --initial-checkpoint PATH, --checkpoint PATH;
a bad flag is the subcommand's error; --limit-val picks the same images in train and validate; --results-file
writes CSV or JSON; random weights are said; `lstmvision models` reads its committed table."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import lstmvision
import lstmvision.models.flops as flops
import lstmvision.models.loading as loading
from engine_helpers import write_idx_folder
from lstmvision.cli import COMMANDS, build_parser, main
from lstmvision.cli import models as models_cli
from lstmvision.engine.config import resolve_config
from lstmvision.engine.recipes import DEFAULTS, RECIPES
from lstmvision.models import get_pretrained_cfg, list_models, list_pretrained
from lstmvision.models.hub import url_cache_path
from lstmvision.tasks.classify import build_model
from lstmvision.tasks.segment import create_for_config

ROOT = Path(__file__).resolve().parents[1]
# sequencer2d_s narrowed for CPU tests (the architecture's own arguments, as --model-kwargs)
TINY_S = dict(layers=[1, 1], patch_sizes=[4, 2], embed_dims=[16, 32], hidden_sizes=[8, 16], mlp_ratios=2.0)
TINY_S_FLAGS = [f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in TINY_S.items()]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("LSTMVISION_DEBUG", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_idx_folder(tmp_path_factory.mktemp("idx") / "d", n_train=64, n_val=100)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = lstmvision.create_model("sequencer2d_tiny", num_classes=10, in_chans=1, img_size=28)
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(1, 28, 28), mean=(0.5,), std=(0.5,),
                                crop_pct=1.0)
    return lstmvision.save_pretrained(model, tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture
def released_s(tmp_path, monkeypatch):
    """`sequencer2d_s.in1k` in the torch.hub cache (what `lstmvision download` leaves there), as a narrowed
    sequencer2d_s: --pretrained finds it offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    torch.manual_seed(3)
    model = lstmvision.create_model("sequencer2d_s", img_size=32, **TINY_S)
    cfg = get_pretrained_cfg("sequencer2d_s")
    path = url_cache_path(cfg["url"], cfg.get("file_name"))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.state_dict()


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def parse_error(capsys, *argv) -> str:
    """stderr of a command line argparse refuses (exit status 2)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 2
    return capsys.readouterr().err


def one_error(rc: int, err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and "Traceback" not in err, err
    assert lines and lines[-1].startswith(f"lstmvision {command}: error: "), err
    return lines[-1]


# ------------------------------------------------------------------------------------- parser, flags
@pytest.mark.parametrize("argv, prog", [
    (["train", "--bogus"], "lstmvision train"),
    (["validate", "--checkpoint", "x", "--bogus", "1"], "lstmvision validate"),
    (["segment", "train", "--bogus"], "lstmvision segment train"),
])
def test_a_bad_flag_is_the_subcommands_error(capsys, argv, prog):
    err = parse_error(capsys, *argv)
    assert err.startswith(f"usage: {prog} ")
    assert err.strip().splitlines()[-1] == f"{prog}: error: unrecognized arguments: {' '.join(argv[argv.index('--bogus'):])}"


def test_every_parser_refuses_abbreviations_and_knows_its_subparsers():
    parser = build_parser("*")
    assert set(parser.commands) == set(COMMANDS) and "download" in COMMANDS
    assert list(COMMANDS).index("download") == list(COMMANDS).index("models") + 1
    seen = [parser, *parser.commands.values()]
    nested = parser.commands["segment"]._subparsers._group_actions[0].choices.values()
    assert all(p.allow_abbrev is False for p in [*seen, *nested])


@pytest.mark.parametrize("command", ["validate", "predict", "export", "robustness"])
def test_model_commands_share_the_weights_vocabulary(command):
    p = build_parser(command).commands[command]
    flags = {s for a in p._actions for s in a.option_strings}
    assert {"-m", "--model", "--pretrained", "--initial-checkpoint", "--checkpoint", "--input-size",
            "--img-size", "-b", "--batch-size"} <= flags
    pretrained = next(a for a in p._actions if "--pretrained" in a.option_strings)
    assert pretrained.nargs == 0  # a switch


def test_train_short_flags_and_input_size(capsys, data):
    rc, out, err = run_cli(capsys, "train", "--data", data, "-m", "sequencer2d_tiny", "-b", 8, "-j", 0,
                           "--input-size", 1, 32, 32, "--print-config")
    assert rc == 0, err
    cfg = yaml.safe_load(out)
    assert (cfg["model"], cfg["batch_size"], cfg["workers"], cfg["in_chans"], cfg["img_size"]) == \
        ("sequencer2d_tiny", 8, 0, 1, 32)
    assert cfg["pretrained"] is False and cfg["initial_checkpoint"] is None
    for extra, needle in [(["--img-size", 28], "disagree"), (["--in-chans", 3], "disagree")]:
        rc, _, err = run_cli(capsys, "train", "--data", data, "--input-size", 1, 32, 32, *extra, "--print-config")
        assert needle in one_error(rc, err, "train")
    rc, _, err = run_cli(capsys, "train", "--data", data, "--input-size", 1, 32, 40, "--print-config")
    assert "square" in one_error(rc, err, "train")


def test_validate_input_size_sets_channels_and_size(capsys, data, saved):
    rc, out, err = run_cli(capsys, "validate", "--checkpoint", saved, "--data", data, "--input-size", 1, 32, 32,
                           "--limit-val", 8, "-j", 0, "-b", 4)
    assert rc == 0, err
    assert "img_size       32" in out
    rc, _, err = run_cli(capsys, "validate", "--checkpoint", saved, "--data", data, "--input-size", 1, 32, 32,
                         "--img-size", 28)
    assert "--input-size 1 32 32 and --img-size 28 disagree" in one_error(rc, err, "validate")


# -------------------------------------------------------------------------------- --pretrained switch
def test_old_pretrained_path_is_one_clear_error(capsys, saved, data):
    for argv in (["train", "--data", data, "--pretrained", saved],
                 ["validate", "--model", "sequencer2d_tiny", "--pretrained", saved],
                 ["predict", "--model", "sequencer2d_tiny", "--pretrained", "w.pth", "x.png"]):
        err = parse_error(capsys, *argv)
        last = err.strip().splitlines()[-1]
        assert "--pretrained is a switch now" in last and "--initial-checkpoint" in last, err


@pytest.mark.parametrize("extra, needle", [
    (["--pretrained"], "sequencer2d_tiny has no released weights"),
    (["--pretrained", "--initial-checkpoint", "x"], "exclude each other"),
])
def test_train_pretrained_errors(capsys, data, extra, needle):
    rc, _, err = run_cli(capsys, "train", "--data", data, "-m", "sequencer2d_tiny", *extra, "--print-config")
    assert needle in one_error(rc, err, "train")


def test_resume_excludes_both_weights_flags(capsys, data, tmp_path):
    run = tmp_path / "runs" / "r"
    rc, _, err = run_cli(capsys, "train", "--data", data, "-m", "sequencer2d_tiny", "--epochs", 1, "-b", 16, "-j", 0,
                         "--limit-train", 16, "--limit-val", 8, "--output", run.parent, "--experiment", "r")
    assert rc == 0, err
    for extra in (["--pretrained"], ["--initial-checkpoint", run / "best"]):
        rc, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", 2, *extra, "--print-config")
        assert "--resume and --" in one_error(rc, err, "train") and "exclude each other" in err


def test_yaml_pretrained_path_says_initial_checkpoint(capsys, data, tmp_path):
    cfg_file = tmp_path / "old.yaml"
    cfg_file.write_text("pretrained: some/weights.pth\n")
    rc, _, err = run_cli(capsys, "train", "--data", data, "--config", cfg_file, "--print-config")
    line = one_error(rc, err, "train")
    assert str(cfg_file) in line and "initial_checkpoint: some/weights.pth" in line
    cfg_file.write_text("initial_checkpoint: some/weights.pth\npretrained: null\n")  # null: earlier versions' off
    rc, out, err = run_cli(capsys, "train", "--data", data, "--config", cfg_file, "--print-config")
    assert rc == 0, err
    assert yaml.safe_load(out)["initial_checkpoint"] == "some/weights.pth"


def test_resuming_a_run_of_an_earlier_version(capsys, data, tmp_path):
    """Runs of earlier versions saved `pretrained: PATH` in config.yaml: resuming them still works."""
    run = tmp_path / "runs" / "old"
    assert main(["train", "--data", str(data), "-m", "sequencer2d_tiny", "--epochs", "1", "-b", "16", "-j", "0",
                 "--limit-train", "16", "--limit-val", "8", "--output", str(run.parent), "--experiment", "old"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved.pop("initial_checkpoint")
    saved["pretrained"] = str(tmp_path / "some" / "weights")
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    capsys.readouterr()
    rc, out, err = run_cli(capsys, "train", "--resume", run, "--epochs", 2, "--print-config")
    assert rc == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["pretrained"] is False and cfg["initial_checkpoint"] is None


def test_train_pretrained_loads_the_tags_weights(released_s, data):
    """build_model passes pretrained=True: the released file, converted, with a new head of the data's classes."""
    cfg = resolve_config(dict(data=str(data), model="sequencer2d_s", model_kwargs=TINY_S_FLAGS, pretrained=True,
                              img_size=32, in_chans=3))
    assert cfg["pretrained"] is True and cfg["initial_checkpoint"] is None
    cfg.update(mean=[0.5], std=[0.5])
    model = build_model(cfg, 10, 3, [str(i) for i in range(10)])
    own = model.state_dict()
    body = [k for k in released_s if not k.startswith("head.")]
    assert body and all(torch.equal(own[k], released_s[k]) for k in body)
    assert model.head.fc.out_features == 10 and model.weights_source.endswith("sequencer2d_s.pth")


def test_train_initial_checkpoint_is_what_pretrained_path_was(saved):
    cfg = dict(DEFAULTS, model="sequencer2d_tiny", initial_checkpoint=str(saved), img_size=28, mean=[0.5],
               std=[0.5])
    model = build_model(cfg, 10, 1, [str(i) for i in range(10)])
    want = lstmvision.create_model(pretrained=saved).state_dict()
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="initial_checkpoint"):
        build_model(dict(cfg, initial_checkpoint=None, pretrained=str(saved)), 10, 1, [str(i) for i in range(10)])


def test_segment_pretrained_loads_the_backbones_tag(released_s):
    cfg = {**DEFAULTS, **RECIPES["upernet-small"], "model": "sequencer2d_s", "model_kwargs": dict(TINY_S),
           "pretrained": True, "img_size": 32}
    seg = create_for_config(cfg, 4, 3)
    own = {k.split(".", 1)[1]: v for k, v in seg.backbone.state_dict().items()}  # BackboneFeatures.<model>.
    shared = [k for k in own if k in released_s]
    assert len(shared) > 10 and all(torch.equal(own[k], released_s[k]) for k in shared)
    assert not all(torch.equal(v, create_for_config(dict(cfg, pretrained=False), 4, 3).backbone.state_dict()[k])
                   for k, v in seg.backbone.state_dict().items())


def test_segment_initial_checkpoint_loads_into_the_backbone(tmp_path):
    torch.manual_seed(5)
    clf = lstmvision.create_model("sequencer2d_s", img_size=32, num_classes=7, **TINY_S)
    lstmvision.save_pretrained(clf, tmp_path / "clf")
    cfg = {**DEFAULTS, **RECIPES["upernet-small"], "model": "sequencer2d_s", "model_kwargs": dict(TINY_S),
           "initial_checkpoint": str(tmp_path / "clf"), "img_size": 32}
    own = {k.split(".", 1)[1]: v for k, v in create_for_config(cfg, 4, 3).backbone.state_dict().items()}
    want = clf.state_dict()
    shared = [k for k in own if k in want]
    assert len(shared) > 10 and all(torch.equal(own[k], want[k]) for k in shared)


def test_segment_pretrained_with_a_timm_backbone_says_initial_checkpoint(capsys, data):
    rc, _, err = run_cli(capsys, "segment", "train", "--data", data, "-m", "timm:resnet18", "--pretrained",
                         "--print-config")
    assert "--initial-checkpoint" in one_error(rc, err, "segment")


def test_validate_pretrained_asks_create_model_for_the_tag(capsys, monkeypatch, data):
    calls = []
    real = loading.create_model

    def spy(spec, pretrained=False, *args, **kwargs):
        calls.append((spec, pretrained))
        return real("sequencer2d_tiny", None, 10, 1)

    monkeypatch.setattr(loading, "create_model", spy)
    rc, _, err = run_cli(capsys, "validate", "-m", "sequencer2d_s", "--pretrained", "--data", data,
                         "--limit-val", 4, "-j", 0)
    assert calls == [("sequencer2d_s", True)]
    for argv, needle in [(["--pretrained"], "give the model name"),
                         (["-m", "sequencer2d_s", "--pretrained", "--initial-checkpoint", "x"], "not both"),
                         (["--checkpoint", "x", "--pretrained", "-m", "sequencer2d_s"], "not both"),
                         (["-m", "sequencer2d_tiny", "--pretrained"], "sequencer2d_tiny has no released weights")]:
        rc, _, err = run_cli(capsys, "validate", *argv, "--data", data)
        assert needle in one_error(rc, err, "validate"), argv


def test_validate_pretrained_offline_uses_the_cache(capsys, released_s, data):
    """`--pretrained` finds the tag's file in the torch.hub cache offline (the narrowed file does not fit the full
    sequencer2d_s: the error names the file, proving it was the one loaded)."""
    rc, _, err = run_cli(capsys, "validate", "-m", "sequencer2d_s", "--pretrained", "--data", data)
    assert "sequencer2d_s.pth" in one_error(rc, err, "validate")


# ---------------------------------------------------------------------------------------- --limit-val
def test_limit_val_takes_the_same_images_in_train_and_validate(capsys, data, tmp_path):
    rc, _, err = run_cli(capsys, "train", "--data", data, "-m", "sequencer2d_tiny", "--epochs", 1, "-b", 16, "-j", 0,
                         "--limit-train", 32, "--limit-val", 40, "--seed", 7, "--output", tmp_path,
                         "--experiment", "lv")
    assert rc == 0, err
    last = list(csv.DictReader(open(tmp_path / "lv" / "summary.csv")))[-1]
    out = tmp_path / "v.json"
    rc, _, err = run_cli(capsys, "validate", "--checkpoint", tmp_path / "lv", "--data", data, "--limit-val", 40,
                         "-j", 0, "--results-file", out)
    assert rc == 0, err
    result = json.loads(out.read_text())
    assert result["images"] == 40
    assert result["top1"] == pytest.approx(float(last["top1"]), abs=1e-6)
    assert result["loss"] == pytest.approx(float(last["val_loss"]), rel=1e-4)


# -------------------------------------------------------------------------------------- --results-file
def test_results_file_csv_and_json(capsys, data, saved, tmp_path):
    base = ["validate", "--checkpoint", saved, "--data", data, "--limit-val", 8, "-j", 0]
    assert run_cli(capsys, *base, "--results-file", tmp_path / "r.csv")[0] == 0
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) == 1 and rows[0]["model"] == "sequencer2d_tiny" and rows[0]["images"] == "8"
    assert run_cli(capsys, *base, "--results-file", tmp_path / "sub" / "r.json")[0] == 0
    result = json.loads((tmp_path / "sub" / "r.json").read_text())
    assert result["top1"] == pytest.approx(float(rows[0]["top1"])) and result["checkpoint"] == str(saved)


@pytest.mark.parametrize("name, needle", [
    ("r.txt", "must end in .csv or .json"),
    ("{file}/r.json", "is a file, not a folder"),
    ("adir", "must end in .csv or .json"),
])
def test_results_file_is_checked_before_evaluating(capsys, saved, tmp_path, name, needle):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    path = tmp_path / name.format(file=tmp_path / "afile")
    # --data does not exist: the results file is refused first, before any model or data is read
    rc, out, err = run_cli(capsys, "validate", "--checkpoint", saved, "--data", tmp_path / "nope", "--results-file",
                           path)
    assert needle in one_error(rc, err, "validate") and out == ""


# ---------------------------------------------------------------------------------------- random weights
WARNING = ("has random weights (no --pretrained, --initial-checkpoint or --checkpoint): its outputs mean nothing")


def test_random_weights_are_said_once(capsys, data, saved, tmp_path):
    rc, _, err = run_cli(capsys, "validate", "-m", "sequencer2d_tiny", "--in-chans", 1, "--num-classes", 10,
                         "--data", data, "--limit-val", 4, "-j", 0)
    assert rc == 0, err
    assert [line for line in err.splitlines() if "random weights" in line] == \
        [f"lstmvision validate: warning: sequencer2d_tiny {WARNING}"]
    rc, _, err = run_cli(capsys, "validate", "--checkpoint", saved, "--data", data, "--limit-val", 4, "-j", 0)
    assert rc == 0 and "random weights" not in err
    img = tmp_path / "x.png"
    Image.new("L", (28, 28), 128).save(img)
    rc, _, err = run_cli(capsys, "predict", "-m", "sequencer2d_tiny", img, "--topk", 1)
    assert rc == 0 and f"lstmvision predict: warning: sequencer2d_tiny {WARNING}" in err
    rc, _, err = run_cli(capsys, "export", "-m", "sequencer2d_tiny", "--output", tmp_path / "m.pt")
    assert rc == 0 and f"lstmvision export: warning: sequencer2d_tiny {WARNING}" in err
    rc, _, err = run_cli(capsys, "resolution-sweep", "-m", "sequencer2d_tiny", "--checkpoint", saved, "--data", data,
                         "--in-chans", 1, "--num-classes", 10, "--sizes", 28, "--limit", 4, "-o", tmp_path / "rs")
    assert rc == 0, err
    assert [line for line in err.splitlines() if "random weights" in line] == \
        [f"lstmvision resolution-sweep: warning: sequencer2d_tiny {WARNING}"]


# ------------------------------------------------------------------------------------------ models
def test_model_table_covers_every_registered_model():
    table = models_cli.read_table()
    missing = sorted(set(list_models()) - set(table))
    assert not missing, (f"{', '.join(missing)} not in src/lstmvision/models/model_table.json: run "
                         f"`python scripts/make_model_table.py {' '.join(missing)}`")
    assert not set(table) - set(list_models()), "the table lists models that are not registered: rerun the script"
    for name, row in table.items():
        assert set(row) == {"model", "params", "gmacs", "img_size", "paper_top1"}, name
        cfg = get_pretrained_cfg(name)
        assert row["img_size"] == cfg["input_size"][-1] and row["paper_top1"] == cfg.get("paper_top1"), name


def test_model_table_matches_the_models():
    table = models_cli.read_table()
    for name in ("sequencer2d_tiny", "vil_tiny", "sequencer2d_s"):
        model = lstmvision.create_model(name)
        assert table[name]["params"] == sum(p.numel() for p in model.parameters()), name


def test_model_table_ships_as_package_data():
    section = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]", 1)[1]
    line = next(x for x in section.splitlines() if x.startswith("lstmvision ="))
    assert '"models/model_table.json"' in line


def test_models_reads_the_table_without_counting(capsys, monkeypatch):
    monkeypatch.setattr(flops, "model_rows", lambda *a, **k: pytest.fail("counted instead of reading the table"))
    rc, out, err = run_cli(capsys, "models", "sequencer2d_s", "--json")
    assert rc == 0 and err == ""
    row = {r["model"]: r for r in json.loads(out)}["sequencer2d_s"]
    assert row["params"] == 27_651_688 and row["gmacs"] == pytest.approx(8.33, abs=0.2) and row["paper_top1"] == 82.3


def test_models_counts_what_the_table_lacks_and_on_request(capsys, monkeypatch):
    counted = []

    def fake_rows(names, img_size=None, macs=True):
        counted.append((list(names), img_size, macs))
        return [dict(model=n, params=1, img_size=img_size or 224, paper_top1=None, gmacs=0.5) for n in names]

    monkeypatch.setattr(flops, "model_rows", fake_rows)
    monkeypatch.setattr(models_cli, "read_table", lambda: {})  # a tree without the table: every model is counted
    rc, out, err = run_cli(capsys, "models", "sequencer2d_[ms]", "--json")
    assert rc == 0 and counted == [(["sequencer2d_m", "sequencer2d_s"], None, True)]
    assert "sequencer2d_m" in err and "scripts/make_model_table.py" in err
    assert {r["model"]: r["params"] for r in json.loads(out)}["sequencer2d_m"] == 1
    counted.clear()
    rc, out, err = run_cli(capsys, "models", "sequencer2d_tiny", "--macs", "--json")
    assert rc == 0 and counted == [(["sequencer2d_tiny"], None, True)] and err == ""
    counted.clear()
    rc, out, err = run_cli(capsys, "models", "sequencer2d_tiny", "--img-size", 112, "--json")
    assert rc == 0 and counted == [(["sequencer2d_tiny"], 112, True)]


def test_models_pretrained_lists_tags_sources_top1_and_license(capsys):
    rc, out, err = run_cli(capsys, "models", "--pretrained", "--json")
    assert rc == 0, err
    rows = {r["tag"]: r for r in json.loads(out)}
    assert set(rows) == set(list_pretrained())
    s = rows["sequencer2d_s.in1k"]
    assert s["hf_hub_id"] == "timm/sequencer2d_s.in1k" and s["top1"] == 82.3 and s["license"] == "apache-2.0"
    assert s["default"] is True and rows["vil2_tiny.in1k_e400"]["url"].endswith(".th")
    rc, out, _ = run_cli(capsys, "models", "--pretrained", "vil2_tiny")
    assert rc == 0 and "vil2_tiny.in1k_e800*" in out and "ml.jku.at" in out and "sequencer" not in out
    rc, _, err = run_cli(capsys, "models", "--pretrained", "nothing_like_this")
    assert "no released weights match" in one_error(rc, err, "models")


def test_models_reads_only_the_table():
    """The table, not a measurement, and no torch import: the answer costs about a second."""
    probe = ("import sys; from lstmvision.cli import main; rc = main(['models']); "
             "print('torch' in sys.modules, rc)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "False 0" and len(lines) == len(list_models()) + 3
