"""benchmarks/gpu_suite.sh is the one call a GPU session makes: its CPU rehearsal runs every step with tiny shapes,
so that the device call cannot fail on a typo; every JSON it writes names the command, the device and the
versions."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lstmvision.ops import _flashrnn, _mlstm_kernels

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"
RESULTS = ROOT / "benchmarks" / "results"
LIBRARY_BACKENDS = ("flashrnn-", "mlstm_kernels-")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "LSTMVISION_KERNELS",
                                                           "LSTMVISION_MLSTM_BACKEND")}
    return {**env, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}


def test_syntax_help_and_bad_arguments():
    assert subprocess.run(["bash", "-n", str(SUITE)], capture_output=True).returncode == 0
    out = subprocess.run(["bash", str(SUITE), "--help"], capture_output=True, text=True, env=_env())
    assert out.returncode == 0 and "--rehearse-cpu" in out.stdout
    bad = subprocess.run(["bash", str(SUITE), "--nope"], capture_output=True, text=True, env=_env())
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cpu_rehearsal_runs_every_step(tmp_path):
    out = tmp_path / "suite"
    before = sorted(RESULTS.rglob("*"))
    proc = subprocess.run(["bash", str(SUITE), "--rehearse-cpu", "--out", str(out)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=840)
    log = proc.stdout + proc.stderr
    summary = log.split("== gpu_suite summary", 1)
    assert len(summary) == 2, log[-5000:]
    steps = dict(re.findall(r"^  (\S+): (.*)$", summary[1], re.M))
    expected = ["env", "check-kernels", "memory", "sequencer2d_tiny-infer-bf16-bs2", "sequencer2d_tiny-train-bf16-bs2",
                "vil_tiny-infer-bf16-bs2", "vil_tiny-train-bf16-bs2", "rnn2d-layer-infer", "rnn2d-layer-train", "check-kernels-flashrnn-cuda", "sequencer2d_tiny-infer-bf16-bs2-flashrnn-cuda",
                "sequencer2d_tiny-train-bf16-bs2-flashrnn-cuda"]
    assert list(steps) == expected, summary[1]
    # check-kernels exits 1 when a row fails (a finding, not a suite error); our library rows must not fail
    report = json.loads((out / "check-kernels.json").read_text())
    assert report["command"].startswith("lstmvision check-kernels") and report["versions"]["torch"]
    failed = [r for r in report["rows"] if r["status"] == "fail"]
    assert steps["check-kernels"].startswith("ok" if not failed else "FAILED (exit 1"), steps["check-kernels"]
    assert not [r for r in failed if r["backend"].startswith(LIBRARY_BACKENDS)], failed
    assert proc.returncode == (1 if failed else 0), summary[1]
    for name, status in steps.items():
        if name != "check-kernels":
            assert status.startswith("ok"), (name, status, (out / "logs" / f"{name}.log").read_text()[-3000:])
    written = set(re.findall(r"^  (\S+\.json)$", summary[1], re.M))
    assert {str(out / f"{n}.json") for n in expected if n != "memory"} | {str(out / "memory" / "memory.json")} \
        <= written
    for path in map(Path, written):
        data = json.loads(path.read_text())
        meta = data.get("suite", data)
        assert meta.get("command") and meta.get("versions") and meta.get("device"), path
    bench = json.loads((out / "sequencer2d_tiny-train-bf16-bs2.json").read_text())
    results = {r["label"]: r for r in bench["results"]}
    assert results["ref:sequencer2d_tiny"]["status"] == "ok"
    assert results["sequencer2d_tiny@fused"]["status"] == "ok"
    assert results["sequencer2d_tiny@flashrnn-triton"]["status"].startswith("unavailable")  # CPU, no interpreter
    assert "sequencer2d_tiny@fused / ref:sequencer2d_tiny" in bench["ratios"]
    vil = {r["label"]: r for r in json.loads((out / "vil_tiny-infer-bf16-bs2.json").read_text())["results"]}
    for backend in ("parallel", "chunkwise"):
        assert vil[f"vil_tiny@{backend}"]["status"] == "ok", vil[f"vil_tiny@{backend}"]
    assert vil["timm:deit_small_patch16_224"]["status"] == "ok"
    if _flashrnn.available():
        fl = results["sequencer2d_tiny@flashrnn-vanilla_fwbw"]
        assert fl["status"] == "ok" and fl["max_abs_logit_diff_vs_ref"] < 0.1  # bf16 autocast
        assert bench["versions"]["flashrnn"]
    if _mlstm_kernels.available():
        for backend in ("mlstm_kernels-chunkwise-native", "mlstm_kernels-parallel-native"):
            assert vil[f"vil_tiny@{backend}"]["status"] == "ok", vil[f"vil_tiny@{backend}"]
    assert sorted(RESULTS.rglob("*")) == before  # the rehearsal writes nothing into benchmarks/results
