"""Config resolution for `lstmvision train`: defaults < recipe < `--config FILE.yaml` < explicit flags.

A resumed run (`--resume RUN`) starts from the run's saved `config.yaml`; explicit flags still win (e.g. a
larger `--epochs` to extend a run).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from lstmvision.engine.recipes import DEFAULT_RECIPE, DEFAULTS, get_recipe

# flag → (type, nargs, help); every DEFAULTS key gets a flag
_FLAGS: dict[str, tuple[Any, Any, str]] = {
    "model": (str, None, "registered model name (see `lstmvision models`)"),
    "pretrained": (str, None, "initial weights: file or saved folder (a new head if classes differ)"),
    "num_classes": (int, None, "classes (default: from the data)"),
    "in_chans": (int, None, "input channels (default: 1 for grayscale data, else 3)"),
    "model_kwargs": (str, "*", "extra model arguments as key=value (values parsed as YAML)"),
    "data": (str, None, "ImageFolder tree (train/, val/|validation/) or a folder of MNIST idx files "
                        "(default: $LSTMVISION_DATA or /usr/share/datasets/fashion-mnist)"),
    "limit_train": (int, None, "use a fixed random subset of N training images"),
    "limit_val": (int, None, "use a fixed random subset of N validation images"),
    "epochs": (int, None, "epochs (plus --cooldown-epochs)"),
    "batch_size": (int, None, "batch size per process"),
    "grad_accum": (int, None, "gradient accumulation steps"),
    "lr": (float, None, "learning rate (default: --lr-base scaled by global batch / --lr-base-size)"),
    "lr_base": (float, None, "base learning rate for linear scaling"),
    "lr_base_size": (int, None, "global batch at which --lr-base applies"),
    "opt": (str, None, "timm optimizer name (adamw, sgd, lamb, ...)"),
    "opt_eps": (float, None, "optimizer epsilon"),
    "opt_betas": (float, "+", "optimizer betas"),
    "momentum": (float, None, "SGD momentum"),
    "weight_decay": (float, None, "weight decay (not on biases / norms / no_weight_decay())"),
    "clip_grad": (float, None, "clip gradient norm to this value"),
    "layer_decay": (float, None, "layer-wise lr decay"),
    "sched": (str, None, "timm scheduler (cosine, step, ...)"),
    "warmup_epochs": (float, None, "warmup epochs"),
    "warmup_lr": (float, None, "warmup start lr"),
    "min_lr": (float, None, "final lr"),
    "cooldown_epochs": (int, None, "epochs at min lr after the schedule"),
    "img_size": (int, None, "input size"),
    "crop_pct": (float, None, "eval center-crop fraction"),
    "interpolation": (str, None, "eval interpolation"),
    "train_interpolation": (str, None, "train interpolation (random = bilinear or bicubic)"),
    "mean": (float, "+", "normalisation mean"),
    "std": (float, "+", "normalisation std"),
    "scale": (float, 2, "RandomResizedCrop scale range"),
    "ratio": (float, 2, "RandomResizedCrop aspect-ratio range"),
    "hflip": (float, None, "horizontal-flip probability"),
    "color_jitter": (float, None, "color jitter (0 = off)"),
    "aa": (str, None, "auto-augment policy, e.g. rand-m9-mstd0.5-inc1-mmax9 or 3a ('none' = off)"),
    "reprob": (float, None, "RandomErasing probability"),
    "remode": (str, None, "RandomErasing mode"),
    "mixup": (float, None, "Mixup alpha (0 = off)"),
    "cutmix": (float, None, "CutMix alpha (0 = off)"),
    "mixup_prob": (float, None, "probability of Mixup/CutMix per batch"),
    "mixup_switch_prob": (float, None, "probability of CutMix instead of Mixup"),
    "smoothing": (float, None, "label smoothing"),
    "drop_path": (float, None, "stochastic depth rate"),
    "drop": (float, None, "head dropout"),
    "ema_decay": (float, None, "EMA decay"),
    "amp": (str, None, "mixed precision: none, bf16 or fp16"),
    "device": (str, None, "cpu, cuda, cuda:1 (default: cuda if available)"),
    "workers": (int, None, "data-loader worker processes per rank"),
    "threads": (int, None, "CPU compute threads per process (default: cores left after the workers)"),
    "seed": (int, None, "random seed"),
    "output": (str, None, "parent folder of run folders"),
    "experiment": (str, None, "run folder name (default: date-model-size)"),
    "resume": (str, None, "resume a run: its folder, its last/ folder or last/state.pth"),
    "log_interval": (int, None, "steps between log lines"),
    "checkpoint_steps": (int, None, "also save last/ every N steps inside an epoch (0 = only at epoch end)"),
}
_BOOLS = {
    "ema": "keep an EMA of the weights (evaluated too)",
    "channels_last": "channels-last memory format",
    "compile": "torch.compile the model",
    "grad_checkpointing": "gradient checkpointing",
    "strict_images": "an unreadable image is an error instead of being skipped",
}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE.yaml", help="YAML of settings (flags override it)")
    p.add_argument("--recipe", help=f"named preset (default {DEFAULT_RECIPE}); see --list-recipes")
    p.add_argument("--list-recipes", action="store_true", help="print the recipes and exit")
    for key, (typ, nargs, help_text) in _FLAGS.items():
        kw: dict[str, Any] = dict(type=typ, default=None, help=help_text, dest=key)
        if nargs is not None:
            kw["nargs"] = nargs
        if key == "amp":
            kw["choices"] = ["none", "bf16", "fp16"]
        p.add_argument("--" + key.replace("_", "-"), **kw)
    for key, help_text in _BOOLS.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, action=argparse.BooleanOptionalAction, default=None,
                       help=help_text)
    p.add_argument("--debug-nan-at-step", dest="_debug_nan_at_step", type=int, default=None,
                   help=argparse.SUPPRESS)
    p.add_argument("--debug-step-delay", dest="_debug_step_delay", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--debug-rank-dir", dest="_debug_rank_dir", default=None, help=argparse.SUPPRESS)


def _parse_model_kwargs(items: list[str] | dict | None) -> dict[str, Any]:
    if items is None or isinstance(items, dict):
        return dict(items or {})
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--model-kwargs takes key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings")
    return {k.replace("-", "_"): v for k, v in data.items()}


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    explicit = {k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None}
    file_cfg = _load_yaml(args.config) if args.config else {}
    resume_cfg: dict[str, Any] = {}
    resume = explicit.get("resume") or file_cfg.get("resume")
    if resume:
        from lstmvision.runtime import find_checkpoint

        run_yaml = find_checkpoint(resume).parent / "config.yaml"
        if run_yaml.is_file():
            resume_cfg = _load_yaml(run_yaml)
    recipe_name = args.recipe or file_cfg.get("recipe") or resume_cfg.get("recipe") or DEFAULT_RECIPE
    cfg = dict(DEFAULTS)
    cfg.update(get_recipe(recipe_name))
    for source in (resume_cfg, file_cfg):
        unknown = [k for k in source if k not in DEFAULTS and k not in ("recipe", "run_dir", "world_size",
                                                                          "lr_resolved")]
        if unknown and source is file_cfg:
            raise ValueError(f"{args.config}: unknown settings {', '.join(sorted(unknown))}")
        cfg.update({k: v for k, v in source.items() if k in DEFAULTS})
    if resume_cfg:
        cfg["in_chans"] = resume_cfg.get("in_chans", cfg["in_chans"])
        cfg["num_classes"] = resume_cfg.get("num_classes", cfg["num_classes"])
    if resume_cfg and "pretrained" not in explicit:
        cfg["pretrained"] = None  # a resumed run restores its own weights
    cfg.update(explicit)
    cfg["resume"] = resume
    cfg["recipe"] = recipe_name
    cfg["model_kwargs"] = _parse_model_kwargs(cfg.get("model_kwargs"))
    if isinstance(cfg.get("aa"), str) and cfg["aa"].lower() in ("none", ""):
        cfg["aa"] = None
    for key in ("_debug_nan_at_step", "_debug_step_delay", "_debug_rank_dir"):
        cfg[key] = getattr(args, key, None)
    return cfg
