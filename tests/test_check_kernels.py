"""`lstmvision check-kernels` on CPU: every available backend of both recurrences against the math reference."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lstmvision.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _rows(path):
    report = json.loads(path.read_text())
    return report, {(r["op"], r["backend"], r["dtype"]): r for r in report["rows"]}


def test_fp32_rows_exist_and_pass(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    path = tmp_path / "check.json"
    assert main(["check-kernels", "--device", "cpu", "--dtype", "fp32", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "fwd abs err" in out and "0 failed" in out
    report, rows = _rows(path)
    assert report["passed"] and report["device"] == "cpu"
    for op in ("rnn2d lstm bidir", "rnn2d gru bidir", "rnn2d rnn bidir", "rnn2d lstm unidir"):
        for backend in ("module", "fused"):
            r = rows[op, backend, "fp32"]
            assert r["status"] == "pass" and r["fwd_abs_err"] < 1e-5 and r["grad_rel_err"] < 1e-5 and r["ms"] > 0
        assert rows[op, "triton", "fp32"]["status"] == "unavailable"  # no CUDA, no interpreter: not a failure
    for backend in ("parallel", "fused", "chunkwise", "recurrent"):
        assert rows["mlstm", backend, "fp32"]["status"] == "pass"


def test_bf16_rows_all_pass_and_exit_0(tmp_path, capsys):
    """Every bf16 row of every backend available here passes, so the command exits 0; a failed row fails this test."""
    path = tmp_path / "check.json"
    assert main(["check-kernels", "--dtype", "bf16", "--json", str(path)]) == 0, capsys.readouterr().out
    report, rows = _rows(path)
    assert report["passed"] and {key[2] for key in rows} == {"bf16"}
    failed = [r for r in report["rows"] if r["status"] not in ("pass", "unavailable")]
    assert not failed, failed
    expected = [(op, b) for op in ("rnn2d lstm bidir", "rnn2d gru bidir", "rnn2d rnn bidir", "rnn2d lstm unidir")
                for b in ("module", "fused")]
    expected += [("mlstm", b) for b in ("parallel", "fused", "factored", "chunkwise", "recurrent")]
    for op, backend in expected:  # available on every CPU: none of them may hide as "unavailable"
        assert rows[op, backend, "bf16"]["status"] == "pass", rows[op, backend, "bf16"]
    assert "runs fused" in rows["mlstm", "factored", "bf16"]["note"]


@pytest.mark.parametrize("argv", [["--device", "nope"], ["--dtype", "fp16"], ["--dtype", "fp8"]])
def test_bad_input_is_exit_2(argv, capsys):
    assert main(["check-kernels", *argv]) == 2
    assert "check-kernels: error:" in capsys.readouterr().err


@pytest.mark.slow
def test_triton_rows_under_the_interpreter(tmp_path):
    pytest.importorskip("triton")
    path = tmp_path / "check.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "lstmvision", "check-kernels", "--dtype", "fp32", "--json", str(path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _, rows = _rows(path)
    for op in ("rnn2d lstm bidir", "rnn2d lstm unidir", "mlstm"):
        assert rows[op, "triton", "fp32"]["status"] == "pass"
    assert rows["rnn2d gru bidir", "triton", "fp32"]["status"] == "unavailable"  # LSTM only
