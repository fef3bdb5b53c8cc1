"""Failures that must not lose or poison anything: a diverging run, a full disk, a resume on other data, data
with no readable image. Each ends as one error line, exit status 2."""
import errno
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError

import lstmvision
from engine_helpers import write_idx_folder, write_image_folder
from lstmvision.cli import main
from lstmvision.data import DataError, ImageFolderDataset, build_loader, create_eval_transform, resolve_dataset
from lstmvision.tasks.classify import evaluate

TINY = ["--batch-size", "16", "--workers", "0", "--warmup-epochs", "0", "--log-interval", "100"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_idx_folder(tmp_path_factory.mktemp("fail") / "tiny", 128, 32)


def _err(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def _finite_checkpoint(folder: Path) -> None:
    model = lstmvision.create_model(pretrained=folder).eval()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.isfinite(model(x)).all(), f"{folder} gives non-finite outputs"
    state = torch.load(folder / "state.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for s in state["optimizer"]["state"].values() for v in s.values())


@pytest.mark.slow
def test_diverging_run_names_a_finite_checkpoint(data, tmp_path, capsys):
    rc = main(["train", "--data", str(data), "--output", str(tmp_path), "--experiment", "div", "--epochs", "2",
               *TINY, "--lr", "1e6", "--checkpoint-steps", "1"])
    err = _err(capsys)
    assert rc == 2 and len(err) == 1 and "training stopped" in err[0], err
    m = re.search(r"the last good checkpoint is (\S+)\. ", err[0])
    if m is None:
        assert "no checkpoint had been saved yet" in err[0] and not (tmp_path / "div" / "last").exists()
    else:
        _finite_checkpoint(Path(m.group(1)))


def _full_disk(kind: str):
    """A writer that leaves half a file behind, then fails the way a full disk does."""
    def fail(path):
        Path(path).write_bytes(b"\0" * 100)
        if kind == "safetensors":
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })')
        if kind == "torch":
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 128 vs 64")
        raise OSError(errno.ENOSPC, "No space left on device")
    return fail


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["oserror", "safetensors", "torch"])
def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(data, tmp_path, capsys, monkeypatch, kind):
    calls = {"n": 0}
    real = safetensors.torch.save_file if kind != "torch" else torch.save

    def flaky(obj, path, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 0 wrote best/ and last/; the disk fills up at epoch 1's checkpoint
            return _full_disk(kind)(path)
        return real(obj, path, *a, **kw)

    if kind == "torch":
        monkeypatch.setattr(torch, "save", flaky)
    else:
        monkeypatch.setattr(safetensors.torch, "save_file", flaky)
    rc = main(["train", "--data", str(data), "--output", str(tmp_path), "--experiment", "full", "--epochs", "2",
               *TINY])
    err = _err(capsys)
    run = tmp_path / "full"
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0] and str(run) in err[0], err
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no half-written temp folder or file
    state = torch.load(run / "last" / "state.pth", weights_only=True)
    assert state["epoch"] == 1 and state["step_in_epoch"] == 0  # epoch 0's checkpoint is intact
    _finite_checkpoint(run / "last")
    assert [line.split(",")[0] for line in (run / "summary.csv").read_text().splitlines()[1:]] == ["0"]


@pytest.mark.slow
def test_resume_refuses_other_data_and_reads_the_runs_data(data, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--data", str(data), "--output", str(out), "--experiment", "g", "--epochs", "1",
                 *TINY]) == 0
    run = out / "g"
    rgb3 = write_image_folder(tmp_path / "rgb3", n_per_class=4)  # 3 classes, RGB
    rgb10 = write_image_folder(tmp_path / "rgb10", n_per_class=2, classes=tuple(str(i) for i in range(10)))
    for other, needle in ((rgb3, "classes"), (rgb10, "channels")):
        rc = main(["train", "--resume", str(run), "--epochs", "2", "--data", str(other)])
        err = _err(capsys)
        assert rc == 2 and len(err) == 1 and needle in err[0] and "resume with the run's data" in err[0], err
    state = torch.load(run / "last" / "state.pth", weights_only=True)
    assert state["epoch"] == 1  # nothing was trained on the other data
    # without --data a resume goes on with the run's own data (from its config.yaml), not the default data set
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert torch.load(run / "last" / "state.pth", weights_only=True)["epoch"] == 2


def _corrupt_tree(root: Path) -> Path:
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for k in range(20):
                (root / split / c / f"{k}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root


def test_no_readable_image_is_an_error(tmp_path, capsys):
    root = _corrupt_tree(tmp_path / "broken")
    rc = main(["train", "--data", str(root), "--output", str(tmp_path / "runs"), "--experiment", "b",
               "--epochs", "1", "--img-size", "32", *TINY])
    err = [line for line in _err(capsys) if "warn" not in line.lower()]
    assert rc == 2 and len(err) == 1 and "no readable images in" in err[0] and str(root) in err[0], err
    assert not (tmp_path / "runs" / "b" / "last").exists() and not (tmp_path / "runs" / "b" / "best").exists()

    with pytest.raises(DataError, match=f"no readable images in {root / 'val'}"):  # the data layer's probe
        resolve_dataset(root, "val", img_mode="RGB")
    ds = ImageFolderDataset(root / "val", img_mode="RGB")  # past the probe: evaluate's own guard
    loader = build_loader(ds, create_eval_transform((3, 32, 32), (0.5,) * 3, (0.5,) * 3), 8, training=False)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2))
    with pytest.warns(UserWarning), pytest.raises(DataError, match=f"no readable images in {root / 'val'}"):
        evaluate(model, loader, torch.device("cpu"))
