"""Multi-node training proven on one host: two torchrun launchers (`--nnodes 2`, one process each, c10d
rendezvous on 127.0.0.1, gloo) end with the weights of one launcher running two processes, and their validation
equals a single-process `lstmvision validate`. Elastic restarts: under `torchrun --max-restarts 1`, a worker
killed mid-epoch restarts the group, which resumes its own run folder from the last checkpoint and ends with the
uninterrupted run's weights."""
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine_helpers import write_idx_folder
from lstmvision.cli import main
from lstmvision.engine.run import (
    SHARED_STORE_WARNING,
    choose_run_dir,
    elastic_marker,
    elastic_restart,
    forget_elastic_run,
    shared_store_restarts,
)

ROOT = Path(__file__).resolve().parents[1]

N_TRAIN, N_VAL = 320, 101  # 5 steps of 2 ranks x 32; an odd validation count (no padded duplicates allowed)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
                LSTMVISION_PROGRESS="log")


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "lstmvision", "train", "--data", str(data), "--output", str(out), "--model", "sequencer2d_tiny",
            "--img-size", "28", "--epochs", "1", "--batch-size", "32", "--workers", "0", "--device", "cpu",
            "--log-interval", "1", "--checkpoint-steps", "2", *extra]


def _torchrun(*launcher: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "last" / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def _top1(run_dir: Path) -> float:
    with open(run_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    return float(rows[0]["top1"])


def _check(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def _children(ppid: int) -> dict[int, list[bytes]]:
    """The processes whose parent is `ppid`, with their environments."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                out[int(proc.name)] = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
    return out


def _kill_launcher(proc: subprocess.Popen) -> None:
    """SIGKILL a torchrun launcher and the workers it started (they run in sessions of their own)."""
    for pid in _children(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.wait()


def _run_together(cmds: list[list[str]], logs: Path, timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """Start every command at once and wait for all; when one fails (or time runs out) the others are killed
    (a launcher whose peer is gone waits for it) and the failure shows every command's output."""
    logs.mkdir(parents=True, exist_ok=True)
    files = [(open(logs / f"{i}.out", "w+"), open(logs / f"{i}.err", "w+")) for i in range(len(cmds))]
    procs = [subprocess.Popen(cmd, env=_env(), stdout=o, stderr=e, text=True) for cmd, (o, e) in zip(cmds, files)]
    deadline = time.time() + timeout
    while time.time() < deadline and any(p.poll() is None for p in procs):
        if any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.2)
    for p in procs:
        _kill_launcher(p)
    results = []
    for cmd, p, (o, e) in zip(cmds, procs, files):
        o.seek(0), e.seek(0)
        results.append(subprocess.CompletedProcess(cmd, p.returncode, o.read(), e.read()))
        o.close(), e.close()
    if any(r.returncode != 0 for r in results):
        raise AssertionError("\n".join(f"--- {i}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
                                       for i, r in enumerate(results)))
    return results


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_idx_folder(tmp_path_factory.mktemp("multinode") / "fashion-mnist", N_TRAIN, N_VAL)


@pytest.fixture
def torchelastic(monkeypatch):
    """Pretend to be a torchrun worker of rendezvous `job/1` (one process); returns a setter of the restart
    count."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job/1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    return lambda n: monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(n))


def test_no_marker_outside_torchelastic(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    cfg = dict(output=str(tmp_path), experiment=None, model="timm:resnet18", img_size=28)
    run_dir, restarted = choose_run_dir(cfg, False)
    assert run_dir.parent == tmp_path and run_dir.name.endswith("-timm-resnet18-28") and not restarted
    assert elastic_marker(tmp_path) is None and elastic_restart() == 0 and list(tmp_path.iterdir()) == []


def test_restart_takes_the_first_attempts_folder(tmp_path, torchelastic):
    cfg = dict(output=str(tmp_path / "runs"), experiment=None, model="sequencer2d_tiny", img_size=28)
    first, restarted = choose_run_dir(cfg, False)
    marker = tmp_path / "runs" / ".torchelastic-job_1"
    assert elastic_marker(cfg["output"]) == marker and not restarted
    assert marker.read_text().strip() == first.name
    torchelastic(1)
    cfg["experiment"] = "another-name"  # whatever a restart would name: it takes the recorded folder
    assert choose_run_dir(cfg, True) == (first, True) and elastic_restart() == 1
    forget_elastic_run(tmp_path / "runs" / "another-name")  # not the job's folder: the marker stays
    assert marker.is_file()
    forget_elastic_run(first)
    assert not marker.exists()
    assert choose_run_dir(cfg, True) == (tmp_path / "runs" / "another-name", False)  # no marker: a new run


def test_shared_store_restarts_are_warned(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    assert shared_store_restarts() and "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in SHARED_STORE_WARNING
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 was set
    assert not shared_store_restarts()
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    assert not shared_store_restarts()


@pytest.mark.slow
def test_restart_without_checkpoint_starts_again_in_its_folder(tmp_path, torchelastic, capsys):
    data = write_idx_folder(tmp_path / "fashion-mnist", 64, 32)
    runs = tmp_path / "runs"
    (runs / "first").mkdir(parents=True)
    (runs / "first" / "config.yaml").write_text("written by the killed attempt\n")
    (runs / ".torchelastic-job_1").write_text("first\n")
    torchelastic(1)
    assert main(["train", "--data", str(data), "--output", str(runs), "--model", "sequencer2d_tiny", "--epochs",
                 "1", "--batch-size", "32", "--workers", "0", "--img-size", "28"]) == 0
    out = capsys.readouterr().out
    assert f"torchelastic restart 1: {runs / 'first'} holds no checkpoint yet; starting the run again" in out
    assert sorted(p.name for p in runs.iterdir()) == ["first"]  # trained in the recorded folder; marker removed
    assert (runs / "first" / "last" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory) -> Path:
    """One launcher, two processes, not interrupted: the reference run folder."""
    out = tmp_path_factory.mktemp("baseline")
    cmd = _torchrun("--nnodes", "1", "--nproc-per-node", "2", "--master-port", str(_free_port()),
                    *_train_args(data, out, "--experiment", "base"))
    _check(subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300))
    return out / "base"


@pytest.mark.slow
def test_two_nodes_on_one_host_equal_one_node(data, baseline, tmp_path):
    out, port = tmp_path / "runs", _free_port()
    launchers = [_torchrun("--nnodes", "2", "--node-rank", str(node_rank), "--nproc-per-node", "1",
                           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "mn-test",
                           *_train_args(data, out, "--experiment", "nodes")) for node_rank in (0, 1)]
    results = _run_together(launchers, tmp_path / "logs")
    assert sum("world 2" in res.stdout for res in results) == 1  # rank 0 alone logs
    assert sorted(p.name for p in out.iterdir()) == ["nodes"]  # one run folder; no rendezvous leftovers
    _assert_same_weights(out / "nodes", baseline)
    assert _top1(out / "nodes") == _top1(baseline)
    # the 2-rank validation (101 images split over the ranks) equals one process over all of them
    report = tmp_path / "val.json"
    cmd = [sys.executable, "-m", "lstmvision", "validate", "--checkpoint", str(out / "nodes" / "last"), "--data",
           str(data), "--workers", "0", "--device", "cpu", "--results-file", str(report)]
    _check(subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300))
    single = json.loads(report.read_text())
    assert single["images"] == N_VAL
    assert abs(single["top1"] - _top1(out / "nodes")) < 1e-3


def _worker_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of the torchrun worker of global rank `rank` (a child of the launcher), or None."""
    tag = f"RANK={rank}".encode()
    return next((pid for pid, environ in _children(launcher_pid).items() if tag in environ), None)


def _kill_worker_after_checkpoint(launcher: subprocess.Popen, out: Path, rank: int) -> dict:
    """SIGKILL the worker of `rank` once a mid-epoch checkpoint is in the (only) run folder of `out`; the state of
    the checkpoint the restarted group will find."""
    deadline = time.time() + 180
    while time.time() < deadline and launcher.poll() is None:
        states = list(out.glob("*/last/state.pth"))
        if states:
            state = torch.load(states[0], weights_only=True)
            pid = _worker_pid(launcher.pid, rank)
            if state["step_in_epoch"] >= 2 and pid is not None:
                os.kill(pid, signal.SIGKILL)
                while _worker_pid(launcher.pid, rank) == pid:  # until the launcher has reaped it
                    time.sleep(0.05)
                return torch.load(states[0], weights_only=True)  # reread: a later save may have landed
        time.sleep(0.05)
    _kill_launcher(launcher)
    raise AssertionError("no mid-epoch checkpoint to kill a worker after:\n" + launcher.communicate()[0][-3000:])


@pytest.mark.slow
def test_elastic_restart_resumes_its_run(data, baseline, tmp_path):
    out = tmp_path / "runs"
    cmd = _torchrun("--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
                    *_train_args(data, out, "--debug-step-delay", "0.5"))  # a dated run folder: no --experiment
    # torch's default (sharing the rendezvous store with the workers) can hang a restarted group
    env = dict(_env(), TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    launcher = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        killed = _kill_worker_after_checkpoint(launcher, out, rank=0)
        log, _ = launcher.communicate(timeout=240)
    finally:
        _kill_launcher(launcher)
    assert launcher.returncode == 0, log[-5000:]
    k = killed["step_in_epoch"]
    assert killed["epoch"] == 0 and 2 <= k < 5, "expected a mid-epoch checkpoint"
    runs = sorted(p.name for p in out.iterdir())
    assert len(runs) == 1, runs  # the restarted group went on in the same run folder; the job's marker is gone
    run_dir = out / runs[0]
    assert "torchelastic restart 1: resuming" in log, log[-3000:]
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in log  # no warning: the store is not shared
    assert f"resumed from {run_dir / 'last'} at epoch 0 step {k} (global step {k}," in log, log[-3000:]
    after = log.split("torchelastic restart 1")[1]
    assert [int(s) for s in re.findall(r"^epoch 0 \[(\d+)/5\]", after, re.M)] == list(range(k + 1, 6))
    # the lock of the killed rank 0 was taken over by the restarted one
    assert log.count("ended without releasing it (killed?); the lock is taken over") == 1
    _assert_same_weights(run_dir, baseline)
    assert _top1(run_dir) == _top1(baseline)
