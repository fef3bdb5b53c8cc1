"""scripts/make_digit_tasks.py: the sklearn digits task as idx files that `resolve_dataset` reads back."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits

from lstmvision.data import read_idx, resolve_dataset  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_digit_tasks.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_digit_tasks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_task_reads_back_stratified(tmp_path, capsys):
    script = _script()
    assert script.main(["--output", str(tmp_path), "--tasks", "digits"]) == 0
    assert "digits: 1297 train / 500 test images" in capsys.readouterr().out
    folder = tmp_path / "digits"
    train, test = resolve_dataset(folder, "train"), resolve_dataset(folder, "val")
    assert (len(train), len(test)) == (1297, 500)  # >= 800 + 200 for the protocol's draw from the train split
    assert train.class_names == test.class_names == [str(d) for d in range(10)]
    assert train.images.shape[1:] == (8, 8) and train.images.dtype == np.uint8 and train.images.max() == 255
    # big-endian headers with the idx magic numbers
    raw = (folder / "train-images-idx3-ubyte").read_bytes()
    assert int.from_bytes(raw[:4], "big") == 0x803 and int.from_bytes(raw[4:8], "big") == 1297
    assert int.from_bytes((folder / "t10k-labels-idx1-ubyte").read_bytes()[:4], "big") == 0x801
    # stratified: every class in the test split in proportion (50 +- 1 of 500), and train/test disjoint

    counts = np.bincount(test.labels, minlength=10)
    total = np.bincount(load_digits().target, minlength=10)
    assert np.all(np.abs(counts - total * 500 / len(load_digits().target)) < 1)
    assert counts.sum() + np.bincount(train.labels, minlength=10).sum() == 1797
    # load_digits holds no two identical images: disjoint splits share no image
    assert not {a.tobytes() for a in train.images} & {a.tobytes() for a in test.images}
    manifest = json.loads((tmp_path / "tasks.json").read_text())
    assert manifest["digits"]["n_train"] == 1297 and manifest["digits"]["seed"] == 0
    assert manifest["digits"]["per_class"]["test"] == counts.tolist()
    # the same seed gives the same split
    assert script.main(["--output", str(tmp_path / "again"), "--tasks", "digits"]) == 0
    np.testing.assert_array_equal(read_idx(tmp_path / "again" / "digits" / "t10k-labels-idx1-ubyte"), test.labels)
