"""Run-folder lock and config parsing: two trainings into one run folder, a lock left by a killed process, bad
--model-kwargs and unreadable config files. Each refusal is one line, exit status 2."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine_helpers import write_idx_folder
from lstmvision.cli import main
from lstmvision.data.scenes import make_scenes
from lstmvision.engine.lock import LOCK_NAME, RunFolderBusy, RunLock

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch-size", "16", "--workers", "0", "--warmup-epochs", "0", "--log-interval", "100"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_idx_folder(tmp_path_factory.mktemp("lock") / "tiny", 64, 16)


def _err(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.strip().splitlines() if " warning: " not in line]


def _cmd(data, out, *extra):
    return [sys.executable, "-m", "lstmvision", "train", "--data", str(data), "--output", str(out),
            "--experiment", "r", "--epochs", "1", *TINY, *extra]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", LSTMVISION_PROGRESS="log")


def _wait_for_lock(path: Path, proc: subprocess.Popen, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            info = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if info.get("pid") == proc.pid:
            return info
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no lock taken: {proc.communicate()[0][-3000:]}")


@pytest.mark.slow
def test_second_training_into_a_busy_run_folder_exits_at_once(data, tmp_path, capsys):
    out = tmp_path / "runs"
    first = subprocess.Popen(_cmd(data, out, "--debug-step-delay", "30"), env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        info = _wait_for_lock(out / "r" / LOCK_NAME, first)
        assert info["host"] and info["started"]
        t0 = time.time()
        second = subprocess.run(_cmd(data, out), env=_env(), capture_output=True, text=True, timeout=120)
        err = [line for line in second.stderr.strip().splitlines() if " warning: " not in line]
        assert second.returncode == 2 and len(err) == 1, second.stderr[-3000:]
        assert err[0].startswith("lstmvision train: error: ") and "in use by another training" in err[0], err
        assert f"pid {first.pid}" in err[0] and str(out / "r") in err[0], err
        assert time.time() - t0 < 60
        assert first.poll() is None  # the first one was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # killed: its lock file stays behind, but the OS released the lock; the next run takes it over and says so
    lock = out / "r" / LOCK_NAME
    assert json.loads(lock.read_text())["pid"] == first.pid
    assert main(["train", "--data", str(data), "--output", str(out), "--experiment", "r", "--epochs", "1",
                 *TINY]) == 0
    stdout = capsys.readouterr().out
    assert f"was locked by pid {first.pid}" in stdout and "taken over" in stdout, stdout[-2000:]
    assert not lock.exists()  # released at the end of the run
    assert (out / "r" / "last").is_dir()


@pytest.mark.slow
def test_busy_run_folder_is_one_line_for_train_resume_and_segment_train(data, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--data", str(data), "--output", str(out), "--experiment", "a", "--epochs", "1",
                 *TINY]) == 0
    capsys.readouterr()
    run = out / "a"
    with RunLock.acquire(run) as held:  # another holder (flock: even another open file in this process)
        before = sorted(p.name for p in run.iterdir())
        for argv in (["train", "--resume", str(run), "--epochs", "2", *TINY],
                     ["train", "--data", str(data), "--output", str(out), "--experiment", "a", "--epochs", "1",
                      *TINY]):
            assert main(argv) == 2
            err = _err(capsys)
            assert len(err) == 1 and "in use by another training" in err[0] and f"pid {os.getpid()}" in err[0], err
        assert sorted(p.name for p in run.iterdir()) == before  # nothing recovered, staged or rewritten
        assert held.path.is_file()

    scenes = tmp_path / "scenes"
    make_scenes(scenes, n_train=8, n_val=4, size=48, seed=0, source=data, progress=False)
    with RunLock.acquire(out / "seg"):
        assert main(["segment", "train", "--data", str(scenes), "--epochs", "1", "--output", str(out),
                     "--experiment", "seg", "--img-size", "32", "--seg-base-size", "192", "48", "--batch-size", "4",
                     "--workers", "0", "--decoder-channels", "16"]) == 2
        err = _err(capsys)
        assert len(err) == 1 and err[0].startswith("lstmvision segment: error: ") and "in use" in err[0], err
    # after the release the resume goes on
    assert main(["train", "--resume", str(run), "--epochs", "2", *TINY]) == 0
    assert not (run / LOCK_NAME).exists()


def test_lock_file_unit(tmp_path):
    folder = tmp_path / "new" / "run"
    lock = RunLock.acquire(folder)
    assert folder.is_dir() and lock.stale is None
    with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
        RunLock.acquire(folder)
    lock.release()
    lock.release()  # twice is harmless
    assert not folder.exists()  # created by the lock and left empty: removed again
    # a lock file of a process that died without releasing it: taken over, and named
    folder.mkdir(parents=True)
    (folder / LOCK_NAME).write_text(json.dumps(dict(pid=999999, host="elsewhere", started="2020-01-01T00:00:00")))
    with RunLock.acquire(folder) as lock:
        assert "pid 999999 on elsewhere" in lock.stale_message and "taken over" in lock.stale_message
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert folder.is_dir() and not (folder / LOCK_NAME).exists()  # not created by this lock: kept


# ---------------------------------------------------------------------------------------------- config input
@pytest.mark.parametrize("value, needle", [
    ("depth=[1", "not valid YAML"),
    ('x=!!python/object/apply:os.system ["echo hi"]', "tag"),
    ("=3", "key=value"),
])
def test_bad_model_kwargs_are_one_line(value, needle, tmp_path, capsys):
    rc = main(["train", "--model", "vil2_tiny", "--model-kwargs", value, "--output", str(tmp_path)])
    err = _err(capsys)
    assert rc == 2 and len(err) == 1 and "--model-kwargs" in err[0] and needle in err[0], err
    assert not (tmp_path / "hi").exists() and list(tmp_path.iterdir()) == []


def test_non_positive_model_kwargs_are_one_line(tmp_path, capsys):
    rc = main(["train", "--model", "vil2_tiny", "--model-kwargs", "depth=0", "--output", str(tmp_path)])
    err = _err(capsys)
    assert rc == 2 and len(err) == 1 and "--model-kwargs" in err[0] and "depth must be a positive int" in err[0], err


@pytest.mark.parametrize("model, needle", [("resnet18", "timm:resnet18"), ("sequencer2d_tinny", "sequencer2d_tiny")])
def test_unknown_model_suggests_names(model, needle, tmp_path, capsys):
    rc = main(["train", "--model", model, "--output", str(tmp_path)])
    err = _err(capsys)
    assert rc == 2 and len(err) == 1 and f"unknown model {model!r}" in err[0] and needle in err[0], err
    assert "cannot take" not in err[0]


@pytest.mark.parametrize("content, needle", [
    (b"epochs: 3\nlr: \xff\xfe\n", "not UTF-8 text"),
    (b"epochs: [3\n", "not valid YAML"),
    (b"epochs: !!python/object/apply:os.system ['echo hi']\n", "tag"),
])
def test_bad_config_file_names_the_file(content, needle, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(content)
    rc = main(["train", "--config", str(cfg), "--output", str(tmp_path / "runs")])
    err = _err(capsys)
    assert rc == 2 and len(err) == 1 and str(cfg) in err[0] and needle in err[0], err
