"""`lstmvision train`: train a model on an ImageFolder tree or MNIST-format idx files (default: Fashion-MNIST)."""
from __future__ import annotations

import argparse
import json
import math
from typing import Any

from lstmvision.constants import AMP_MODES, DETECTORS
from lstmvision.engine.recipes import DEFAULT_RECIPE, RECIPES
from lstmvision.engine.settings import DETECT_KEYS, SEGMENT_KEYS, SETTINGS, SWITCHES, TASK_WORDS, task_mismatch


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.epilog = ("Distributed: torchrun --nproc-per-node N -m lstmvision train ... (nccl on GPUs, gloo on CPU; "
                "multi-node with --nnodes/--rdzv-endpoint as usual).")


def run(args: argparse.Namespace) -> int:
    if args.list_recipes:
        list_recipes("classify")
        return 0
    cfg = resolve_args(args)
    check_command_task(cfg, "classify")
    if args.print_config:
        print_config(cfg)
        return 0
    return run_training(cfg, "train")


def list_recipes(task: str) -> None:
    for name, recipe in RECIPES.items():
        if recipe.get("task", "classify") == task:
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in recipe.items()))


def resolve_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings from the parsed flags (`lstmvision.engine.config.resolve_config`)."""
    from lstmvision.cli._common import resolve_input_size
    from lstmvision.engine.config import resolve_config

    resolve_input_size(args)  # --input-size C H W: --in-chans C --img-size H (training inputs are square)
    return resolve_config(vars(args), args.config, args.recipe)


def print_config(cfg: dict[str, Any]) -> None:
    import yaml

    print(yaml.safe_dump({k: v for k, v in cfg.items() if not k.startswith("_")}, sort_keys=True), end="")


def run_task_training(args: argparse.Namespace, task: str, default_recipe: str, prog: str) -> int:
    """`segment train` / `detect train`: --list-recipes, the task's default recipe, a recipe of another task
    refused in one line, --print-config, then the training run."""
    if args.list_recipes:
        list_recipes(task)
        return 0
    if not args.recipe:
        args.recipe = default_recipe
    cfg = resolve_args(args)
    recipe_task = RECIPES[cfg["recipe"]].get("task", "classify")
    if recipe_task != task and not cfg.get("resume"):
        own = ", ".join(name for name, r in RECIPES.items() if r.get("task") == task)
        hint = "; use `lstmvision train`" if recipe_task == "classify" else ""
        raise ValueError(f"recipe {cfg['recipe']!r} is a {TASK_WORDS[recipe_task]} recipe, not a "
                         f"{TASK_WORDS[task]} recipe{hint} ({TASK_WORDS[task]} recipes: {own})")
    check_command_task(cfg, task)
    if args.print_config:
        print_config(cfg)
        return 0
    return run_training(cfg, prog)


def check_command_task(cfg: dict[str, Any], task: str) -> None:
    """A run of another task (a --resume of a detection run under `train`, say) refused in one line naming the
    command that trains it."""
    run_task = cfg.get("task") or "classify"
    if run_task != task:
        raise ValueError(task_mismatch(run_task, task, cfg.get("resume")))


def run_training(cfg: dict, prog: str) -> int:
    """Train by `cfg` and print the outcome in the run's metrics (classification or segmentation)."""
    from lstmvision.engine.callbacks import debug_callbacks
    from lstmvision.engine.trainer import train
    from lstmvision.tasks import get_task

    result = train(cfg, callbacks=debug_callbacks(cfg))
    if result.get("rank", 0) == 0:
        task = get_task(cfg.get("task"))
        final, best = result["final"], result["best"] or {}
        if final.get(task.score) is None:
            print(f"{prog}: nothing left to do; run folder: {result['run_dir']}")
        else:
            # the run's own metrics: Mask R-CNN adds the mask AP (segm_*) to the task's box AP
            scores = " ".join(f"{k} {v:.2f}%" for k, v in final.items() if k != "loss")
            print(f"{prog}: done in {result['time_s']:.0f}s; final {scores} loss {final['loss']:.4f}; best "
                  f"{task.score} {best.get(task.score, float('nan')):.2f}% (epoch {best.get('epoch')})")
            print(f"{prog}: run folder: {result['run_dir']} (checkpoints best/ and last/)")
        print(result_line(result), flush=True)
    return 0


def result_line(result: dict) -> str:
    """The run's outcome as one line of strict JSON: a metric that is not a number (detection has no
    validation loss: NaN) is null, which every JSON parser reads."""
    def finite(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        return [finite(x) for x in v] if isinstance(v, (list, tuple)) else v

    return json.dumps(finite({k: v for k, v in result.items() if k != "rank"}), allow_nan=False)


# timm's train.py short flags
SHORT_FLAGS = {"model": ("-m",), "batch_size": ("-b",), "workers": ("-j",)}


def _task_setting(key: str, segment: bool, detect: bool) -> bool:
    """Whether the flag of setting `key` belongs on a parser with (or without) the task settings."""
    return (key not in SEGMENT_KEYS or segment) and (key not in DETECT_KEYS or detect)


# what the task commands' flags mean where it differs from `lstmvision train`
TASK_HELP = {
    "segment": dict(data="ADE20K-layout folder (images/ and annotations/ with training/, validation/) or "
                         "images/ + masks/ folders, e.g. from `lstmvision segment scenes`"),
    "detect": dict(data="COCO-layout folder (annotations/instances_<split>.json, <split>/), e.g. from "
                        "`lstmvision detect scenes`"),
}
DEFAULT_RECIPES = {"classify": DEFAULT_RECIPE, "segment": "upernet-small", "detect": "detect-small"}


def add_train_arguments(p: argparse.ArgumentParser, segment: bool = False, detect: bool = False) -> None:
    """The training flags; `segment` adds the segmentation settings (`lstmvision segment train`), `detect` the
    detection settings (`lstmvision detect train`)."""
    task = "segment" if segment else "detect" if detect else "classify"
    helps = TASK_HELP.get(task, {})
    p.add_argument("--config", "-c", metavar="FILE.yaml", help="YAML of settings (flags override it)")
    p.add_argument("--recipe", help=f"named preset (default {DEFAULT_RECIPES[task]}); see --list-recipes")
    p.add_argument("--list-recipes", action="store_true", help="print the recipes and exit")
    for key, (typ, nargs, help_text) in SETTINGS.items():
        if not _task_setting(key, segment, detect):
            continue
        kw: dict[str, Any] = dict(type=typ, default=None, help=helps.get(key, help_text), dest=key)
        if nargs is not None:
            kw["nargs"] = nargs
        if key in ("amp", "detector"):
            kw["choices"] = AMP_MODES if key == "amp" else DETECTORS
        if key == "initial_checkpoint":
            kw["metavar"] = "PATH"
        p.add_argument("--" + key.replace("_", "-"), *SHORT_FLAGS.get(key, ()), **kw)
        if key == "model":  # the model's weights next to its name
            _add_switch(p, "pretrained", SWITCHES["pretrained"])
        if key == "img_size":
            p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                           help="input channels and size: --in-chans C --img-size H (H = W)")
    for key, help_text in SWITCHES.items():
        if not _task_setting(key, segment, detect) or key == "pretrained":
            continue
        _add_switch(p, key, help_text)
    p.add_argument("--debug-nan-at-step", dest="_debug_nan_at_step", type=int, default=None,
                   help=argparse.SUPPRESS)
    p.add_argument("--debug-step-delay", dest="_debug_step_delay", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--debug-rank-dir", dest="_debug_rank_dir", default=None, help=argparse.SUPPRESS)


def _add_switch(p: argparse.ArgumentParser, key: str, help_text: str) -> None:
    p.add_argument("--" + key.replace("_", "-"), dest=key, action=argparse.BooleanOptionalAction, default=None,
                   help=help_text)
