"""`lstmvision train`: train a model on an ImageFolder tree or MNIST-format idx files (default: Fashion-MNIST)."""
from __future__ import annotations

import argparse
import json

import yaml


def add_arguments(p: argparse.ArgumentParser) -> None:
    from lstmvision.engine.config import add_train_arguments

    add_train_arguments(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.epilog = ("Distributed: torchrun --nproc-per-node N -m lstmvision train ... (nccl on GPUs, gloo on CPU; "
                "multi-node with --nnodes/--rdzv-endpoint as usual).")


def run(args: argparse.Namespace) -> int:
    from lstmvision.engine.config import resolve_config
    from lstmvision.engine.recipes import RECIPES

    if args.list_recipes:
        for name, recipe in RECIPES.items():
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in recipe.items()))
        return 0
    cfg = resolve_config(args)
    if args.print_config:
        print(yaml.safe_dump({k: v for k, v in cfg.items() if not k.startswith("_")}, sort_keys=True), end="")
        return 0
    return run_training(cfg, "train")


def run_training(cfg: dict, prog: str) -> int:
    """Train by `cfg` and print the outcome in the run's metrics (classification or segmentation)."""
    from lstmvision.engine.callbacks import debug_callbacks
    from lstmvision.engine.tasks import get_task
    from lstmvision.engine.trainer import train

    result = train(cfg, callbacks=debug_callbacks(cfg))
    if result.get("rank", 0) == 0:
        task = get_task(cfg.get("task"))
        final, best = result["final"], result["best"] or {}
        if final.get(task.score) is None:
            print(f"{prog}: nothing left to do; run folder: {result['run_dir']}")
        else:
            scores = " ".join(f"{k} {final[k]:.2f}%" for k in task.metrics)
            print(f"{prog}: done in {result['time_s']:.0f}s; final {scores} loss {final['loss']:.4f}; best "
                  f"{task.score} {best.get(task.score, float('nan')):.2f}% (epoch {best.get('epoch')})")
            print(f"{prog}: run folder: {result['run_dir']} (checkpoints best/ and last/)")
        print(json.dumps({k: v for k, v in result.items() if k != "rank"}), flush=True)
    return 0
