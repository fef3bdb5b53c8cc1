"""The Fashion-MNIST reproduction in its CI-scale quick mode, end to end (about 2-3 min on 2 CPU cores): the six
compared models, the Sequencer ablation table (9 variants x 2 seeds) and the ViL ablations trained by the engine
(`lstmvision train`), the analyses run on the compared models, summary.md / summary.json with every claim line."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import timm

import lstmvision
from lstmvision.models import is_model
from lstmvision.models.timm_models import create_timm_model

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("LSTMVISION_FMNIST", "/usr/share/datasets/fashion-mnist")
COMPARED = {"sequencer2d": "sequencer2d_tiny", "vanilla_sequencer": "v_sequencer_tiny", "vil": "vil2_tiny",
            "deit": "timm:deit_tiny_patch16_224", "convnext": "timm:convnext_atto", "resnet": "timm:resnet18"}


def _load_script():
    spec = importlib.util.spec_from_file_location("repro", ROOT / "scripts" / "reproduce_fashion_mnist.py")
    repro = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = repro  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(repro)
    return repro


def test_full_plan_matches_the_issue():
    """The full mode's plan (no training): six compared models within 2x in parameters, the nine ablation variants
    x 2 seeds, the ViL poolings and direction designs; every architecture registered (or a timm name)."""
    repro = _load_script()
    runs = repro.plan("full")
    comp = [r for r in runs if r.group == "compared"]
    assert {r.name: r.arch for r in comp} == COMPARED
    params = {}
    for r in comp:
        if r.arch.startswith("timm:"):
            m = create_timm_model(r.arch[5:], 10, 1, 28, r.kwargs)
        else:
            m = lstmvision.create_model(r.arch, num_classes=10, in_chans=1, img_size=28, **r.kwargs)
        params[r.name] = sum(p.numel() for p in m.parameters())
    assert max(params.values()) <= 2 * min(params.values()), params
    abl = [r for r in runs if r.group == "sequencer_ablation"]
    assert len(abl) == 18 and {r.seed for r in abl} == {0, 1}
    assert {r.variant for r in abl} == {"bilstm2d", "vanilla_1d", "unidirectional", "vertical_only", "horizontal_only",
                                        "add", "without_fc", "gru", "rnn"}
    for r in abl:  # each variant builds (hidden sizes fit the unions without fc)
        lstmvision.create_model(r.arch, num_classes=10, in_chans=1, img_size=28, **r.kwargs)
    vil = {r.variant for r in runs if r.group == "vil_ablation"}
    assert len(vil) == 7 and all(is_model(a) for a in vil)
    assert runs.index(comp[-1]) < runs.index(abl[0])  # the compared models first


@pytest.mark.slow
@pytest.mark.skipif(not Path(DATA, "t10k-labels-idx1-ubyte.gz").is_file(), reason="Fashion-MNIST not installed")
def test_reproduce_quick_end_to_end(tmp_path):
    repro = _load_script()
    out = tmp_path / "quick"
    assert repro.main(["--quick", "--data", DATA, "--out", str(out), "--device", "cpu"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["mode"] == "quick" and not s["errors"] and s["command"].startswith("scripts/reproduce_fashion_mnist.sh")
    comp = [m for m in s["models"] if m["group"] == "compared"]
    # every label is the architecture its checkpoint was saved as, a registered lstmvision or timm name
    assert {m["name"]: m["architecture"] for m in comp} == COMPARED
    archs = {m["architecture"] for m in s["models"]}
    assert all(is_model(a) for a in archs if not a.startswith("timm:"))
    assert all(timm.is_model(a[len("timm:"):]) for a in archs if a.startswith("timm:"))
    assert len(s["models"]) == 6 + 18 + 7
    for m in s["models"]:
        assert {"name", "architecture", "params", "top1"} <= set(m) and m["params"] > 0 and 0 <= m["top1"] <= 100, m
        assert m["command"].startswith("lstmvision train --recipe sequencer-small"), m["command"]
        assert (out / m["checkpoint"] / "config.json").is_file(), m["checkpoint"]
        rows = (out / "training" / m["name"] / "summary.csv").read_text().splitlines()
        assert rows[0].startswith("epoch,") and len(rows) == 2, rows  # header + the one quick epoch
    # the ablation table: mean and spread over the 2 seeds of every variant
    st = s["ablations"]["sequencer"]
    assert len(st) == 9 and all(len(r["top1"]) == 2 and r["std"] is not None for r in st.values())
    # every claim of the issue has its line, stated as holds / does not hold
    verdicts = {c["claim"]: c["verdict"] for c in s["claims"]}
    assert all(v in ("holds", "does not hold") for v in verdicts.values()), verdicts
    for key in (">= 90%", "within 2x", "double resolution", "cross-shaped", "memory-economical",
                "slower in throughput", "linear in tokens", "corruption-robust", "2-D over 1-D",
                "bidirectional over unidirectional", "both axes over one", "LSTM over GRU over RNN", "concat over add",
                "with fc over without", "ViL pooling", "ViL direction design"):
        assert sum(key in c for c in verdicts) == 1, (key, list(verdicts))
    md = (out / "summary.md").read_text()
    assert "QUICK" in md and md.count("**holds**") + md.count("**does not hold**") == len(verdicts)
    for f in ("accuracy.png", "ablations.png", "resolution/resolution.png", "resolution/resolution.json",
              "erf/erf.png", "erf/erf.json", "memory/memory.png", "memory/memory.md",
              "robustness/sequencer2d/robustness.json", "robustness/vil/robustness.png",
              "memory_vil_chunkwise/memory.json"):
        assert (out / f).is_file(), f
    res = json.loads((out / "resolution" / "resolution.json").read_text())
    assert all(set(r["top1"]) == {"14", "21", "28", "42", "56"} for r in res["results"])
    erf = json.loads((out / "erf" / "erf.json").read_text())
    assert {e["layer"] for e in erf["maps"] if e["model"] == "sequencer2d"} == {"stages.0", "stages.1"}
    assert {e["layer"] for e in erf["maps"] if e["model"] == "resnet"} == {"layer1", "layer2", "layer3", "layer4"}
    rob = json.loads((out / "robustness" / "mce.json").read_text())
    assert rob["baseline"] == "resnet" and set(rob["models"]) == set(COMPARED)
    assert rob["models"]["resnet"]["mce"] == pytest.approx(100)  # the baseline against itself
    assert all(m["fgsm_top1"] is not None for m in rob["models"].values())
    # --reuse takes a finished run as it is; without it an existing run is never overwritten
    arch, kwargs, epochs = repro.COMPARED["quick"]["vil"]
    again = ("vil", arch, kwargs, dict(repro.OVERRIDES["quick"], epochs=epochs), out)
    assert repro.train_model(*again, argparse.Namespace(data=DATA, reuse=True), "cpu", 0)["reused"]
    with pytest.raises(SystemExit, match="--reuse"):
        repro.train_model(*again, argparse.Namespace(data=DATA, reuse=False), "cpu", 0)
