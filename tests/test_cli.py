import json
import subprocess
import sys

from lstmvision.cli import main


def test_models_lists_params_and_macs(capsys):
    assert main(["models", "sequencer2d_s", "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    s = rows["sequencer2d_s"]
    assert s["params"] == 27_651_688
    assert abs(s["gmacs"] - 8.33) <= 8.33 * 0.02  # LSTM work included (spec: 8.33 G)
    assert s["paper_top1"] == 82.3


def test_models_table_and_unknown_pattern(capsys):
    assert main(["models", "v_sequencer*", "--no-macs"]) == 0
    out = capsys.readouterr().out
    assert "v_sequencer_s_pe" in out and "33,114,856" in out
    assert main(["models", "no-such-model"]) == 2
    assert "no model matches" in capsys.readouterr().err


def test_console_entry_point_runs_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "lstmvision", "models", "zzz"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "lstmvision models: error: no model matches 'zzz'"
