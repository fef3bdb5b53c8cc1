"""Nothing lost at the end of an epoch: a crash at any point of the checkpoint commit, then a resume, gives every
epoch exactly once in summary.csv, best/ holding the best row's weights, and no temporary entries; a mid-epoch
resume on CPU reproduces the uninterrupted run exactly."""
import csv
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine_helpers import write_idx_folder
from lstmvision.cli import main

TINY = ["--epochs", "3", "--batch-size", "16", "--workers", "0", "--warmup-epochs", "0", "--lr", "4e-3",
        "--log-interval", "100"]


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler of the trainer deals with it."""


def _train(data, out, name, *extra):
    return main(["train", "--data", str(data), "--output", str(out), "--experiment", name, *TINY, *extra])


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "img_s"} for r in csv.DictReader(open(run / "summary.csv"))]


def _kill_at_rename(monkeypatch, when):
    """Make os.replace raise Killed (before renaming) on the call for which when(index, src, dst) is true."""
    real, calls = os.replace, []

    def fake(src, dst, *a, **kw):
        calls.append((Path(src).name, Path(dst).name))
        if when(len(calls) - 1, *calls[-1]):
            raise Killed()
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", fake)
    return calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("commit")
    data = write_idx_folder(tmp / "fm", 128, 32)
    mp = pytest.MonkeyPatch()
    calls = _kill_at_rename(mp, lambda *a: False)
    assert _train(data, tmp / "runs", "ref") == 0
    mp.undo()
    return tmp, data, calls, _rows(tmp / "runs" / "ref")


def _validate(tmp, data, folder) -> dict:
    out = tmp / "val.json"
    assert main(["validate", "--checkpoint", str(folder), "--data", str(data), "--results-file", str(out),
                 "--workers", "0", "--overwrite"]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_kill_at_every_phase_of_the_epoch_commit(reference, monkeypatch):
    tmp, data, calls, ref_rows = reference
    best = max(ref_rows, key=lambda r: float(r["top1"]))  # the first of the best: best/ is not replaced on a tie
    assert best["epoch"] == "1"  # this setup improves at epoch 1: a crash there can lose best/
    summaries = [i for i, (_, dst) in enumerate(calls) if dst == "summary.csv"]
    phases = range(summaries[0] + 1, summaries[1] + 1)  # every rename of epoch 1's commit
    assert len(phases) >= 8
    for k in phases:
        name = f"kill{k}"
        with monkeypatch.context() as mp:
            _kill_at_rename(mp, lambda i, *a, k=k: i == k)
            with pytest.raises(Killed):
                _train(data, tmp / "runs", name)
        run = tmp / "runs" / name
        assert _train(data, tmp / "runs", name, "--resume", str(run)) == 0, k
        assert _rows(run) == ref_rows, (k, calls[k])  # every epoch exactly once, as without the crash
        res = _validate(tmp, data, run / "best")
        assert abs(res["top1"] - float(best["top1"])) < 1e-3 and abs(res["loss"] - float(best["val_loss"])) < 1e-5, \
            (k, calls[k], res)
        assert not [p.name for p in run.iterdir() if p.name.startswith(".")], (k, calls[k])


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_mid_epoch_resume_reproduces_the_uninterrupted_run(reference, monkeypatch):
    tmp, data, _, _ = reference
    extra = ["--epochs", "2", "--checkpoint-steps", "3"]  # 8 steps per epoch: saves at steps 3 and 6
    assert _train(data, tmp / "runs", "whole", *extra) == 0
    published = []

    def after_second_publish(i, src, dst):
        if (src, dst) == (".last.new", "last"):
            published.append(i)
            return False
        return len(published) == 2  # killed right after last/ of epoch 0 step 6 was saved

    with monkeypatch.context() as mp:
        _kill_at_rename(mp, after_second_publish)
        with pytest.raises(Killed):
            _train(data, tmp / "runs", "cut", *extra)
    cut = tmp / "runs" / "cut"
    state = torch.load(cut / "last" / "state.pth", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (0, 6)
    assert _train(data, tmp / "runs", "cut", *extra, "--resume", str(cut)) == 0
    whole = tmp / "runs" / "whole"
    assert _rows(cut) == _rows(whole)  # train_loss covers the whole epoch, not the steps after the resume
    a, b = _weights(whole / "last"), _weights(cut / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
