"""`lstmvision benchmark` end to end on CPU (tiny run)."""
import json

import pytest

from lstmvision.cli import main
from lstmvision.commands.benchmark import kernels_ctx, parse_spec
from lstmvision.ops.dispatch import get_backend
from lstmvision.ops.mlstm import resolve_mlstm_backend


@pytest.mark.slow
def test_benchmark_cpu_json_ratio_and_macs(tmp_path, capsys):
    path = tmp_path / "out.json"
    argv = ["benchmark", "--model", "sequencer2d_s", "--compare", "ref:sequencer2d_s", "--compare",
            "timm:sequencer2d_s", "--batch-size", "1", "--img-size", "224", "--warmup", "0", "--iters", "1",
            "--device", "cpu", "--json", str(path)]
    assert main(argv) == 0
    assert "ratio sequencer2d_s / timm:sequencer2d_s" in capsys.readouterr().out
    report = json.loads(path.read_text())
    for key in ("command", "device", "versions", "settings", "results", "baselines", "ratios"):
        assert key in report
    assert report["command"].startswith("lstmvision benchmark --model sequencer2d_s")
    assert report["versions"]["torch"] and report["versions"]["timm"]
    ours = report["results"][0]
    assert abs(ours["gmacs"] - 8.33) <= 8.33 * 0.02  # LSTM work included
    assert ours["img_per_s"] > 0 and ours["params"] == 27_651_688 and "cpu_rss_mib" in ours
    ref, timm_ = report["baselines"]
    assert ref["kernels"] == "module" and timm_["source"] == "timm"  # ref: = the nn.LSTM modules
    assert abs(timm_["gmacs"] - ours["gmacs"]) < 0.1
    # same weights loaded into both baselines: identical logits in fp32
    assert timm_["max_abs_logit_diff_vs_sequencer2d_s"] < 1e-4
    assert ref["max_abs_logit_diff_vs_sequencer2d_s"] < 1e-4
    assert set(report["ratios"]) == {"sequencer2d_s / ref:sequencer2d_s", "sequencer2d_s / timm:sequencer2d_s"}


def test_benchmark_rejects_bad_specs(capsys):
    assert main(["benchmark", "--model", "nope:x", "--device", "cpu"]) == 2
    assert "use NAME, ref:NAME or timm:NAME" in capsys.readouterr().err
    assert main(["benchmark", "--model", "no_such_model", "--device", "cpu"]) == 2


def test_ref_runs_the_official_formulation():
    """`ref:NAME` is the official formulation: nn.LSTM modules for the scans and the mLSTM's `parallel` form (what
    the official code writes), while lstmvision's own models run `auto` (the factored form at 224 px)."""
    assert parse_spec("ref:vil2_tiny") == ("lstmvision", "vil2_tiny", "module")
    with kernels_ctx("module"):
        assert get_backend() == ("module", "parallel")
        assert resolve_mlstm_backend(None, 197) == "parallel"
    assert resolve_mlstm_backend(None, 197) == "factored" and resolve_mlstm_backend(None, 785) == "chunkwise"
