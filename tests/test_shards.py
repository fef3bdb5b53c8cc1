"""Sharded and streamed sources (`wds:`, `hfds:`, `hfids:`): reading, the epoch order over ranks x workers,
exact resume, validation without duplicates, bad data as one error."""
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from safetensors.torch import load_file

from lstmvision.cli import main
from lstmvision.commands.analysis.common import open_images
from lstmvision.data import BadImageCounter, DataError, build_loader, limit, resolve_dataset, start_epoch
from lstmvision.data.shards import buffer_order, describe_source
from lstmvision.errors import worker_message
from lstmvision.models import create_model
from lstmvision.weights import save_pretrained

datasets = pytest.importorskip("datasets")
wds = pytest.importorskip("webdataset")

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["a", "b", "c", "d"]


def _png(i: int) -> bytes:
    rng = np.random.default_rng(i)
    pixels = (rng.random((12, 12)) * 255).astype(np.uint8)
    pixels[0, :2] = i % 256, i // 256  # the sample's identity, read back by _ids
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, "PNG")
    return buf.getvalue()


def write_wds(folder: Path, n_train=120, n_val=30, per=32, bad=(), label=lambda i: i % 4, info_extra=None):
    """Shards of 12 px grayscale PNGs with timm's _info.json; `bad` indices get bytes that are no image."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {"name": "toy", "splits": {}, "classes": CLASSES}
    for split, n in (("train", n_train), ("validation", n_val)):
        names, lengths = [], []
        for s in range(0, n, per):
            name = f"{split}-{s // per:06d}.tar"
            with wds.TarWriter(str(folder / name)) as w:
                for i in range(s, min(s + per, n)):
                    img = b"not an image" if (split, i) in bad else _png(i + (0 if split == "train" else 10_000))
                    w.write({"__key__": f"{split}_{i:08d}", "png": img, "cls": str(label(i)).encode()})
            names.append(name)
            lengths.append(min(per, n - s))
        info["splits"][split] = {"name": split, "num_samples": n, "filenames": names, "shard_lengths": lengths}
    info.update(info_extra or {})
    (folder / "_info.json").write_text(json.dumps(info))
    return folder


def write_hf(folder: Path, n_train=120, n_val=30, shards=3):
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})

    def split(n, offset):
        return datasets.Dataset.from_dict({"image": [{"bytes": _png(i + offset), "path": None} for i in range(n)],
                                           "label": [i % 4 for i in range(n)]}, features=feats)

    dd = datasets.DatasetDict({"train": split(n_train, 0), "validation": split(n_val, 10_000)})
    dd.save_to_disk(str(folder), num_shards={"train": shards, "validation": 1})
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_wds(root / "wds")
    write_hf(root / "hf")
    return dict(wds=f"wds:{root / 'wds'}", pattern=f"wds:{root / 'wds'}/train-{{000000..000003}}.tar",
                hfds=f"hfds:{root / 'hf'}", hfids=f"hfids:{root / 'hf'}")


def _ids(loader):
    """Each sample's identity (written into its first two pixels) in delivery order."""
    return [round(float(v[0, 0, 0]) * 255) + 256 * round(float(v[0, 0, 1]) * 255) for x, _, _ in loader for v in x]


def _train_loader(ds, batch=8, workers=0, world=1, rank=0, epoch=0, skip=0, seed=3):
    loader = build_loader(ds, T.ToTensor(), batch, True, workers, world, rank, seed)
    start_epoch(loader, epoch, skip)
    return loader


def test_every_source_reads_classes_counts_and_channels(sources):
    for name, spec in sources.items():
        train, val = resolve_dataset(spec, "train"), resolve_dataset(spec, "val", class_names=CLASSES)
        assert train.class_names == CLASSES and train.grayscale, name
        x, y = train[0] if name == "hfds" else next(iter(train))
        assert x.mode == "L" and x.size == (12, 12) and 0 <= y < 4
        n_val = len(val) if name == "hfds" else val.size()
        assert n_val == 30, name
    info = describe_source(sources["wds"])
    assert info["splits"] == {"train": {"samples": 120, "shards": 4}, "validation": {"samples": 30, "shards": 1}}
    assert info["classes"] == CLASSES and info["kind"] == "wds"
    assert describe_source(sources["hfids"])["splits"]["train"] == {"samples": 120, "shards": 3}


@pytest.mark.parametrize("kind", ["wds", "hfids"])
def test_an_epoch_deals_each_sample_once_over_ranks_and_workers(sources, kind):
    ds = resolve_dataset(sources[kind], "train")
    every = sorted(_ids(_train_loader(ds, batch=1)))  # 120 readers' worth: nothing left out
    assert len(every) == 120 and len(set(every)) == 120
    seen = []
    for rank in range(2):
        loader = _train_loader(ds, batch=8, world=2, rank=rank)
        ids = _ids(loader)
        assert len(ids) == len(loader) * 8 == 56  # 120 // (2 ranks x 8) x 8 per rank: whole batches
        seen += ids
    assert len(set(seen)) == len(seen) == 112 and set(seen) <= set(every)  # 120 mod 16 = 8 left out
    again = _ids(_train_loader(ds, batch=8, world=2, rank=0))
    other_epoch = _ids(_train_loader(ds, batch=8, world=2, rank=0, epoch=1))
    assert again == _ids(_train_loader(ds, batch=8, world=2, rank=0)) and again != other_epoch


@pytest.mark.parametrize("kind", ["wds", "hfids"])
def test_a_resumed_epoch_replays_the_same_samples_in_the_same_order(sources, kind):
    ds = resolve_dataset(sources[kind], "train")
    full = _ids(_train_loader(ds, batch=8, epoch=2))
    for k in (1, 6, 14):
        assert _ids(_train_loader(ds, batch=8, epoch=2, skip=8 * k)) == full[8 * k:], k


@pytest.mark.slow
def test_a_resumed_epoch_with_loader_workers_replays_the_same_order(sources):
    ds = resolve_dataset(sources["wds"], "train")
    full = _ids(_train_loader(ds, batch=8, workers=2, epoch=1))
    assert len(full) == 112  # 120 // (2 workers x 8) x 16
    for k in (3, 8):  # resuming after an odd number of batches: the other worker gives the next batch
        assert _ids(_train_loader(ds, batch=8, workers=2, epoch=1, skip=8 * k)) == full[8 * k:], k


@pytest.mark.slow
def test_a_samples_augmentation_does_not_depend_on_the_worker(sources):
    ds = resolve_dataset(sources["wds"], "train")
    crop = T.Compose([T.RandomResizedCrop(12, scale=(0.3, 1.0)), T.RandomHorizontalFlip(), T.ToTensor()])

    def augment(img):  # the sample's identity (its first two pixels before cropping), then the crop
        return torch.cat([T.functional.pil_to_tensor(img)[0, 0, :2].float(), crop(img).flatten()])

    def samples(workers):
        loader = build_loader(ds, augment, 8, True, workers, seed=5)
        start_epoch(loader, 1, 0)
        return {int(v[0]) + 256 * int(v[1]): v for x, _, _ in loader for v in x}

    alone, two = samples(0), samples(2)
    common = alone.keys() & two.keys()
    assert len(common) >= 100 and all(torch.equal(alone[i], two[i]) for i in common)


def test_buffer_order_is_a_permutation_that_mixes_within_the_buffer():
    order = buffer_order(1000, 50, random.Random(0))
    assert sorted(order) == list(range(1000)) and order != list(range(1000))
    assert all(order[i] < i + 50 for i in range(1000))  # never ahead of what a 50-sample buffer has read


def test_limit_draws_a_fixed_subset_of_a_stream(sources):
    ds = limit(resolve_dataset(sources["wds"], "train"), 40, seed=1)
    ids = _ids(_train_loader(ds, batch=8))
    assert len(ids) == 40 and ids == _ids(_train_loader(limit(resolve_dataset(sources["wds"], "train"), 40, 1)))


@pytest.mark.parametrize("kind", ["wds", "hfids", "hfds"])
def test_validation_over_ranks_has_no_duplicates(sources, kind):
    ds = resolve_dataset(sources[kind], "val", class_names=CLASSES)
    one = sorted(_ids(build_loader(ds, T.ToTensor(), 7, False)))
    ranks = sorted(v for r in range(3) for v in _ids(build_loader(ds, T.ToTensor(), 7, False, world_size=3, rank=r)))
    assert ranks == one and len(one) == 30


# --------------------------------------------------------------------------------------------- bad data
def _read_all(spec, split="train"):
    ds = resolve_dataset(spec, split)
    bad = BadImageCounter(verbose=False)
    n = 0
    for _, y, skipped in build_loader(ds, T.ToTensor(), 8, split == "train"):
        bad(skipped)
        n += 0 if y is None else len(y)
    return n, bad.count


def test_a_corrupt_sample_is_skipped_and_counted(tmp_path):
    spec = f"wds:{write_wds(tmp_path / 'w', bad={('train', 5), ('train', 77)})}"
    assert _read_all(spec) == (118, 2)
    with pytest.raises(DataError, match="unreadable image .*train_00000005"):
        ds = resolve_dataset(spec, "train")
        for _, _, skipped in build_loader(ds, T.ToTensor(), 8, False):
            BadImageCounter(strict=True)(skipped)


@pytest.mark.parametrize("damage, message", [
    ("missing", "shard .*train-000001.tar is missing"),
    ("truncated", "cannot read shard .*train-000001.tar|train-000001.tar holds"),
    ("label", "label 7, outside the 4 classes"),
    ("count", "says num_samples 121 but its shard_lengths add up to 120"),
    ("lengths", "holds 32 samples but its index says 33"),
    ("more", "holds more samples than the 31"),
    ("pattern", "not in .*_info.json"),
    ("empty", "nothing after 'wds:'"),
    ("no info", "no _info.json"),
])
def test_bad_shards_are_one_error(tmp_path, damage, message):
    label = (lambda i: 7 if i == 40 else i % 4) if damage == "label" else (lambda i: i % 4)
    folder = write_wds(tmp_path / "w", label=label)
    info = json.loads((folder / "_info.json").read_text())
    spec = f"wds:{folder}"
    if damage == "missing":
        (folder / "train-000001.tar").unlink()
    elif damage == "truncated":
        data = (folder / "train-000001.tar").read_bytes()
        (folder / "train-000001.tar").write_bytes(data[: len(data) // 2 + 100])
    elif damage in ("count", "lengths", "more"):
        if damage == "count":
            info["splits"]["train"]["num_samples"] = 121
        else:
            info["splits"]["train"]["shard_lengths"][1] += 1 if damage == "lengths" else -1
            info["splits"]["train"]["num_samples"] = sum(info["splits"]["train"]["shard_lengths"])
        (folder / "_info.json").write_text(json.dumps(info))
    elif damage == "pattern":
        spec = f"wds:{folder}/train-{{000000..000009}}.tar"
    elif damage == "empty":
        spec = "wds:"
    elif damage == "no info":
        (folder / "_info.json").unlink()
    with pytest.raises(DataError, match=message):
        _read_all(spec)


@pytest.mark.slow
def test_the_cli_says_a_bad_source_in_one_line(tmp_path, capsys):
    folder = write_wds(tmp_path / "w", label=lambda i: 9 if i == 3 else i % 4)
    code = main(["train", "--data", f"wds:{folder}", "--model", "sequencer2d_tiny", "--epochs", "1", "--workers",
                 "0", "--batch-size", "8", "--output", str(tmp_path / "runs"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "label 9, outside the 4 classes" in err[0], err


def test_a_missing_extra_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "webdataset", None)
    with pytest.raises(DataError, match=r"needs the \[data\] extra: pip install 'lstmvision\[data\]'"):
        resolve_dataset(f"wds:{tmp_path}", "train")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"\[data\] extra"):
        resolve_dataset(f"hfds:{tmp_path}", "train")


# --------------------------------------------------------------------------------------- exact resume
def _train(spec, out, *extra):
    cmd = [sys.executable, "-m", "lstmvision", "train", "--data", spec, "--output", str(out), "--experiment", "r",
           "--model", "sequencer2d_tiny", "--img-size", "12", "--epochs", "2", "--batch-size", "8", "--workers", "0",
           "--device", "cpu", "--log-interval", "1", "--checkpoint-steps", "2", *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _weights(run):
    return load_file(str(next((run / "last").glob("*.safetensors"))))


@pytest.mark.slow
@pytest.mark.parametrize("kind, workers", [("wds", "0"), ("hfids", "0"), ("wds", "2")])
def test_a_run_killed_anywhere_resumes_to_identical_weights(sources, tmp_path, kind, workers):
    """Streams also with loader workers: their augmentation is seeded per sample. (hfds: is map-style, resumed
    by the sampler as folders are: tests/test_engine_resume.py.)"""
    whole = _train(sources[kind], tmp_path / "whole", "--workers", workers)
    assert whole.wait(timeout=300) == 0, whole.stdout.read()[-2000:]
    proc = _train(sources[kind], tmp_path / "killed", "--debug-step-delay", "0.3", "--workers", workers)
    state = tmp_path / "killed" / "r" / "last" / "state.pth"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and torch.load(state, weights_only=True)["global_step"] >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    killed = torch.load(state, weights_only=True)
    assert 0 < killed["global_step"] < 28 and killed["step_in_epoch"] > 0, "expected a mid-epoch checkpoint"
    resumed = _train(sources[kind], tmp_path / "killed", "--resume", str(tmp_path / "killed" / "r"), "--workers",
                     workers)
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log[-2000:]
    assert f"step {killed['step_in_epoch']}" in log
    a, b = _weights(tmp_path / "whole" / "r"), _weights(tmp_path / "killed" / "r")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ predict, transfer, API
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    model = create_model("sequencer2d_tiny", num_classes=4, in_chans=1, img_size=12)
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(1, 12, 12), mean=(0.5,), std=(0.5,))
    model.class_names = CLASSES
    return str(save_pretrained(model, tmp_path_factory.mktemp("model") / "m"))


@pytest.mark.parametrize("kind", ["wds", "hfds", "hfids"])
def test_predict_data_gives_every_sample_its_label_and_top_k(sources, tiny_model, kind, capsys):
    assert main(["predict", "--checkpoint", tiny_model, "--data", sources[kind], "--json", "-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["sample"] for r in out["results"]] == list(range(30))
    assert [r["label"] for r in out["results"]] == [CLASSES[i % 4] for i in range(30)]
    assert all(len(r["predictions"]) == 2 for r in out["results"])
    assert main(["predict", "--checkpoint", tiny_model, "--data", sources[kind], "--limit", "3"]) == 0
    assert capsys.readouterr().out.count("sample ") == 3


def test_predict_needs_images_or_data(tiny_model, capsys):
    assert main(["predict", "--checkpoint", tiny_model]) == 2
    assert "nothing to predict" in capsys.readouterr().err


@pytest.mark.slow
def test_transfer_takes_a_sharded_task(sources, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["transfer", "--initial-checkpoint", tiny_model, "--data", sources["wds"], "--output", str(out),
            "--epochs", "1", "--train-size", "40", "--val-size", "10", "--lrs", "1e-3", "--workers", "0",
            "--device", "cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    result = json.loads((out / "transfer.json").read_text())
    task = result["tasks"][0]
    assert task["n_train"] == 40 and task["n_classes"] == 4
    written = out / "sources" / "wds"
    assert len(list((written / "train").rglob("*.png"))) == 120 and len(list((written / "test").rglob("*.png"))) == 30


def test_a_hub_dataset_loads_from_the_hub_cache(tmp_path, monkeypatch):
    """`hfds:NAME[:split]` and `hfids:NAME` read a dataset repo that huggingface_hub downloaded (offline)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--someone--toy"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    files = repo / "snapshots" / commit / "data"
    files.mkdir(parents=True)
    local = datasets.load_from_disk(str(write_hf(tmp_path / "hf", n_train=40, n_val=12, shards=1)))
    for split in local:
        local[split].to_parquet(str(files / f"{split}-00000-of-00001.parquet"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    assert describe_source("hfds:someone/toy")["splits"] == {"train": {"samples": 40, "shards": 1},
                                                             "validation": {"samples": 12, "shards": 1}}
    val = resolve_dataset("hfids:someone/toy:validation", "val", class_names=CLASSES)
    assert val.size() == 12 and val.class_names == CLASSES
    with pytest.raises(DataError, match="hfds:someone/other"):
        resolve_dataset("hfds:someone/other", "train")


def test_the_analyses_read_hfds_and_refuse_a_stream(sources):
    images = open_images(sources["hfds"], "val")
    assert len(images.dataset) == 30
    with pytest.raises(ValueError, match="pick images by index"):
        open_images(sources["wds"], "val")


def test_a_run_folder_inside_the_shards_is_refused(sources, capsys):
    folder = sources["wds"].split(":", 1)[1]
    argv = ["train", "--data", sources["wds"], "--output", f"{folder}/runs", "--model", "sequencer2d_tiny",
            "--epochs", "1", "--workers", "0", "--device", "cpu"]
    assert main(argv) == 2
    assert "an input of this run" in capsys.readouterr().err
    assert not Path(folder, "runs").exists()


def test_a_worker_error_is_told_by_its_own_message(sources):
    text = ("Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\nlstmvision.data.images.DataError: shard a.tar is missing')
    assert worker_message(text) == "shard a.tar is missing" and worker_message("plain error") is None
    ds = resolve_dataset(sources["wds"], "train")
    _train_loader(ds, batch=8, epoch=1, skip=8 * 6)
    url, offset = ds.resume_position(0)  # where the reader starts again: a shard of the source, inside it
    assert url in {s.url for s in ds.source.shards} and 0 <= offset < 32
