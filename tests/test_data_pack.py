"""`lstmvision data pack`: image folders and idx files packed as WebDataset shards (timm's `_info.json`) or a
Hugging Face dataset, read back here with the `webdataset` and `datasets` libraries themselves: counts, keys,
labels, bytes identical to the source files, SHA256SUMS that `sha256sum -c` verifies, the output rules
(--overwrite, never inside the source, nothing under OUT from a failed or killed pack) and one-line errors."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from timm.data import create_dataset

from engine_helpers import write_idx_folder
from lstmvision.cli import data as cli_data
from lstmvision.cli import main
from lstmvision.data import FASHION_MNIST_CLASSES, packing, read_idx, resolve_dataset
from lstmvision.data.packing import pack_dataset

wds = pytest.importorskip("webdataset")
hf = pytest.importorskip("datasets")

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["cat", "dog"]
# per split and class: file name -> (format, extension key in the shards)
FILES = {"a.jpg": ("JPEG", "jpg"), "b.jpeg": ("JPEG", "jpg"), "c.png": ("PNG", "png"), "d.webp": ("WEBP", "webp"),
         "e.bmp": ("BMP", "png")}


@pytest.fixture(scope="module")
def idx_source(tmp_path_factory) -> Path:
    """An idx folder of 25 train / 12 test images ("fashion" in its path: Fashion-MNIST's class names)."""
    return write_idx_folder(tmp_path_factory.mktemp("data") / "fashion-mnist", n_train=25, n_val=12)


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """An ImageFolder tree (train/, validation/) of two classes, one file of each format per class, and one
    unreadable file in train/cat."""
    root = tmp_path_factory.mktemp("tree")
    seed = 0
    for split in ("train", "validation"):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for name, (fmt, _) in FILES.items():
                _image(seed).save(root / split / c / name, format=fmt)
                seed += 1
    (root / "train" / "cat" / "f_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _samples(folder: Path, split: str) -> list[dict]:
    info = json.loads((folder / "_info.json").read_text())
    urls = [str(folder / name) for name in info["splits"][split]["filenames"]]
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def _sums_ok(folder: Path) -> None:
    out = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    listed = sorted(line.split("  ", 1)[1] for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert listed == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                            if p.is_file() and p.name != "SHA256SUMS")


def _no_leftovers(out: Path) -> None:
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


# ------------------------------------------------------------------------------------------------ wds
def test_wds_from_idx_files(idx_source, tmp_path, capsys):
    out = tmp_path / "fm-wds"
    assert main(["data", "pack", str(idx_source), str(out), "--format", "wds", "--shard-size", "10"]) == 0
    done = capsys.readouterr().out.strip()
    assert done.startswith(f"data pack: wrote wds:{out} (train 25 samples in 3 shards, validation 12 samples in 2 "
                           "shards; 10 classes; ")
    info = json.loads((out / "_info.json").read_text())
    assert info == {"name": "fm-wds", "classes": FASHION_MNIST_CLASSES, "splits": {
        "train": {"name": "train", "num_samples": 25, "shard_lengths": [10, 10, 5],
                  "filenames": ["train-000000.tar", "train-000001.tar", "train-000002.tar"]},
        "validation": {"name": "validation", "num_samples": 12, "shard_lengths": [10, 2],
                       "filenames": ["validation-000000.tar", "validation-000001.tar"]}}}
    for split, stem in (("train", "train"), ("validation", "t10k")):
        images = read_idx(idx_source / f"{stem}-images-idx3-ubyte")
        labels = read_idx(idx_source / f"{stem}-labels-idx1-ubyte")
        samples = _samples(out, split)
        assert [s["__key__"] for s in samples] == [f"{split}_{i:08d}" for i in range(len(labels))]
        assert [s["cls"] for s in samples] == [str(int(y)).encode() for y in labels]
        for s, image in zip(samples, images):
            assert set(s) - {"__key__", "__url__", "__local_path__"} == {"png", "cls"}
            with Image.open(io.BytesIO(s["png"])) as im:
                assert im.format == "PNG" and im.mode == "L" and np.array_equal(np.asarray(im), image)
    _sums_ok(out)
    _no_leftovers(out)


def test_wds_keeps_the_files_bytes_and_skips_unreadable_images(tree, tmp_path, capsys):
    out = tmp_path / "tree-wds"
    assert main(["data", "pack", str(tree), str(out), "--format", "wds", "--shard-size", "4"]) == 0
    captured = capsys.readouterr()
    assert "1 unreadable image skipped" in captured.out
    assert "skipping unreadable image" in captured.err and "f_broken.png" in captured.err
    info = json.loads((out / "_info.json").read_text())
    assert info["classes"] == CLASSES
    assert info["splits"]["train"]["shard_lengths"] == [4, 4, 2]  # 11 files, the broken one left out
    for split in ("train", "validation"):
        files = [(tree / split / c / name, label) for label, c in enumerate(CLASSES)
                 for name in sorted(os.listdir(tree / split / c))]
        samples = _samples(out, split)
        kept = [(i, f) for i, f in enumerate(files) if "broken" not in f[0].name]
        assert len(samples) == len(kept) == info["splits"][split]["num_samples"]
        for s, (i, (path, label)) in zip(samples, kept):
            fmt, key = FILES[path.name]
            assert s["__key__"] == f"{split}_{i:08d}" and s["cls"] == str(label).encode()
            if key != "png" or fmt == "PNG":
                assert s[key] == path.read_bytes()  # not re-encoded
            else:  # BMP: stored as PNG with the same pixels
                with Image.open(io.BytesIO(s["png"])) as im, Image.open(path) as src:
                    assert im.format == "PNG" and np.array_equal(np.asarray(im), np.asarray(src))
    _sums_ok(out)


def test_bare_class_folder_is_validation_only(tree, tmp_path, capsys):
    out = tmp_path / "val-only"
    assert main(["data", "pack", str(tree / "validation"), str(out), "--format", "wds"]) == 0
    info = json.loads((out / "_info.json").read_text())
    assert list(info["splits"]) == ["validation"] and info["splits"]["validation"]["num_samples"] == 10
    assert info["splits"]["validation"]["filenames"] == ["validation-000000.tar"]
    assert "validation 10 samples in 1 shard;" in capsys.readouterr().out


def test_idx_folder_with_train_files_only(idx_source, tmp_path):
    src = tmp_path / "train-only"
    src.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        shutil.copy(idx_source / name, src / name)
    report = pack_dataset(src, tmp_path / "out", "wds", shard_size=100, progress=False)
    assert report.samples == {"train": 25} and report.shards == {"train": 1} and report.skipped == 0


@pytest.mark.parametrize("fmt", ["wds", "hfds"])
def test_strict_images_fails_and_writes_nothing(tree, tmp_path, capsys, fmt):
    out = tmp_path / "strict"
    assert main(["data", "pack", str(tree), str(out), "--format", fmt, "--strict-images"]) == 2
    err = _error(capsys)
    assert err.startswith("lstmvision data: error: unreadable image ") and "f_broken.png" in err
    assert "drop --strict-images" in err
    assert not out.exists()
    _no_leftovers(out)


# ----------------------------------------------------------------------------------------------- hfds
def test_hfds_from_idx_files_and_folders(idx_source, tree, tmp_path, capsys):
    out = tmp_path / "fm-hf"
    assert main(["data", "pack", str(idx_source), str(out), "--format", "hfds", "--shard-size", "10"]) == 0
    assert "wrote hfds:" in capsys.readouterr().out
    dd = hf.load_from_disk(str(out))
    assert list(dd) == ["train", "validation"]
    for split, stem, shards in (("train", "train", 3), ("validation", "t10k", 2)):
        ds = dd[split]
        assert ds.features["label"].names == FASHION_MNIST_CLASSES and isinstance(ds.features["image"], hf.Image)
        assert len(list((out / split).glob("*.arrow"))) == shards
        labels = read_idx(idx_source / f"{stem}-labels-idx1-ubyte")
        images = read_idx(idx_source / f"{stem}-images-idx3-ubyte")
        assert ds["label"] == [int(y) for y in labels]
        assert np.array_equal(np.stack([np.asarray(im) for im in ds["image"]]), images)
    _sums_ok(out)
    _no_leftovers(out)

    out = tmp_path / "tree-hf"
    report = pack_dataset(tree, out, "hfds", shard_size=4, progress=False)
    assert report.samples == {"train": 10, "validation": 10} and report.skipped == 1
    assert report.shards == {"train": 3, "validation": 3}
    dd = hf.load_from_disk(str(out))
    for split in ("train", "validation"):
        raw = dd[split].cast_column("image", hf.Image(decode=False))
        files = [(tree / split / c / n, label) for label, c in enumerate(CLASSES) for n in FILES]
        assert raw["label"] == [label for _, label in files]
        for row, (path, _) in zip(raw["image"], files):
            if FILES[path.name][1] != "png" or path.suffix == ".png":
                assert row["bytes"] == path.read_bytes() and row["path"] is None
    _sums_ok(out)


# -------------------------------------------------------------------------------------- output rules
def test_existing_output_needs_overwrite(idx_source, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["data", "pack", str(idx_source), str(out), "--format", "wds", "--shard-size", "10"]
    assert main(args) == 0
    first = (out / "SHA256SUMS").read_text()
    capsys.readouterr()
    assert main([*args[:-1], "100"]) == 2
    assert _error(capsys) == (f"lstmvision data: error: {out} exists and is not empty; give --overwrite to replace "
                              "it, or choose another OUT")
    assert (out / "SHA256SUMS").read_text() == first
    assert main([*args[:-1], "100", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "_info.json", "train-000000.tar",
                                                     "validation-000000.tar"]
    _sums_ok(out)
    _no_leftovers(out)
    (tmp_path / "empty").mkdir()  # an empty folder is no earlier output
    assert main(["data", "pack", str(idx_source), str(tmp_path / "empty"), "--format", "wds"]) == 0


def test_overwrite_replaces_only_an_earlier_pack(idx_source, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["data", "pack", str(idx_source), str(out), "--format", "hfds", "--overwrite"]) == 2
    assert _error(capsys) == (f"lstmvision data: error: {out} holds files but no SHA256SUMS, so it is not a packed "
                              "data set: --overwrite replaces only those; remove it yourself or choose another OUT")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("where", ["same", "inside", "holds"])
def test_output_never_inside_the_source(idx_source, tmp_path, capsys, where):
    src = tmp_path / "src"
    shutil.copytree(idx_source, src)
    out = {"same": src, "inside": src / "packed", "holds": tmp_path}[where]
    before = sorted(p.name for p in src.iterdir())
    assert main(["data", "pack", str(src), str(out), "--format", "wds", "--overwrite"]) == 2
    err = _error(capsys)
    assert err.startswith(f"lstmvision data: error: OUT {out} ")
    assert f"the source {src}: the shards would mix with the data they are made of; choose a folder outside it" in err
    assert sorted(p.name for p in src.iterdir()) == before


def test_output_that_is_a_file(idx_source, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    assert main(["data", "pack", str(idx_source), str(out), "--format", "wds"]) == 2
    assert _error(capsys) == (f"lstmvision data: error: cannot write to {out}: it is a file, not a folder (OUT "
                              "takes a folder)")


class _Boom(OSError):
    pass


@pytest.mark.parametrize("fmt", ["wds", "hfds"])
def test_a_failed_pack_leaves_out_as_it_was(idx_source, tmp_path, capsys, monkeypatch, fmt):
    out = tmp_path / "out"
    pack_dataset(idx_source, out, fmt, shard_size=10, progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    real, calls = packing._idx_sample, []

    def failing(ds, i):
        calls.append(i)
        if len(calls) == 30:  # in the validation split, after the train shards are written
            raise _Boom(28, "No space left on device")
        return real(ds, i)

    monkeypatch.setattr(packing, "_idx_sample", failing)
    assert main(["data", "pack", str(idx_source), str(out), "--format", fmt, "--overwrite", "--workers", "0"]) == 2
    assert _error(capsys) == f"lstmvision data: error: cannot write {out}: no space left on device"
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    _no_leftovers(out)

    monkeypatch.setattr(packing, "_idx_sample", lambda ds, i: (_ for _ in ()).throw(KeyboardInterrupt))
    fresh = tmp_path / "fresh"
    assert main(["data", "pack", str(idx_source), str(fresh), "--format", fmt, "--workers", "0"]) == 130
    assert not fresh.exists()
    _no_leftovers(fresh)


_SLOW_PACK = """
import sys, time
from lstmvision.data import packing
real = packing._idx_sample
def slow(ds, i):
    time.sleep(0.05)
    return real(ds, i)
packing._idx_sample = slow
packing.pack_dataset(sys.argv[1], sys.argv[2], "wds", shard_size=5, workers=0, progress=False)
"""


@pytest.mark.slow
def test_a_killed_pack_leaves_nothing_under_out(idx_source, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_PACK, str(idx_source), str(out)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".out.packing-*/train-000001.tar")):
            assert proc.poll() is None and time.monotonic() < deadline, "the pack ended before it was killed"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    assert [p.name for p in tmp_path.glob(".out.*")] == [f".out.packing-{socket.gethostname()}-{proc.pid}"]
    report = pack_dataset(idx_source, out, "wds", shard_size=10, progress=False)  # removes the killed one's folder
    assert report.samples == {"train": 25, "validation": 12}
    _no_leftovers(out)
    _sums_ok(out)


# ---------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("fmt, module", [("wds", "webdataset"), ("hfds", "datasets")])
def test_missing_data_extra_is_one_line(idx_source, tmp_path, capsys, monkeypatch, fmt, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    out = tmp_path / "out"
    assert main(["data", "pack", str(idx_source), str(out), "--format", fmt]) == 2
    err = _error(capsys)
    assert err.startswith("lstmvision data: error: packing as ") and f"(--format {fmt})" in err
    assert err.endswith("needs the [data] extra: pip install 'lstmvision[data]'")
    assert not out.exists()


def test_bad_sources_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "out")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "nothing").mkdir()
    cases = {
        str(tmp_path / "missing"): f"data not found: {tmp_path / 'missing'}",
        str(tmp_path / "file.txt"): f"SRC must be a folder (ImageFolder tree or idx files), got the file "
                                    f"{tmp_path / 'file.txt'}",
        "wds:shards": "wds:shards is a shard source already: `data pack` reads image-class folders and idx files",
        str(tmp_path / "nothing"): f"{tmp_path / 'nothing'} holds no val data",
    }
    for src, message in cases.items():
        assert main(["data", "pack", src, out, "--format", "wds"]) == 2, src
        assert message in _error(capsys), src
    assert main(["data", "pack", str(tmp_path), out, "--format", "wds", "--shard-size", "0"]) == 2
    assert _error(capsys) == "lstmvision data: error: --shard-size must be a positive integer, got 0"
    assert main(["data", "pack", str(tmp_path), out, "--format", "wds", "--workers", "-1"]) == 2
    assert _error(capsys) == "lstmvision data: error: --workers must be 0 or more, got -1"
    assert not Path(out).exists()


def test_python_api_checks_its_arguments(idx_source, tmp_path):
    for kwargs, message in ((dict(format="zip"), "format must be one of wds, hfds, got 'zip'"),
                            (dict(shard_size=0), "shard size must be a positive integer, got 0"),
                            (dict(workers=-2), "workers must be 0 or more, got -2")):
        with pytest.raises(ValueError, match=message):
            pack_dataset(idx_source, tmp_path / "out", **kwargs)


def test_stale_temporary_folders_of_this_host_are_removed(idx_source, tmp_path):
    out = tmp_path / "out"
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = [tmp_path / f".out.packing-{host}-{dead}", tmp_path / f".out.replaced-{host}-{dead}"]
    kept = [tmp_path / f".out.packing-otherhost-{dead}", tmp_path / f".out.packing-{host}-{os.getpid()}x"]
    for folder in stale + kept:
        folder.mkdir()
    pack_dataset(idx_source, out, "wds", progress=False)
    assert [p.exists() for p in stale + kept] == [False, False, True, True]


def test_help_loads_no_torch_and_names_the_defaults():
    probe = ("import sys\nfrom lstmvision.cli import main\nfor argv in (['data', '--help'], ['data', 'pack', "
             "'--help'], ['data', 'info', '--help']):\n    try:\n        main(argv)\n    except SystemExit:\n        "
             "pass\nprint(sorted(m for m in ('torch', 'numpy', 'webdataset', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "usage: lstmvision data pack" in out.stdout and "--shard-size N" in out.stdout
    assert cli_data.DEFAULT_SHARD_SIZE == packing.DEFAULT_SHARD_SIZE


# ------------------------------------------------------------------------------------------------ info
def test_info_of_packed_and_folder_sources(idx_source, tree, tmp_path, capsys):
    pack_dataset(idx_source, tmp_path / "w", "wds", shard_size=10, progress=False)
    pack_dataset(idx_source, tmp_path / "h", "hfds", shard_size=10, progress=False)
    names = ", ".join(FASHION_MNIST_CLASSES)
    packed = ["  train: 25 samples in 3 shards", "  validation: 12 samples in 2 shards", f"  10 classes: {names}"]
    expected = {
        f"wds:{tmp_path / 'w'}": "WebDataset shards (wds)",
        f"hfds:{tmp_path / 'h'}": "Hugging Face dataset, map-style (hfds)",
        f"hfids:{tmp_path / 'h'}": "Hugging Face dataset, streamed (hfids)",
    }
    for spec, kind in expected.items():
        assert main(["data", "info", spec]) == 0, spec
        assert capsys.readouterr().out.splitlines() == [f"{spec}: {kind}", *packed]
    assert main(["data", "info", str(idx_source), "--classes", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{idx_source}: MNIST-format idx files (idx)", "  train: 25 samples", "  validation: 12 samples",
        "  10 classes: T-shirt/top, Trouser, ... (8 more)"]
    assert main(["data", "info", str(tree)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{tree}: image-class folders (folder)", "  train: 11 samples", "  validation: 10 samples",
        "  2 classes: cat, dog"]
    assert main(["data", "info", str(tree / "validation")]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["  validation: 10 samples", "  2 classes: cat, dog"]


def test_info_errors_are_one_line(tmp_path, idx_source, capsys):
    pack_dataset(idx_source, tmp_path / "w", "wds", progress=False)
    pack_dataset(idx_source, tmp_path / "h", "hfds", progress=False)
    cases = {
        str(tmp_path / "w"): f"{tmp_path / 'w'} holds WebDataset shards: give wds:{tmp_path / 'w'}",
        str(tmp_path / "h"): (f"{tmp_path / 'h'} holds a Hugging Face dataset: give hfds:{tmp_path / 'h'} (or "
                              f"hfids:{tmp_path / 'h'})"),
        str(tmp_path / "missing"): f"data not found: {tmp_path / 'missing'}",
    }
    for spec, message in cases.items():
        assert main(["data", "info", spec]) == 2, spec
        assert _error(capsys) == f"lstmvision data: error: {message}"
    assert main(["data", "info", f"wds:{tmp_path / 'missing'}"]) == 2
    _error(capsys)
    assert main(["data", "info", str(idx_source), "--classes", "-1"]) == 2
    assert _error(capsys) == "lstmvision data: error: --classes must be 0 or more, got -1"


def test_packs_read_back_through_data_sources(idx_source, tmp_path):
    """What `--data wds:OUT` / `hfds:OUT` / `hfids:OUT` give is the source's images and labels."""
    pack_dataset(idx_source, tmp_path / "w", "wds", shard_size=10, progress=False)
    pack_dataset(idx_source, tmp_path / "h", "hfds", shard_size=10, progress=False)
    for split, stem in (("train", "train"), ("val", "t10k")):
        images = read_idx(idx_source / f"{stem}-images-idx3-ubyte")
        labels = read_idx(idx_source / f"{stem}-labels-idx1-ubyte")
        expected = sorted((x.tobytes(), int(y)) for x, y in zip(images, labels))
        for spec in (f"wds:{tmp_path / 'w'}", f"hfds:{tmp_path / 'h'}", f"hfids:{tmp_path / 'h'}"):
            ds = resolve_dataset(spec, split, "L")
            assert ds.class_names == FASHION_MNIST_CLASSES
            items = [ds[i] for i in range(len(ds))] if spec.startswith("hfds:") else list(ds)
            assert sorted((np.asarray(im).tobytes(), y) for im, y in items) == expected, (spec, split)


def test_overwrite_through_a_link_replaces_the_folder_it_names(idx_source, tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    pack_dataset(idx_source, real, "wds", shard_size=10, progress=False)
    link.symlink_to(real, target_is_directory=True)
    report = pack_dataset(idx_source, link, "wds", shard_size=100, overwrite=True, progress=False)
    assert report.out == link and report.shards == {"train": 1, "validation": 1}
    assert link.is_symlink() and sorted(p.name for p in link.iterdir()) == sorted(p.name for p in real.iterdir())
    assert json.loads((real / "_info.json").read_text())["splits"]["train"]["shard_lengths"] == [25]
    _no_leftovers(real)


def test_timm_reads_the_wds_pack(idx_source, tmp_path):
    pack_dataset(idx_source, tmp_path / "w", "wds", shard_size=10, progress=False)
    for split, stem in (("train", "train"), ("validation", "t10k")):
        labels = read_idx(idx_source / f"{stem}-labels-idx1-ubyte")
        ds = create_dataset("wds/fm", root=str(tmp_path / "w"), split=split, is_training=False, batch_size=1)
        assert len(ds) == len(labels)
        assert sorted(y for _, y in ds) == sorted(int(y) for y in labels)
