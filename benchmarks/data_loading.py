"""Images/s of the training data path for the same 60,000 Fashion-MNIST training images stored three ways: a PNG
class-folder tree, WebDataset shards (`wds:`) and a Hugging Face dataset (`hfds:` map-style, `hfids:` streamed),
with 0 and 2 loader workers.

    python benchmarks/data_loading.py --work data/bench-formats --json benchmarks/results/cpu-data-loading.json

The PNG tree is written from the idx files (`--source`, default: the Debian package) by
`lstmvision.data.sources.to_image_folders`, the shards and the dataset by
`lstmvision data pack` from that tree (so all three hold the same PNG bytes). Two figures per format x workers:

- `loader`: the training loader alone (the default recipe's transform at 28 px, batch 128), images per second over
  `--batches` batches after `--warmup` batches (the worker start-up is outside the timing);
- `train`: training steps of `sequencer2d_tiny` (forward, backward, AdamW) fed by that loader, images per second
  over `--steps` steps after `--warmup`.

The configurations are interleaved: every repeat runs each one in turn, so load from other processes hits all
alike; the median, min and max over `--repeats` are reported, with the thread count. Measure on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lstmvision.data import build_loader, default_data_root, resolve_dataset
from lstmvision.data.loaders import start_epoch
from lstmvision.data.sources import to_image_folders
from lstmvision.engine.recipes import DEFAULTS
from lstmvision.models import create_model
from lstmvision.tasks.base import fill_normalisation
from lstmvision.tasks.classify import build_transforms


def pack(tree: Path, out: Path, fmt: str) -> Path:
    if not out.is_dir():
        subprocess.run([sys.executable, "-m", "lstmvision", "data", "pack", str(tree), str(out), "--format", fmt],
                       check=True)
    return out


def loader_for(spec: str, workers: int, batch: int) -> torch.utils.data.DataLoader:
    cfg = dict(DEFAULTS, img_size=28, mean=None, std=None)
    fill_normalisation(cfg, 1)
    train_tf, _ = build_transforms(cfg, 1)
    ds = resolve_dataset(spec, "train", img_mode="L")
    return build_loader(ds, train_tf, batch, True, workers, seed=0)


def timed(loader, skip: int, count: int, step=None) -> float:
    """Images/s over `count` batches after `skip` (the first epoch of the loader, from its start)."""
    start_epoch(loader, 0, 0)
    n, t0 = 0, None
    for i, (x, y, _) in enumerate(loader):
        if i == skip:
            t0 = time.perf_counter()
        if step is not None:
            step(x, y)
        if i >= skip:
            n += len(y)
        if i + 1 == skip + count:
            break
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", type=Path, default=None, help="Fashion-MNIST idx folder (default: the Debian package)")
    p.add_argument("--work", type=Path, default=Path("data/bench-formats"), help="where the three copies are kept")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=60, help="loader batches timed per measurement")
    p.add_argument("--steps", type=int, default=20, help="training steps timed per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    source = args.source or default_data_root()
    tree = to_image_folders(str(source), args.work / "png")  # train/ and test/ class folders of PNG files
    specs = {"png folder": str(tree), "wds": f"wds:{pack(tree, args.work / 'wds', 'wds')}",
             "hfds": f"hfds:{pack(tree, args.work / 'hfds', 'hfds')}"}
    specs["hfids"] = "hfids:" + specs["hfds"].split(":", 1)[1]
    model = create_model("sequencer2d_tiny", num_classes=10, in_chans=1, img_size=28).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    results: dict[str, dict[str, list[float]]] = {}
    for rep in range(args.repeats):
        for name, spec in specs.items():
            for w in args.workers:
                key = f"{name}, workers {w}"
                r = results.setdefault(key, {"loader": [], "train": []})
                r["loader"].append(timed(loader_for(spec, w, args.batch_size), args.warmup, args.batches))
                r["train"].append(timed(loader_for(spec, w, args.batch_size), args.warmup, args.steps, step))
                print(f"repeat {rep}: {key}: loader {r['loader'][-1]:.0f} img/s, train {r['train'][-1]:.0f} img/s",
                      flush=True)
    summary = {k: {m: dict(median=round(statistics.median(v), 1), min=round(min(v), 1), max=round(max(v), 1))
                   for m, v in r.items()} for k, r in results.items()}
    folder = summary.get("png folder, workers 2")
    ratios = {k: round(v["loader"]["median"] / folder["loader"]["median"], 2) for k, v in summary.items()} \
        if folder else {}
    out: dict[str, Any] = dict(
        what="images/s of the training loader alone and of sequencer2d_tiny training steps fed by it, 60,000 "
             "Fashion-MNIST training images stored as PNG folders, WebDataset shards and a Hugging Face dataset",
        images=60000, batch_size=args.batch_size, batches=args.batches, steps=args.steps, warmup=args.warmup,
        repeats=args.repeats, threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(), torch=torch.__version__, results=summary, loader_vs_png_folder_workers_2=ratios)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
