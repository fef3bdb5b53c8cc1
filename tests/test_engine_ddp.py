"""2-process DDP on CPU (gloo) through torchrun: both ranks train in lockstep; only rank 0 writes."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine_helpers import write_idx_folder

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_process_gloo(tmp_path):
    data = write_idx_folder(tmp_path / "fashion-mnist", 256, 64)
    out, ranks = tmp_path / "runs", tmp_path / "ranks"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "lstmvision", "train", "--data", str(data), "--output", str(out), "--model", "sequencer2d_tiny",
           "--epochs", "1", "--batch-size", "32", "--workers", "0", "--device", "cpu", "--log-interval", "2",
           "--debug-rank-dir", str(ranks)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    r0, r1 = (json.loads((ranks / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["global_step"] == r1["global_step"] == 4  # 256 images / (2 ranks x 32)
    assert r0["samples"] == r1["samples"] == 128  # distributed sampling: each rank saw half
    assert r0["first"] == r1["first"] and abs(r0["param_sum"] - r1["param_sum"]) < 1e-9
    runs = list(out.iterdir())
    assert len(runs) == 1  # one run folder, written by rank 0 only
    ckpts = sorted(p.name for p in runs[0].iterdir() if (p / "state.pth").exists() or p.name.startswith("."))
    assert ckpts == ["best", "last"]
    assert res.stdout.count("train: run folder:") == 1  # rank-0 logging
    assert "world 2" in res.stdout
