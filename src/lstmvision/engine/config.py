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

import math
import re
from pathlib import Path
from typing import Any

import yaml
import yaml.constructor
from timm.data import create_transform
from timm.models import is_model as is_timm_model
from timm.optim import list_optimizers

from lstmvision.constants import AMP_MODES, DETECTOR_PREFIX, DETECTORS, INTERPOLATIONS
from lstmvision.data.sources import default_channels
from lstmvision.engine.recipes import DEFAULT_RECIPE, DEFAULTS, get_recipe
from lstmvision.engine.settings import (
    ERASE_MODES,
    SCHEDULERS,
    SETTINGS,
    SWITCH_KEYS,
    TASK_NAMES,
    flag,
    task_mismatch,
)
from lstmvision.errors import first_line
from lstmvision.models.loading import check_input_size
from lstmvision.models.registry import released_tag
from lstmvision.models.timm_models import timm_name
from lstmvision.weights import CONFIG_NAME, find_checkpoint, read_config


def _yaml_problem(e: yaml.YAMLError) -> str:
    """What is wrong in a YAML text, in one line: a syntax error with its place, or a tag that would build an
    object (`!!python/object/apply:...`), which safe loading refuses."""
    problem = getattr(e, "problem", None) or first_line(e)
    tag = re.search(r"tag '([^']*)'", problem)
    if isinstance(e, yaml.constructor.ConstructorError) and tag:
        shown = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        return f"the YAML tag {shown} is not allowed (plain numbers, strings, lists and mappings only)"
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"not valid YAML: {problem}{where}"


def _parse_model_kwargs(items: list[str] | dict | None) -> dict[str, Any]:
    if items is None or isinstance(items, dict):
        return dict(items or {})
    out = {}
    for item in items:
        k, eq, v = str(item).partition("=")
        if not eq or not k.strip().isidentifier():
            raise ValueError(f"--model-kwargs takes key=value (key an argument name), got {item!r}")
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise ValueError(f"--model-kwargs {item!r}: {_yaml_problem(e)}") from None
    return out


def _load_yaml(path: str | Path, saved_run: bool = False) -> dict[str, Any]:
    """The settings of a YAML file, type-checked. `saved_run`: a run's own config.yaml, which runs of earlier
    versions wrote with `pretrained: PATH` (now `initial_checkpoint`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at offset {e.start}); "
                         "save the config file as UTF-8") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: {_yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of settings")
    out = {}
    if saved_run and isinstance(data.get("pretrained"), str):
        data = dict(data, initial_checkpoint=data.get("initial_checkpoint") or data["pretrained"], pretrained=False)
    for key, value in data.items():
        key = str(key).replace("-", "_")
        try:
            out[key] = coerce_setting(key, value)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return out


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
    raise ValueError(f"{flag(key)} must be {kind}, got {value!r}")


def pretrained_path_error(path: Any, given: str = "--pretrained ", fix: str = "--initial-checkpoint ") -> str:
    """The message for weights given the way earlier versions took them (`--pretrained PATH`)."""
    return (f"{given}{path}: pretrained is a switch now (on: the released weights of the model's tag); a weights "
            f"file or saved / run folder is {fix}{path}")


def coerce_setting(key: str, value: Any) -> Any:
    """A setting from YAML (or a saved run) checked against its flag's type; numbers written as strings
    ('1e-3', which YAML reads as text) are converted."""
    if key == "pretrained" and value is None:
        return False  # what configs of earlier versions wrote for "no initial weights"
    if value is None or key not in DEFAULTS:
        return value
    if key == "pretrained" and isinstance(value, str):
        raise ValueError(pretrained_path_error(value, "pretrained: ", "initial_checkpoint: "))
    if key in SWITCH_KEYS:
        if not isinstance(value, bool):
            raise ValueError(f"{flag(key)} must be true or false, got {value!r}")
        return value
    if key == "task":
        if value not in TASK_NAMES:
            raise ValueError(f"task must be one of {', '.join(TASK_NAMES)}, got {value!r}")
        return value
    if key == "model_kwargs":
        if isinstance(value, dict) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value
        raise ValueError(f"--model-kwargs must be a mapping (or key=value strings), got {value!r}")
    typ, nargs, _ = SETTINGS[key]
    if nargs is None:
        return _scalar(key, typ, value)
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if isinstance(nargs, int) and len(values) != nargs:
        raise ValueError(f"{flag(key)} takes {nargs} values, got {len(values)}: {value!r}")
    if not values:
        raise ValueError(f"{flag(key)} needs at least one value")
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
            raise ValueError(f"{flag(key)} must be in {lo}, {hi}, got {shown}")


def _check_pair(cfg: dict[str, Any], key: str) -> None:
    low, high = cfg[key]
    if low > high:
        raise ValueError(f"{flag(key)} is a range LOW HIGH with LOW <= HIGH, got {low:g} {high:g}")


def _check_choice(cfg: dict[str, Any], key: str, choices: tuple[str, ...]) -> None:
    if cfg.get(key) is not None and cfg[key] not in choices:
        raise ValueError(f"{flag(key)} must be one of {', '.join(choices)}; got {cfg[key]!r}")


def _check_augment(policy: str) -> None:
    try:
        create_transform((3, 32, 32), is_training=True, auto_augment=policy)
    except Exception as e:  # timm reports unknown policies with assertions, KeyErrors, ValueErrors
        raise ValueError(
            f"--aa {policy!r} is not an auto-augment policy timm knows ({first_line(e)}); use e.g. "
            "rand-m9-mstd0.5-inc1-mmax9, augmix-m5-w4-d2, original, v0, 3a, or none"
        ) from None


def _check_optimizer(cfg: dict[str, Any]) -> None:
    name = str(cfg["opt"]).lower()
    base = name.split("_", 1)[1] if name.startswith("lookahead_") else name
    if base not in list_optimizers():
        raise ValueError(f"--opt {cfg['opt']!r} is not a timm optimizer (e.g. adamw, sgd, lamb, adam)")


def check_settings(cfg: dict[str, Any]) -> None:
    """Every setting's range and shape, as one clear error before anything is built."""
    for key, default in DEFAULTS.items():
        if default is not None and key != "model_kwargs" and cfg.get(key) is None:
            raise ValueError(f"{flag(key)} needs a value, got none (null)")
    for key in ("epochs", "batch_size", "grad_accum", "lr_base_size", "log_interval", "limit_train", "limit_val",
                "num_classes", "threads"):
        if cfg.get(key) is not None and (not isinstance(cfg[key], int) or cfg[key] < 1):
            raise ValueError(f"{flag(key)} must be a positive integer, got {cfg[key]!r}")
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
    if not isinstance(cfg["pretrained"], bool):
        if isinstance(cfg["pretrained"], (str, Path)):
            raise ValueError(pretrained_path_error(cfg["pretrained"], "pretrained=", "initial_checkpoint="))
        raise ValueError(f"--pretrained is a switch (true or false), got {cfg['pretrained']!r}")
    if cfg["pretrained"] and cfg.get("initial_checkpoint"):
        raise ValueError("--pretrained (the released weights of the model's tag) and --initial-checkpoint PATH "
                         "exclude each other: give one")
    if cfg.get("resume") and (cfg["pretrained"] or cfg.get("initial_checkpoint")):
        given = "--pretrained" if cfg["pretrained"] else "--initial-checkpoint"
        raise ValueError(f"--resume and {given} exclude each other: a resumed run restores its own weights")
    if cfg.get("in_chans") is not None and cfg["in_chans"] not in (1, 3):
        raise ValueError(f"--in-chans must be 1 (grayscale) or 3 (RGB), got {cfg['in_chans']}")
    _check_choice(cfg, "amp", AMP_MODES)
    _check_choice(cfg, "task", TASK_NAMES)
    _check_range(cfg, "seg_base_size", 8)
    _check_range(cfg, "seg_ratio_range", 0, low_open=True)
    _check_pair(cfg, "seg_ratio_range")
    _check_range(cfg, "seg_cat_max_ratio", 0, 1, low_open=True)
    _check_range(cfg, "seg_stride", 1)
    _check_range(cfg, "decoder_channels", 1)
    _check_range(cfg, "aux_weight", 0)
    _check_choice(cfg, "detector", DETECTORS)
    _check_range(cfg, "train_sizes", 32)
    _check_range(cfg, "max_size", 32)
    _check_range(cfg, "fpn_channels", 1)
    for key in ("rpn_pre_nms_top_n", "rpn_post_nms_top_n", "box_batch_size_per_image"):
        _check_range(cfg, key, 1)
    _check_range(cfg, "decay_milestones", 1)
    milestones = list(cfg.get("decay_milestones") or [])
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        # timm bisects the list: out of order, several decays would apply at once
        raise ValueError(f"--decay-milestones must be increasing epochs, got {' '.join(map(str, milestones))}")
    _check_range(cfg, "decay_rate", 0, 1, low_open=True)
    for key in ("train_split", "val_split"):
        if not str(cfg[key]).strip() or any(c in str(cfg[key]) for c in "/\\"):
            raise ValueError(f"{flag(key)} is a split name such as train2017 (no folders), got {cfg[key]!r}")
    _check_choice(cfg, "interpolation", INTERPOLATIONS)
    _check_choice(cfg, "train_interpolation", ("random", *INTERPOLATIONS))
    _check_choice(cfg, "remode", ERASE_MODES)
    _check_choice(cfg, "sched", SCHEDULERS)
    _check_optimizer(cfg)
    if cfg.get("aa"):
        _check_augment(cfg["aa"])
    for key in ("mean", "std"):
        if cfg.get(key) is not None and len(cfg[key]) not in (1, 3):
            raise ValueError(f"{flag(key)} takes 1 value (grayscale) or 3 (RGB), got {len(cfg[key])}")


def check_channels(cfg: dict[str, Any], in_chans: int) -> None:
    """--mean/--std must have one value (used for every channel) or one per input channel of the data."""
    for key in ("mean", "std"):
        values = cfg.get(key)
        if values is not None and len(values) not in (1, in_chans):
            kind, fix = ("grayscale (1 channel)", "give 1 value") if in_chans == 1 else \
                (f"{in_chans} channels", f"give 1 value or {in_chans}")
            raise ValueError(f"{flag(key)} has {len(values)} values but the model input is {kind}: {fix} "
                             "(or set --in-chans)")


def check_model(cfg: dict[str, Any], in_chans: int) -> None:
    """Build the model on the meta device (no memory, no compute) and run one input of --img-size through it:
    unknown --model-kwargs and an input too small for the architecture become one clear error. A `timm:NAME`
    model is only checked to exist (timm's own constructors report their size limits at build time)."""
    name = timm_name(str(cfg["model"]))
    if name is not None:
        if not is_timm_model(name):
            raise ValueError(f"unknown timm model {cfg['model']!r} (see timm.list_models())")
        if cfg.get("pretrained") and cfg.get("task") in ("segment", "detect"):
            raise ValueError(f"--pretrained with a timm backbone ({cfg['model']}) is not supported by "
                             f"{cfg['task']} train: "
                             "save timm's weights to a file (torch.save(timm.create_model(NAME, pretrained=True)"
                             ".state_dict(), 'w.pth')) and give it as --initial-checkpoint w.pth")
        return
    kwargs = dict(cfg.get("model_kwargs") or {})
    kwargs.setdefault("img_size", int(cfg["img_size"]))  # as the trainer builds it
    if cfg.get("drop_path"):
        kwargs["drop_path_rate"] = cfg["drop_path"]
    if cfg.get("drop"):
        kwargs["drop_rate"] = cfg["drop"]
    if cfg.get("pretrained"):
        released_tag(str(cfg["model"]))
    initial = cfg.get("initial_checkpoint")
    saved = read_config(initial) if initial and (Path(initial) / CONFIG_NAME).is_file() else None
    if saved and not saved["architecture"].startswith(DETECTOR_PREFIX):  # a detector's: its task checks them
        kwargs = {**saved.get("kwargs", {}), **kwargs}  # fine-tuning keeps the saved arguments
    try:
        check_input_size(cfg["model"], kwargs, in_chans, int(cfg["img_size"]), cfg.get("num_classes"))
    except TypeError as e:
        raise ValueError(f"{cfg['model']} cannot be built with --model-kwargs "
                         f"{cfg.get('model_kwargs') or {}}: {first_line(e)}") from None


def _data_channels(cfg: dict[str, Any]) -> int | None:
    """Input channels the run will have, when it can be told without reading the data (None if unknown)."""
    if cfg.get("in_chans"):
        return int(cfg["in_chans"])
    try:
        return default_channels(cfg.get("data"))
    except (ValueError, OSError):
        return None  # missing data: the trainer reports it


def resolve_config(given: dict[str, Any], config_file: str | Path | None = None,
                   recipe: str | None = None) -> dict[str, Any]:
    """The run's settings: DEFAULTS < `recipe` (else the file's, the resumed run's or the default recipe) <
    `config_file` (YAML) < the resumed run's config.yaml < `given` (settings set on the command line; None values
    count as not given, keys starting with `_debug_` pass through unchecked). Checked before anything is built."""
    explicit = {k: v for k, v in given.items() if k in DEFAULTS and v is not None}
    file_cfg = _load_yaml(config_file) if config_file else {}
    resume_cfg: dict[str, Any] = {}
    resume = explicit.get("resume") or file_cfg.get("resume")
    if resume:
        run_yaml = find_checkpoint(resume).parent / "config.yaml"
        if run_yaml.is_file():
            resume_cfg = _load_yaml(run_yaml, saved_run=True)
    recipe_name = recipe or file_cfg.get("recipe") or resume_cfg.get("recipe") or DEFAULT_RECIPE
    cfg = dict(DEFAULTS)
    cfg.update(get_recipe(recipe_name))
    for source in (resume_cfg, file_cfg):
        unknown = [k for k in source if k not in DEFAULTS and k not in ("recipe", "run_dir", "world_size",
                                                                          "lr_resolved")]
        if unknown and source is file_cfg:
            raise ValueError(f"{config_file}: unknown settings {', '.join(sorted(unknown))}")
        cfg.update({k: v for k, v in source.items() if k in DEFAULTS})
    run_task = resume_cfg.get("task") or "classify"
    if resume_cfg and explicit.get("task", run_task) != run_task:  # `segment train --resume` of a detection run
        raise ValueError(task_mismatch(run_task, explicit["task"], resume))
    if resume_cfg:
        cfg["in_chans"] = resume_cfg.get("in_chans", cfg["in_chans"])
        cfg["num_classes"] = resume_cfg.get("num_classes", cfg["num_classes"])
    if resume_cfg:  # a resumed run restores its own weights (explicit flags are refused with --resume)
        cfg.update(pretrained=False, initial_checkpoint=None)
    cfg.update(explicit)
    cfg["resume"] = resume
    cfg["recipe"] = recipe_name
    cfg["model_kwargs"] = _parse_model_kwargs(cfg.get("model_kwargs"))
    if isinstance(cfg.get("aa"), str) and cfg["aa"].lower() in ("none", ""):
        cfg["aa"] = None
    cfg.update({k: v for k, v in given.items() if k.startswith("_debug_")})
    check_settings(cfg)
    in_chans = _data_channels(cfg)
    if in_chans is not None:
        check_channels(cfg, in_chans)
    check_model(cfg, in_chans or 3)
    return cfg
