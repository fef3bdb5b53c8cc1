"""Training and validation images/s of detection recipes on the CPU (default: detect-small vs detect-cpu), in one
process on the same scenes, the recipes interleaved step by step.

    python benchmarks/detect_cpu.py --data data/fmnist-det --steps 12 \
        --json benchmarks/results/cpu-detect-recipes.json

Each recipe's settings are resolved as `lstmvision detect train --recipe NAME` resolves them and its detector
is built by the detection task, so the recipe keys travel the path training takes. Every recipe trains on the
same batches (the same images, flips and drawn training sizes: the random state is reset before each step) and
validates on the same images. A train step is forward, backward and the AdamW update of the recipe's settings;
a validation step is the trainer's evaluation pass of one image (detections and the validation loss, without
the COCO scoring). Data loading is not timed (the trainer loads in a worker process). The order of the
recipes alternates from step to step (A B, B A, ...) so that load from other processes hits all alike; the
first `--warmup` steps of each are not counted. Threads: `detect train`'s own choice (the cores left after its
data worker) unless `--threads` is given.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
from timm.optim import create_optimizer_v2

from lstmvision.data.detection import collate_detection
from lstmvision.device import cpu_threads
from lstmvision.engine.config import resolve_config
from lstmvision.tasks import get_task

SAMPLING_KEYS = ("detector", "model", "img_size", "train_sizes", "fpn_channels", "batch_size", "rpn_pre_nms_top_n",
                 "rpn_post_nms_top_n", "box_batch_size_per_image")


class Recipe:
    """One recipe's detector and optimizer, built the way `detect train --recipe NAME --data DATA` builds them."""

    def __init__(self, name: str, data: str, batch_size: int | None, model: str | None):
        given = dict(data=data, task="detect", batch_size=batch_size, model=model, workers=0)
        self.name, self.cfg = name, resolve_config(given, recipe=name)
        self.task = get_task("detect")
        self.data = self.task.build_data(self.cfg, 1, 0, pin_memory=False)
        torch.manual_seed(0)
        self.model = self.task.build_model(self.cfg, self.data).train()
        self.criterion, _ = self.task.build_loss(self.cfg, self.data)
        lr = self.cfg["warmup_lr"] if self.cfg["warmup_epochs"] else self.cfg["lr"]  # a run's first steps
        self.optimizer = create_optimizer_v2(self.model, opt=self.cfg["opt"], lr=lr,
                                             weight_decay=self.cfg["weight_decay"])

    def train_step(self, x: list, y: list, seed: int) -> float:
        """Seconds of one training step on (x, y), the random state (training sizes, sampling) set by `seed`."""
        torch.manual_seed(seed)
        self.model.train()
        t0 = time.perf_counter()
        loss = self.task.train_loss(self.model, x, y, self.criterion)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    def eval_step(self, x: list, y: list) -> float:
        """Seconds of the trainer's evaluation pass of (x, y): detections and validation loss."""
        self.model.eval()
        t0 = time.perf_counter()
        self.model.losses_and_detections(x, y)
        return time.perf_counter() - t0


def batches(loader, batch_size: int, count: int, seed: int) -> list[tuple[list, list]]:
    """`count` batches of `batch_size` images of `loader`'s dataset (with its transform: training flips) drawn
    by `seed`, loaded now."""
    dataset = loader.dataset
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator).tolist()
    if len(order) < batch_size * count:
        raise ValueError(f"{count} batches of {batch_size} need {batch_size * count} images; the data has {len(order)}")
    torch.manual_seed(seed)
    out = []
    for k in range(count):
        x, y, bad = collate_detection([dataset[i] for i in order[k * batch_size:(k + 1) * batch_size]])
        if bad or x is None:
            raise ValueError(f"unreadable images in the benchmark data: {[b.path for b in bad]}")
        out.append((x, y))
    return out


def summary(seconds: list[float], images: int) -> dict[str, Any]:
    rates = [images / s for s in seconds]
    return dict(median=round(statistics.median(rates), 3), min=round(min(rates), 3), max=round(max(rates), 3),
                steps=len(rates), images_per_step=images, seconds=[round(s, 3) for s in seconds])


def interleaved(recipes: list[Recipe], work: list, step, warmup: int) -> dict[str, list[float]]:
    """Seconds of `step(recipe, item, k)` for every item of `work`, the recipes' order alternating per item;
    the first `warmup` items not kept."""
    seconds: dict[str, list[float]] = {r.name: [] for r in recipes}
    for k, item in enumerate(work):
        for r in (recipes if k % 2 == 0 else recipes[::-1]):
            s = step(r, item, k)
            if k >= warmup:
                seconds[r.name].append(s)
    return seconds


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="COCO-layout scenes (`lstmvision detect scenes --output DIR`)")
    p.add_argument("--recipes", nargs="+", default=["detect-small", "detect-cpu"], help="the first is the baseline")
    p.add_argument("--model", help="backbone for every recipe (default: each recipe's own)")
    p.add_argument("--batch-size", type=int, help="training batch (default: each recipe's own)")
    p.add_argument("--steps", type=int, default=12, help="timed training steps per recipe")
    p.add_argument("--eval-images", type=int, default=20, help="timed validation images per recipe")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps (training and validation each)")
    p.add_argument("--threads", type=int, help="torch threads (default: detect train's, cores - 1 data worker)")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or cpu_threads(1))
    recipes = [Recipe(name, args.data, args.batch_size, args.model) for name in args.recipes]
    sizes = {r.cfg["batch_size"] for r in recipes}
    if len(sizes) != 1:
        raise ValueError(f"the recipes train with different batch sizes {sorted(sizes)}: give --batch-size")
    batch_size, base = sizes.pop(), recipes[0]
    train = batches(base.data.train_loader, batch_size, args.steps + args.warmup, seed=0)
    val = batches(base.data.val_loader, 1, args.eval_images + args.warmup, seed=1)
    train_s = interleaved(recipes, train, lambda r, b, k: r.train_step(*b, seed=k), args.warmup)
    eval_s = interleaved(recipes, val, lambda r, b, k: r.eval_step(*b), args.warmup)
    result = dict(
        command=shlex.join(["python", "benchmarks/detect_cpu.py", *(sys.argv[1:] if argv is None else argv)]),
        device="cpu", machine=machine(), threads=torch.get_num_threads(), torch=torch.__version__,
        torchvision=torchvision.__version__, data=args.data,
        recipes={r.name: dict(settings={k: r.cfg.get(k) for k in SAMPLING_KEYS},
                              train_img_s=summary(train_s[r.name], batch_size),
                              eval_img_s=summary(eval_s[r.name], 1)) for r in recipes})
    for r in recipes[1:]:
        result["recipes"][r.name]["speedup_vs_" + base.name] = {
            kind: round(result["recipes"][r.name][kind]["median"] / result["recipes"][base.name][kind]["median"], 3)
            for kind in ("train_img_s", "eval_img_s")}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
