"""The Fashion-MNIST reproduction in its CI-scale quick mode, end to end (~1.5-2 min on 2 CPU cores)."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("LSTMVISION_FMNIST", "/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not Path(DATA, "t10k-labels-idx1-ubyte.gz").is_file(), reason="Fashion-MNIST not installed")
def test_reproduce_quick_end_to_end(tmp_path):
    spec = importlib.util.spec_from_file_location("repro", ROOT / "scripts" / "reproduce_fashion_mnist.py")
    repro = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(repro)
    out = tmp_path / "quick"
    assert repro.main(["--quick", "--data", DATA, "--out", str(out), "--device", "cpu"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["mode"] == "quick" and set(s["models"]) == {"sequencer2d", "vil", "deit", "convnext"}
    assert "QUICK" in (out / "summary.md").read_text()
    for f in ("resolution/resolution.png", "resolution/resolution.json", "erf/erf.png", "erf/erf.json",
              "memory/memory.png", "memory/memory.md", "robustness/sequencer2d/robustness.json",
              "robustness/vil/robustness.png", "memory_vil_chunkwise/memory.json"):
        assert (out / f).is_file(), f
    res = json.loads((out / "resolution" / "resolution.json").read_text())
    assert all(set(r["top1"]) == {"16", "32", "48", "64"} for r in res["results"])
    rob = json.loads((out / "robustness" / "vil" / "robustness.json").read_text())
    assert "relative_mce_vs_baseline" in rob and "adversarial" in rob
