"""Config resolution for `lstmvision train`: defaults < recipe < `--config FILE.yaml` < explicit flags.

A resumed run (`--resume RUN`) starts from the run's saved `config.yaml`; explicit flags still win (e.g. a
larger `--epochs` to extend a run).

Every value is type-checked (YAML values are coerced as the flags would be: `lr: 1e-3` is a number) and
range-checked before anything is built (`check_settings`); the model is built once on the meta device with
the settings to catch unknown `--model-kwargs` and too-small `--img-size` (`check_model`). The mean/std
length against the input channels is `check_channels`: `resolve_config` runs it when the channels follow
from the flags or the data folder's kind; the trainer runs it again once the data is loaded.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import yaml

from lstmvision.data import INTERPOLATIONS
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
    # segmentation only (`lstmvision segment train`)
    "seg_base_size": (int, 2, "LONG SHORT: the image scale random resizing and evaluation start from"),
    "seg_ratio_range": (float, 2, "random resize ratio range around --seg-base-size"),
    "seg_cat_max_ratio": (float, None, "random crops retry while one class covers more than this fraction"),
    "seg_stride": (int, None, "sliding-window stride of evaluation (default: 2/3 of --img-size, the crop)"),
    "aux_weight": (float, None, "loss weight of the auxiliary FCN head (0 = no auxiliary head)"),
    "decoder_channels": (int, None, "UperNet decoder channels (default: 192 for ViL-T, 384 for larger ViL, "
                                    "else 256)"),
}
SEGMENT_KEYS = ("seg_base_size", "seg_ratio_range", "seg_cat_max_ratio", "seg_stride", "aux_weight",
                "decoder_channels", "photometric")
TASKS = ("classify", "segment")
_BOOLS: dict[str, str] = {
    "ema": "keep an EMA of the weights (evaluated too)",
    "channels_last": "channels-last memory format",
    "compile": "torch.compile the model",
    "grad_checkpointing": "gradient checkpointing",
    "strict_images": "an unreadable image is an error instead of being skipped",
    "photometric": "photometric distortion (brightness, contrast, saturation, hue) of training images",
}
_BOOL_KEYS = (*_BOOLS, "eval_ema")
ERASE_MODES = ("const", "rand", "pixel")
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "plateau", "poly", "constant", "rsqrt")


def add_train_arguments(p: argparse.ArgumentParser, segment: bool = False) -> None:
    """The training flags; `segment` adds the segmentation settings (`lstmvision segment train`)."""
    p.add_argument("--config", "-c", metavar="FILE.yaml", help="YAML of settings (flags override it)")
    p.add_argument("--recipe", help=f"named preset (default {DEFAULT_RECIPE}); see --list-recipes")
    p.add_argument("--list-recipes", action="store_true", help="print the recipes and exit")
    for key, (typ, nargs, help_text) in _FLAGS.items():
        if key in SEGMENT_KEYS and not segment:
            continue
        kw: dict[str, Any] = dict(type=typ, default=None, help=help_text, dest=key)
        if nargs is not None:
            kw["nargs"] = nargs
        if key == "amp":
            kw["choices"] = ["none", "bf16", "fp16"]
        p.add_argument("--" + key.replace("_", "-"), **kw)
    for key, help_text in _BOOLS.items():
        if key in SEGMENT_KEYS and not segment:
            continue
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
    out = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        try:
            out[key] = coerce_setting(key, value)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return out


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _scalar(key: str, typ: type, value: Any) -> Any:
    """`value` (from YAML) as the flag's type, or a one-line error."""
    if typ is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if typ in (int, float) and not isinstance(value, bool):
        try:
            number = typ(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if typ is float and isinstance(number, (int, float)):
            return float(number)
        if typ is int and isinstance(number, float) and number.is_integer():
            return int(number)
        if typ is int and isinstance(number, int):
            return number
    kind = {int: "an integer", float: "a number", str: "a string"}[typ]
    raise ValueError(f"{_flag(key)} must be {kind}, got {value!r}")


def coerce_setting(key: str, value: Any) -> Any:
    """A setting from YAML (or a saved run) checked against its flag's type; numbers written as strings
    ('1e-3', which YAML reads as text) are converted."""
    if value is None or key not in DEFAULTS:
        return value
    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise ValueError(f"{_flag(key)} must be true or false, got {value!r}")
        return value
    if key == "task":
        if value not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {value!r}")
        return value
    if key == "model_kwargs":
        if isinstance(value, dict) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value
        raise ValueError(f"--model-kwargs must be a mapping (or key=value strings), got {value!r}")
    typ, nargs, _ = _FLAGS[key]
    if nargs is None:
        return _scalar(key, typ, value)
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(nargs, int) and len(values) != nargs:
        raise ValueError(f"{_flag(key)} takes {nargs} values, got {len(values)}: {value!r}")
    if not values:
        raise ValueError(f"{_flag(key)} needs at least one value")
    return [_scalar(key, typ, v) for v in values]


def _check_range(cfg: dict[str, Any], key: str, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    value = cfg.get(key)
    if value is None:
        return
    values = value if isinstance(value, list) else [value]
    for v in values:
        ok = math.isfinite(v)
        ok = ok and (low is None or (v > low if low_open else v >= low))
        ok = ok and (high is None or (v < high if high_open else v <= high))
        if not ok:
            lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
            hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
            shown = value if isinstance(value, list) else v
            raise ValueError(f"{_flag(key)} must be in {lo}, {hi}, got {shown}")


def _check_pair(cfg: dict[str, Any], key: str) -> None:
    low, high = cfg[key]
    if low > high:
        raise ValueError(f"{_flag(key)} is a range LOW HIGH with LOW <= HIGH, got {low:g} {high:g}")


def _check_choice(cfg: dict[str, Any], key: str, choices: tuple[str, ...]) -> None:
    if cfg.get(key) is not None and cfg[key] not in choices:
        raise ValueError(f"{_flag(key)} must be one of {', '.join(choices)}; got {cfg[key]!r}")


def _check_augment(policy: str) -> None:
    from timm.data import create_transform

    try:
        create_transform((3, 32, 32), is_training=True, auto_augment=policy)
    except Exception as e:  # timm reports unknown policies with assertions, KeyErrors, ValueErrors
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"--aa {policy!r} is not an auto-augment policy timm knows ({detail}); use e.g. "
            "rand-m9-mstd0.5-inc1-mmax9, augmix-m5-w4-d2, original, v0, 3a, or none"
        ) from None


def _check_optimizer(cfg: dict[str, Any]) -> None:
    from timm.optim import list_optimizers

    name = str(cfg["opt"]).lower()
    base = name.split("_", 1)[1] if name.startswith("lookahead_") else name
    if base not in list_optimizers():
        raise ValueError(f"--opt {cfg['opt']!r} is not a timm optimizer (e.g. adamw, sgd, lamb, adam)")


def check_settings(cfg: dict[str, Any]) -> None:
    """Every setting's range and shape, as one clear error before anything is built."""
    for key, default in DEFAULTS.items():
        if default is not None and key != "model_kwargs" and cfg.get(key) is None:
            raise ValueError(f"{_flag(key)} needs a value, got none (null)")
    for key in ("epochs", "batch_size", "grad_accum", "lr_base_size", "log_interval", "limit_train", "limit_val",
                "num_classes", "threads"):
        if cfg.get(key) is not None and (not isinstance(cfg[key], int) or cfg[key] < 1):
            raise ValueError(f"{_flag(key)} must be a positive integer, got {cfg[key]!r}")
    for key in ("workers", "cooldown_epochs", "checkpoint_steps", "warmup_epochs", "warmup_lr", "min_lr",
                "weight_decay", "momentum", "color_jitter", "mixup", "cutmix"):
        _check_range(cfg, key, 0)
    for key in ("lr", "lr_base", "opt_eps", "clip_grad", "std"):
        _check_range(cfg, key, 0, low_open=True)
    for key in ("hflip", "reprob", "mixup_prob", "mixup_switch_prob"):
        _check_range(cfg, key, 0, 1)
    for key in ("smoothing", "drop_path", "drop", "ema_decay", "opt_betas"):
        _check_range(cfg, key, 0, 1, high_open=True)
    _check_range(cfg, "layer_decay", 0, 1, low_open=True)
    _check_range(cfg, "crop_pct", 0, 1, low_open=True)
    _check_range(cfg, "scale", 0, 1, low_open=True)
    _check_range(cfg, "ratio", 0, low_open=True)
    _check_range(cfg, "img_size", 8)
    _check_pair(cfg, "scale")
    _check_pair(cfg, "ratio")
    if len(cfg["opt_betas"]) != 2:
        raise ValueError(f"--opt-betas takes two values (BETA1 BETA2), got {len(cfg['opt_betas'])}")
    if cfg.get("in_chans") is not None and cfg["in_chans"] not in (1, 3):
        raise ValueError(f"--in-chans must be 1 (grayscale) or 3 (RGB), got {cfg['in_chans']}")
    _check_choice(cfg, "amp", ("none", "bf16", "fp16"))
    _check_choice(cfg, "task", TASKS)
    _check_range(cfg, "seg_base_size", 8)
    _check_range(cfg, "seg_ratio_range", 0, low_open=True)
    _check_pair(cfg, "seg_ratio_range")
    _check_range(cfg, "seg_cat_max_ratio", 0, 1, low_open=True)
    _check_range(cfg, "seg_stride", 1)
    _check_range(cfg, "decoder_channels", 1)
    _check_range(cfg, "aux_weight", 0)
    _check_choice(cfg, "interpolation", INTERPOLATIONS)
    _check_choice(cfg, "train_interpolation", ("random", *INTERPOLATIONS))
    _check_choice(cfg, "remode", ERASE_MODES)
    _check_choice(cfg, "sched", SCHEDULERS)
    _check_optimizer(cfg)
    if cfg.get("aa"):
        _check_augment(cfg["aa"])
    for key in ("mean", "std"):
        if cfg.get(key) is not None and len(cfg[key]) not in (1, 3):
            raise ValueError(f"{_flag(key)} takes 1 value (grayscale) or 3 (RGB), got {len(cfg[key])}")


def check_channels(cfg: dict[str, Any], in_chans: int) -> None:
    """--mean/--std must have one value (used for every channel) or one per input channel of the data."""
    for key in ("mean", "std"):
        values = cfg.get(key)
        if values is not None and len(values) not in (1, in_chans):
            kind, fix = ("grayscale (1 channel)", "give 1 value") if in_chans == 1 else \
                (f"{in_chans} channels", f"give 1 value or {in_chans}")
            raise ValueError(f"{_flag(key)} has {len(values)} values but the model input is {kind}: {fix} "
                             "(or set --in-chans)")


def check_model(cfg: dict[str, Any], in_chans: int) -> None:
    """Build the model on the meta device (no memory, no compute) and run one input of --img-size through it:
    unknown --model-kwargs and an input too small for the architecture become one clear error. A `timm:NAME`
    model is only checked to exist (timm's own constructors report their size limits at build time)."""
    from lstmvision.runtime import TIMM_PREFIX

    if str(cfg["model"]).startswith(TIMM_PREFIX):
        import timm

        if not timm.is_model(cfg["model"][len(TIMM_PREFIX):]):
            raise ValueError(f"unknown timm model {cfg['model']!r} (see timm.list_models())")
        return
    kwargs = dict(cfg.get("model_kwargs") or {})
    kwargs.setdefault("img_size", int(cfg["img_size"]))  # as the trainer builds it
    if cfg.get("drop_path"):
        kwargs["drop_path_rate"] = cfg["drop_path"]
    if cfg.get("drop"):
        kwargs["drop_rate"] = cfg["drop"]
    pretrained = cfg.get("pretrained")
    if pretrained and (Path(pretrained) / "config.json").is_file():  # fine-tuning keeps the saved arguments
        from lstmvision.weights import read_config

        kwargs = {**read_config(pretrained).get("kwargs", {}), **kwargs}
    try:
        check_input_size(cfg["model"], kwargs, in_chans, int(cfg["img_size"]), cfg.get("num_classes"))
    except TypeError as e:
        raise ValueError(f"{cfg['model']} cannot be built with --model-kwargs "
                         f"{cfg.get('model_kwargs') or {}}: {_first_line(e)}") from None


def check_input_size(name: str, kwargs: dict[str, Any], in_chans: int, size: int,
                     num_classes: int | None = None) -> None:
    """Build registered model `name` with `kwargs` on the meta device (no memory, no compute) and pass one
    (1, in_chans, size, size) input: a ValueError if the architecture cannot take that size. Arguments the
    model does not take raise TypeError.

    The forward pass is skipped at or above the model's own input size with no architecture arguments: such
    sizes work, and a long LSTM sequence costs seconds even on the meta device (dispatch per time step)."""
    import torch

    from lstmvision.models import create_model

    shape_args = set(kwargs) - {"img_size", "in_chans", "num_classes", "drop_path_rate", "drop_rate"}
    kwargs = dict(kwargs, in_chans=in_chans)
    num_classes = kwargs.pop("num_classes", None) or num_classes or 10
    with torch.device("meta"), torch.no_grad():
        try:
            model = create_model(name, num_classes=num_classes, **kwargs)
        except AssertionError as e:
            raise TypeError(_first_line(e)) from None
        except ValueError as e:  # the constructor's own size check (e.g. an image smaller than a patch)
            raise ValueError(f"{name} cannot take {size}x{size} inputs (--img-size {size}): "
                             f"{_first_line(e)}") from None
        own_size = int((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (0, 0, 0))[-1])
        if size >= own_size and not shape_args:
            return
        try:
            model.eval()(torch.empty(1, in_chans, size, size))
        except (NotImplementedError, TypeError):
            return  # an operation without a meta implementation: the real run will tell
        except (RuntimeError, AssertionError, ValueError) as e:
            if "meta" in str(e).lower():
                return
            raise ValueError(f"{name} cannot take {size}x{size} inputs (--img-size {size}): "
                             f"{_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _data_channels(cfg: dict[str, Any]) -> int | None:
    """Input channels the run will have, when it can be told without reading the data (None if unknown)."""
    if cfg.get("in_chans"):
        return int(cfg["in_chans"])
    from lstmvision.data import default_channels

    try:
        return default_channels(cfg.get("data"))
    except (ValueError, OSError):
        return None  # missing data: the trainer reports it


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
    check_settings(cfg)
    in_chans = _data_channels(cfg)
    if in_chans is not None:
        check_channels(cfg, in_chans)
    check_model(cfg, in_chans or 3)
    return cfg
