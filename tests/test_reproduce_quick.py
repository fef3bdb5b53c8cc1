"""The Fashion-MNIST reproduction in its CI-scale quick mode, end to end (~1.5-2 min on 2 CPU cores): four models
trained by the engine (`lstmvision train`), the analyses run on their run folders."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path

import pytest
import timm

from lstmvision.models import is_model

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
    assert s["mode"] == "quick" and {m["name"] for m in s["models"]} == {"sequencer2d", "vil", "deit", "convnext"}
    # every label is the architecture its checkpoint was saved as, a registered lstmvision or timm name
    archs = {m["name"]: m["architecture"] for m in s["models"]}
    assert archs == {"sequencer2d": "sequencer2d_tiny", "vil": "vil2_tiny", "deit": "timm:deit_tiny_patch16_224",
                     "convnext": "timm:convnext_atto"}
    assert all(is_model(a) for a in archs.values() if not a.startswith("timm:"))
    assert all(timm.is_model(a[len("timm:"):]) for a in archs.values() if a.startswith("timm:"))
    for m in s["models"]:
        assert m["params"] > 0 and 0 <= m["top1"] <= 100, m
        assert m["command"].startswith("lstmvision train --recipe sequencer-small"), m["command"]
        assert (out / m["run"] / "best" / "config.json").is_file(), m["run"]
        rows = (out / "training" / m["name"] / "summary.csv").read_text().splitlines()
        assert rows[0].startswith("epoch,") and len(rows) == 2, rows  # header + the one quick epoch
    assert "QUICK" in (out / "summary.md").read_text()
    for f in ("resolution/resolution.png", "resolution/resolution.json", "erf/erf.png", "erf/erf.json",
              "memory/memory.png", "memory/memory.md", "robustness/sequencer2d/robustness.json",
              "robustness/vil/robustness.png", "memory_vil_chunkwise/memory.json"):
        assert (out / f).is_file(), f
    res = json.loads((out / "resolution" / "resolution.json").read_text())
    assert all(set(r["top1"]) == {"16", "32", "48", "64"} for r in res["results"])
    rob = json.loads((out / "robustness" / "vil" / "robustness.json").read_text())
    assert "relative_mce_vs_baseline" in rob and "adversarial" in rob
    # --reuse takes a finished run as it is; without it an existing run is never overwritten
    arch, kwargs = repro.MODELS["quick"]["vil"]
    again = [("vil", arch, kwargs, repro.OVERRIDES["quick"], out)]
    assert repro.train_model(*again[0], argparse.Namespace(data=DATA, reuse=True), "cpu", 0)["reused"]
    with pytest.raises(SystemExit, match="--reuse"):
        repro.train_model(*again[0], argparse.Namespace(data=DATA, reuse=False), "cpu", 0)
