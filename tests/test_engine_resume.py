"""SIGKILL a training process mid-epoch, resume it, and check that epoch, step, lr and optimizer state continue."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lstmvision
from engine_helpers import write_idx_folder

ROOT = Path(__file__).resolve().parents[1]


def _cmd(data, out, *extra):
    return [sys.executable, "-m", "lstmvision", "train", "--data", str(data), "--output", str(out),
            "--experiment", "r", "--model", "sequencer2d_tiny", "--limit-train", "320", "--limit-val", "64",
            "--epochs", "2", "--batch-size", "32", "--workers", "0", "--warmup-epochs", "1", "--log-interval", "1",
            "--checkpoint-steps", "3", *extra]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    return env


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    data = write_idx_folder(tmp_path / "fashion-mnist", 320, 64)
    out = tmp_path / "runs"
    proc = subprocess.Popen(_cmd(data, out, "--debug-step-delay", "0.25"), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    state_file = out / "r" / "last" / "state.pth"
    killed_state = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state_file.is_file():
            try:
                s = torch.load(state_file, weights_only=True)
            except Exception:  # the file is swapped in atomically, so this should not happen
                raise
            if s["epoch"] == 0 and s["step_in_epoch"] >= 6:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_state = torch.load(state_file, weights_only=True)  # reread: a later save may have landed
                break
        time.sleep(0.05)
    assert killed_state is not None, proc.communicate()[0][-3000:]
    assert killed_state["epoch"] == 0 and 0 < killed_state["step_in_epoch"] < 10, "expected a mid-epoch state"
    k = killed_state["step_in_epoch"]
    assert killed_state["global_step"] == k
    # the checkpoint left by SIGKILL is complete and loads

    lstmvision.create_model(pretrained=out / "r" / "last")

    res = subprocess.run(_cmd(data, out, "--resume", str(out / "r")), env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout
    m = re.search(r"resumed from .* at epoch (\d+) step (\d+) \(global step (\d+), lr ([0-9.e+-]+)\)", log)
    assert m, log[-2000:]
    assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (0, k, k)
    assert abs(float(m.group(4)) - killed_state["lr"]) <= 1e-6 * max(1.0, killed_state["lr"])
    steps = re.findall(r"^epoch (\d+) \[(\d+)/10\] loss \S+ lr (\S+)", log, re.M)
    # it continues at the next step of epoch 0, not at step 1
    assert steps[0][:2] == ("0", str(k + 1)), steps[:3]
    assert len(steps) == 20 - k
    assert float(steps[0][2]) > killed_state["lr"]  # warmup goes on rising instead of restarting at warmup_lr
    final = torch.load(out / "r" / "last" / "state.pth", weights_only=True)
    assert final["epoch"] == 2 and final["global_step"] == 20
    adam_steps = {int(v["step"]) for v in final["optimizer"]["state"].values()}
    assert adam_steps == {20}  # the optimizer state was restored, then stepped 20 - k more times
    rows = (out / "r" / "summary.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]
