"""`lstmvision samples`: the first images of an idx split as class-named PNG files, under the output rules (an
existing file is replaced only with --overwrite, checked before anything is written; errors are one line)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine_helpers import write_idx_folder
from lstmvision.cli import main
from lstmvision.data import FASHION_MNIST_CLASSES, read_idx
from lstmvision.data.samples import sample_name, write_samples


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """An idx folder of 32 train / 16 test images ("fashion" in its path: Fashion-MNIST's class names)."""
    return write_idx_folder(tmp_path_factory.mktemp("data") / "fashion-mnist", n_train=32, n_val=16)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_sample_name():
    assert sample_name("test", 7, "T-shirt/top", 4) == "test_0007_t_shirt_top.png"
    assert sample_name("train", 12, "Ankle boot", 5) == "train_00012_ankle_boot.png"
    assert sample_name("test", 3, "7", 1) == "test_3_7.png"


@pytest.mark.parametrize("split, stem", [("test", "t10k"), ("train", "train")])
def test_writes_the_first_images_named_after_their_class(source, tmp_path, capsys, split, stem):
    out = tmp_path / "samples"
    assert main(["samples", "--output", str(out), "--count", "5", "--split", split, "--source", str(source)]) == 0
    images, labels = read_idx(source / f"{stem}-images-idx3-ubyte"), read_idx(source / f"{stem}-labels-idx1-ubyte")
    width = len(str(len(labels) - 1))
    expected = [sample_name(split, i, FASHION_MNIST_CLASSES[labels[i]], width) for i in range(5)]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for i, name in enumerate(expected):
        with Image.open(out / name) as im:
            assert im.mode == "L" and np.array_equal(np.asarray(im), images[i])
    assert capsys.readouterr().out.strip() == (f"samples: wrote 5 {split} image(s) to {out}: {expected[0]} ... "
                                               f"{expected[-1]}")


def test_existing_files_are_replaced_only_with_overwrite(source, tmp_path, capsys):
    out = tmp_path / "samples"
    paths = write_samples(out, 3, "test", source, progress=False)
    paths[1].write_bytes(b"mine")
    args = ["samples", "--output", str(out), "--count", "4", "--source", str(source)]
    assert main(args) == 2
    assert _error(capsys) == (f"lstmvision samples: error: {paths[0]} exists; give --overwrite to replace it, or "
                              "choose another output")
    assert paths[1].read_bytes() == b"mine" and len(list(out.iterdir())) == 3  # checked before anything is written
    assert main([*args, "--overwrite"]) == 0
    assert len(list(out.iterdir())) == 4
    with Image.open(paths[1]) as im:
        assert im.size == (28, 28)


def test_user_errors_are_one_line(source, tmp_path, capsys):
    out = str(tmp_path / "out")
    cases = [
        (["--count", "0"], "--count must be a positive integer, got 0"),
        (["--count", "17"], f"17 samples asked, but the test split in {source} has 16 images"),
        (["--source", str(tmp_path / "nothing")], f"no test idx files in {tmp_path / 'nothing'}"),
    ]
    for extra, message in cases:
        argv = ["samples", "--output", out, *([] if "--source" in extra else ["--source", str(source)]), *extra]
        assert main(argv) == 2
        assert message in _error(capsys)
    (tmp_path / "a-file").write_text("x")
    assert main(["samples", "--output", str(tmp_path / "a-file"), "--source", str(source)]) == 2
    assert "it is a file, not a folder" in _error(capsys)
    assert main(["samples", "--output", str(source), "--source", str(source)]) == 2
    assert "is the input folder" in _error(capsys)
    assert not (tmp_path / "out").exists() and not list(source.glob("*.png"))


def test_default_source_is_the_data_root(source, tmp_path, monkeypatch):
    monkeypatch.setenv("LSTMVISION_DATA", str(source))
    paths = write_samples(tmp_path / "s", 2, progress=False)
    assert [p.name.split("_")[0] for p in paths] == ["test", "test"]
