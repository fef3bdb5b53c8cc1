"""User mistakes end as one `lstmvision CMD: error: ...` line and exit status 2, never a traceback; values
that used to be accepted silently are refused; warnings are one clean line; saved files get normal modes."""
import importlib.util
import json
import os
import shutil
import stat

import pytest
import yaml
from PIL import Image

import lstmvision
from engine_helpers import write_idx_folder, write_image_folder
from lstmvision.cli import main
from lstmvision.engine.settings import TASK_WORDS
from lstmvision.models.detection import create_detector
from lstmvision.weights import save_pretrained


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("LSTMVISION_DEBUG", raising=False)


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
    return write_idx_folder(tmp_path_factory.mktemp("data") / "d", 32, 16)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return save_pretrained(lstmvision.create_model("sequencer2d_tiny"), tmp_path_factory.mktemp("m") / "tiny")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, err: str, command: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith(f"lstmvision {command}: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def _train(data, *extra):
    return ("train", "--data", data, "--epochs", 1, "--batch-size", 8, "--img-size", 28, "--workers", 0,
            "--limit-train", 16, "--limit-val", 8, "--print-config", *extra)


@pytest.mark.parametrize("extra, needle", [
    (["--smoothing", "1.5"], "--smoothing"),
    (["--opt-betas", "0.9"], "--opt-betas"),
    (["--aa", "bogus"], "--aa 'bogus'"),
    (["--interpolation", "bogus"], "--interpolation"),
    (["--train-interpolation", "bogus"], "--train-interpolation"),
    (["--in-chans", "2"], "--in-chans"),
    (["--model-kwargs", "foo=1"], "--model-kwargs"),
    (["--model", "vil2_tiny", "--img-size", "8"], "--img-size 8"),
    (["--opt", "bogus"], "--opt"),
    # values that used to be accepted silently
    (["--limit-train", "0"], "--limit-train"),
    (["--limit-train", "-1"], "--limit-train"),
    (["--limit-val", "0"], "--limit-val"),
    (["--crop-pct", "0"], "--crop-pct"),
    (["--scale", "2", "1"], "--scale"),
    (["--scale", "0.9", "0.5"], "--scale"),
    (["--hflip", "2"], "--hflip"),
    (["--reprob", "5"], "--reprob"),
    (["--layer-decay", "-1"], "--layer-decay"),
    (["--mean", "0.5", "0.5", "0.5"], "--mean has 3 values"),  # the idx data is grayscale
    (["--std", "0"], "--std"),
])
def test_train_settings(capsys, idx_data, extra, needle):
    rc, _, err = run_cli(capsys, *_train(idx_data, *extra))
    assert_user_error(rc, err, "train", needle)


def test_valid_settings_still_pass(capsys, idx_data, tmp_path):
    cfg_file = tmp_path / "ok.yaml"
    cfg_file.write_text("lr: 1e-3\nepochs: 2\nscale: [0.5, 1]\nmean: 0.5\n")  # YAML reads 1e-3 as text
    rc, out, err = run_cli(capsys, *_train(idx_data, "--config", cfg_file, "--aa", "rand-m9-mstd0.5-inc1-mmax9",
                                           "--in-chans", "3", "--mean", "0.5", "0.4", "0.3"))
    assert rc == 0, err

    cfg = yaml.safe_load(out)
    assert cfg["lr"] == 1e-3 and cfg["epochs"] == 1 and cfg["scale"] == [0.5, 1.0]


@pytest.mark.parametrize("text, needle", [
    ('lr: "abc"\n', "--lr must be a number"),
    ("epochs: 2.5\n", "--epochs must be an integer"),
    ("scale: [0.5]\n", "--scale takes 2 values"),
    ("ema: maybe\n", "--ema must be true or false"),
])
def test_yaml_values_are_type_checked(capsys, idx_data, tmp_path, text, needle):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text(text)
    rc, _, err = run_cli(capsys, *_train(idx_data, "--config", cfg_file))
    assert_user_error(rc, err, "train", str(cfg_file), needle)


def test_unknown_device(capsys, idx_data, saved_model):
    rc, _, err = run_cli(capsys, "train", "--data", idx_data, "--epochs", 1, "--limit-train", 8, "--device", "foo")
    assert_user_error(rc, err, "train", "--device 'foo'")
    rc, _, err = run_cli(capsys, "validate", "--checkpoint", saved_model, "--data", idx_data, "--device", "foo")
    assert_user_error(rc, err, "validate", "--device 'foo'")


def test_all_corrupt_data(capsys, tmp_path, saved_model):
    root = write_image_folder(tmp_path / "imgs", n_per_class=2)
    for img in root.rglob("*.png"):
        img.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rc, _, err = run_cli(capsys, "train", "--data", root, "--epochs", 1, "--batch-size", 2, "--workers", 0,
                         "--output", tmp_path / "runs")
    assert_user_error(rc, err, "train", "no readable images in", "train")
    rc, out, err = run_cli(capsys, "validate", "--checkpoint", saved_model, "--data", root, "--workers", 0,
                           "--results-file", tmp_path / "r.json")
    assert_user_error(rc, err, "validate", "no readable images in", "val")
    assert "images" not in out


@pytest.mark.parametrize("output, needle", [
    ("{file}/model.pt", "is a file, not a folder"),          # TorchScript where a folder is a regular file
    ("/sys/model.pt", "cannot write /sys/model.pt: permission denied"),  # TorchScript into a read-only place
    ("/sys/lstmvision-new/model.onnx", "cannot write"),       # ONNX into a new folder on a read-only fs
    ("{file}/sub/model.onnx", "is a file, not a folder"),
])
def test_export_write_failures(capsys, tmp_path, output, needle):
    if output.startswith("/sys") and not os.path.ismount("/sys"):
        pytest.skip("no sysfs at /sys (where even root cannot create files)")
    a_file = tmp_path / "somefile"
    a_file.write_text("not a folder")
    rc, _, err = run_cli(capsys, "export", "--model", "sequencer2d_tiny", "--output",
                         output.format(file=a_file))
    assert_user_error(rc, err, "export", needle)


def test_broken_config_json_is_named(capsys, tmp_path, saved_model, idx_data):
    broken = tmp_path / "broken"
    shutil.copytree(saved_model, broken)
    (broken / "config.json").write_text("{not json")
    rc, _, err = run_cli(capsys, "validate", "--checkpoint", broken, "--data", idx_data)
    assert_user_error(rc, err, "validate", str(broken / "config.json"))


def test_wrong_architecture_speaks_neutrally(capsys, saved_model, idx_data):
    rc, _, err = run_cli(capsys, "validate", "--checkpoint", saved_model, "--model", "sequencer2d_small32",
                         "--data", idx_data)
    assert_user_error(rc, err, "validate", "sequencer2d_tiny", "cannot load into sequencer2d_small32")
    assert "create_model(" not in err


def test_skip_warnings_are_one_clean_line(capsys, tmp_path, saved_model):
    root = write_image_folder(tmp_path / "imgs", n_per_class=2, corrupt=1)
    rc, out, err = run_cli(capsys, "validate", "--checkpoint", saved_model, "--data", root / "train",
                           "--num-classes", 10, "--workers", 0, "--results-file", tmp_path / "r.json")
    assert rc == 0, err
    warn = [line for line in err.splitlines() if "broken0.png" in line]
    assert warn and all(line.startswith("lstmvision validate: warning: skipping unreadable image") for line in warn)
    assert "UserWarning" not in err and "warnings.warn" not in err and ".py:" not in err
    assert json.loads((tmp_path / "r.json").read_text())["skipped"] == 1


def test_saved_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        folder = save_pretrained(lstmvision.create_model("sequencer2d_tiny"), tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize("extra, needle", [
    (["--interpolation", "bogus"], "--interpolation"),
    (["--crop-pct", "0"], "--crop-pct"),
    (["--model", "vil2_tiny", "--img-size", "8"], "--img-size 8"),
    (["--limit", "0"], "at least 1"),
])
def test_validate_settings(capsys, idx_data, saved_model, extra, needle):
    source = ["--checkpoint", saved_model] if "--model" not in extra else []
    rc, _, err = run_cli(capsys, "validate", *source, "--data", idx_data, "--workers", 0, *extra)
    assert_user_error(rc, err, "validate", needle)


@pytest.mark.parametrize("extra, needle", [
    (["--checkpoint", "{saved}", "--interpolation", "bogus"], "--interpolation"),
    (["--model", "vil2_tiny", "--img-size", "8"], "--img-size 8"),
])
def test_predict_settings(capsys, tmp_path, saved_model, extra, needle):
    Image.new("L", (28, 28), 128).save(tmp_path / "x.png")
    extra = [str(a).format(saved=saved_model) for a in extra]
    rc, _, err = run_cli(capsys, "predict", *extra, tmp_path / "x.png")
    assert_user_error(rc, err, "predict", needle)


def test_unknown_timm_model_is_one_line(capsys, idx_data, tmp_path):
    rc, _, err = run_cli(capsys, "train", "--model", "timm:not_a_model", "--data", idx_data,
                         "--output", str(tmp_path / "runs"), "--epochs", "1")
    assert_user_error(rc, err, "train", "unknown timm model 'timm:not_a_model'")


def test_decay_milestones_must_increase(capsys, idx_data):
    rc, _, err = run_cli(capsys, *_train(idx_data, "--sched", "multistep", "--decay-milestones", 5, 2))
    assert_user_error(rc, err, "train", "--decay-milestones must be increasing", "5 2")
    rc, _, err = run_cli(capsys, *_train(idx_data, "--sched", "multistep", "--decay-milestones", 2, 2))
    assert_user_error(rc, err, "train", "--decay-milestones")
    assert run_cli(capsys, *_train(idx_data, "--sched", "multistep", "--decay-milestones", 2, 5))[0] == 0


@pytest.mark.parametrize("task, other", [("detect", ["train"]), ("segment", ["detect", "train"]),
                                         ("classify", ["segment", "train"])])
def test_a_run_resumes_only_under_its_own_command(tmp_path, capsys, task, other):
    """A --resume of another task's run (a detection run under `train`) is refused, naming the right command."""
    command = {"classify": ["train"], "segment": ["segment", "train"], "detect": ["detect", "train"]}[task]
    run = tmp_path / "run"
    save_pretrained(lstmvision.create_model("sequencer2d_tiny"), run / "last")
    assert main([*command, "--print-config"]) == 0
    (run / "config.yaml").write_text(capsys.readouterr().out)
    rc, _, err = run_cli(capsys, *other, "--resume", run, "--print-config")
    assert_user_error(rc, err, other[0], f"a {TASK_WORDS[task]} run",
                      f"`{' '.join(['lstmvision', *command])}` --resume {run}")


@pytest.mark.parametrize("command, recipe, data", [(["detect", "train"], "detect-small", "COCO-layout"),
                                                   (["segment", "train"], "upernet-small", "ADE20K-layout"),
                                                   (["train"], "sequencer-small", "fashion-mnist")])
def test_train_help_shows_the_tasks_own_defaults(capsys, command, recipe, data):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {recipe}" in text and data in text
    if command != ["train"]:
        assert "sequencer-small" not in text and "fashion-mnist)" not in text


def test_onnx_export_without_the_extra_names_it(capsys, saved_model, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    rc, _, err = run_cli(capsys, "export", "--checkpoint", saved_model, "-o", tmp_path / "m.onnx")
    assert_user_error(rc, err, "export", "needs onnx", "pip install 'lstmvision[export]'")
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_a_detector_in_one_line(capsys, tmp_path):
    det = create_detector("sequencer2d_tiny", "fasterrcnn", 3, img_size=64, fpn_channels=32)
    det.pretrained_cfg = dict(det.pretrained_cfg, task="detect")
    folder = save_pretrained(det, tmp_path / "det")
    for out in ("det.onnx", "det.pt"):
        rc, _, err = run_cli(capsys, "export", "--checkpoint", folder, "-o", tmp_path / out)
        assert_user_error(rc, err, "export", "is a detection model", "classification models only")
