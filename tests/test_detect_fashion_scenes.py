"""scripts/detect_fashion_scenes.py without training: the train commands, --reuse's bookkeeping of runs and their
training time, and the README rendered from a summary."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "detect_fashion_scenes.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("detect_fashion_scenes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_args(script, tmp_path):
    assert script.schedule(8) == (1.0, [6, 7])  # the recipe's own
    assert script.schedule(12) == (1.5, [9, 10]) and script.schedule(3) == (0.375, [2])
    argv = script.train_args("vil", tmp_path / "data", tmp_path / "runs", 3, 2)
    assert argv[:4] == ["detect", "train", "--recipe", "detect-small"]
    assert argv[argv.index("--warmup-epochs") + 1:argv.index("--model-kwargs")] == ["0.375", "--decay-milestones", "2"]
    assert argv[argv.index("--model-kwargs") + 1:] == ["embed_dim=64", "depth=8", "patch_size=8"]
    short = script.train_args("sequencer2d", tmp_path, tmp_path, 1, 1)
    assert "--decay-milestones" not in short and "--model-kwargs" not in short


def _fake_run(run: Path, epochs: int, last: bool = True) -> None:
    run.mkdir(parents=True)
    (run / "summary.csv").write_text("epoch,train_loss,bbox_mAP\n" + "".join(f"{e},1.0,{e}.0\n" for e in range(epochs)))
    (run / "best").mkdir()
    if last:
        (run / "last").mkdir()


def test_reuse_keeps_finished_resumes_unfinished_and_adds_time(script, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(script, "run_cli", calls.append)
    runs = tmp_path / "runs"
    _fake_run(runs / "vil", 4)
    (runs / "vil.time.json").write_text(json.dumps(dict(train_s=100.0)))
    assert script.train("vil", ["fresh"], runs, 4, 2, reuse=True) == (100.0, 0.0) and not calls  # finished: kept
    spent, now = script.train("vil", ["fresh"], runs, 6, 2, reuse=True)  # more epochs asked: resumed, time added
    assert calls == [["detect", "train", "--resume", str(runs / "vil"), "--epochs", "6", "--threads", "2"]] and spent == 100.0 + now
    assert json.loads((runs / "vil.time.json").read_text())["train_s"] == round(spent, 1)
    calls.clear()
    spent, now = script.train("vil", ["fresh"], runs, 4, 2, reuse=False)  # without --reuse: a new run
    assert spent == now < 100.0
    assert calls == [["fresh"]] and not (runs / "vil").exists()  # (the fake run_cli trains nothing)


def test_readme_from_summary(script):
    row = dict(name="vil", backbone="vil2_tiny", backbone_kwargs=["embed_dim=64"], params=1_328_356,
               backbone_params=282_240, bbox_mAP=12.345, bbox_mAP_50=30.0, bbox_mAP_75=8.0, bbox_mAP_s=5.0,
               bbox_mAP_m=20.0, best_epoch=4, epochs=4, train_s=600.0)
    summary = dict(device="CPU (x86_64, 2 cores), 2 thread(s)", versions="torch 2", load="load average 1.0",
                   wall_s=1800.0, epochs=4, scenes={"train2017": dict(images=2000, instances=5000),
                                                    "val2017": dict(images=200, instances=500)},
                   commands=["lstmvision detect scenes --output d"], models=[row, dict(row, name="seq", bbox_mAP=20.0)])
    text = script.render_readme(summary, ["--epochs", "4"])
    assert "warmup 0.5 epochs, lr x0.1 after epoch 3)" in text
    assert "`python scripts/detect_fashion_scenes.py --epochs 4`" in text and "30.0 min" in text
    assert "| vil | `vil2_tiny` embed_dim=64 | 1.33M (0.28M) | 12.35 | 30.00 | 8.00 | 5.00 | 20.00 | 4 / 4 | 10.0 min |" \
        in text
    assert "Highest box mAP: seq (20.00)" in text and "![predictions](predictions.png)" in text
    assert "2000 training scenes (5000 garments)" in text and "```bash\nlstmvision detect scenes --output d\n```" in text
