"""Failures that must not lose or poison anything: a diverging run, a full disk, a resume on other data, data
with no readable image. Each ends as one error line, exit status 2."""
import errno
import re
from pathlib import Path

import pytest
import torch

from engine_helpers import write_idx_folder, write_image_folder
from lstmvision.cli import main

TINY = ["--batch-size", "16", "--workers", "0", "--warmup-epochs", "0", "--log-interval", "100"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_idx_folder(tmp_path_factory.mktemp("fail") / "tiny", 128, 32)


def _err(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def _finite_checkpoint(folder: Path) -> None:
    import lstmvision

    model = lstmvision.create_model(pretrained=folder).eval()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.isfinite(model(x)).all(), f"{folder} gives non-finite outputs"
    state = torch.load(folder / "state.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for s in state["optimizer"]["state"].values() for v in s.values())


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
            from safetensors import SafetensorError

            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })')
        if kind == "torch":
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 128 vs 64")
        raise OSError(errno.ENOSPC, "No space left on device")
    return fail


@pytest.mark.parametrize("kind", ["oserror", "safetensors", "torch"])
def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(data, tmp_path, capsys, monkeypatch, kind):
    import safetensors.torch

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
