"""Reading, converting, checking and saving model weights.

Every load goes through `load_pretrained`: read the file safely (safetensors, or `torch.load` with
`weights_only=True`), unwrap training checkpoints, let the model's family convert foreign key layouts
(official repos, timm), then check the result against the model and load it. A classifier of another size is
re-initialised with a warning; any other mismatch is one clear error.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn
from timm.models import PretrainedCfg, adapt_input_conv

from lstmvision.constants import TIMM_PREFIX
from lstmvision.errors import first_line, os_reason
from lstmvision.outputs import atomic_write

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_NAMES = (WEIGHTS_NAME, "pytorch_model.bin")  # a saved folder's weights (timm's layout), in the order tried
TIMM_CFG_FIELDS = frozenset(  # the fields timm's PretrainedCfg takes
    f.name for f in dataclasses.fields(PretrainedCfg))
_SOURCE_FIELDS = frozenset(("url", "file", "file_name", "state_dict", "hf_hub_id", "hf_hub_filename", "source"))
CONFIG_NAME = "config.json"
_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "module")


class WeightsError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, a torch file (.pth/.pth.tar/.th/.bin) or a saved folder (its
    model.safetensors, else pytorch_model.bin: timm's `save_for_hf` writes the latter by default)."""
    path = Path(path)
    if path.is_dir():
        path = next((path / n for n in WEIGHTS_NAMES if (path / n).is_file()), path / WEIGHTS_NAME)
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"{path} is not a readable safetensors file: {first_line(e)}") from None
    try:
        # timm/official training checkpoints carry their argparse Namespace: allow that one plain class only
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(refused_pickle(path, e)) from None
    except (RuntimeError, EOFError) as e:
        raise WeightsError(f"{path} is not a readable torch checkpoint: {first_line(e)}") from None
    return unwrap_state_dict(obj, source=str(path))


def refused_pickle(path: str | os.PathLike, e: BaseException) -> str:
    """The one line for a torch file that safe loading (`weights_only=True`) refused: it names the file and the
    class or function the pickle asked for (never torch's advice to unpickle it anyway)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    named = f" (e.g. {found.group(1)})" if found else ""
    return (f"{path} holds objects that are not plain tensors{named} and was not unpickled for safety (unpickling "
            "can run arbitrary code); re-save it as a plain state dict or as .safetensors")


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensors in a checkpoint: raw, or under 'state_dict' / 'model' (training checkpoints)."""
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict) and obj[key]:
                return unwrap_state_dict(obj[key], source)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return {_strip_prefixes(k): v for k, v in tensors.items()}
    raise WeightsError(f"no state dict found in {source}")


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def convert_state_dict(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Let the model's family map foreign key layouts (official, timm) onto its own."""
    filter_fn = getattr(model, "checkpoint_filter_fn", None)
    return filter_fn(state_dict) if filter_fn is not None else state_dict


def _head_keys(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    classifier = cfg.get("classifier", "head.fc")
    names = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
    return tuple(f"{n}.{p}" for n in names for p in ("weight", "bias"))


def _adapt_input_conv(model: nn.Module, state_dict: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> None:
    """RGB weights into a model with another number of input channels (e.g. grayscale), as timm does."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    key = f"{cfg.get('first_conv', 'stem.proj')}.weight"
    if key not in state_dict or key not in own:
        return
    theirs, ours = state_dict[key].shape, own[key].shape
    if len(theirs) == len(ours) == 4 and theirs[1] != ours[1] and (theirs[0], *theirs[2:]) == (ours[0], *ours[2:]):
        state_dict[key] = _adapt_stem(state_dict[key], ours[1])


def _adapt_stem(weight: torch.Tensor, chans: int) -> torch.Tensor:
    """Stem weights for `chans` input channels as timm adapts them: summed for one channel, else repeated and
    scaled. RGB weights go through timm's adapt_input_conv; other sources (a grayscale model saved by timm's
    save_for_hf, asked for with in_chans=3) are adapted here as timm 1.0.31 does with `base_chans`, which older
    timm versions lack."""
    source = weight.shape[1]
    if source == 3:
        return adapt_input_conv(chans, weight)
    adapted = weight.float()
    if chans == 1:
        adapted = adapted.sum(dim=1, keepdim=True)
    else:
        adapted = adapted.repeat(1, math.ceil(chans / source), 1, 1)[:, :chans] * (source / chans)
    return adapted.to(weight.dtype)


def _describe_mismatch(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            parts.append(f"{len(keys)} {what}: {', '.join(keys[:3])}{more}")
    return "; ".join(parts)


def load_state_dict_into(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Check a converted state dict against the model and load it (see the module docstring)."""
    own = model.state_dict()
    state_dict = dict(state_dict)
    _adapt_input_conv(model, state_dict, own)
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    head = _head_keys(model)
    head_only = all(k in head for k in missing) and all(s.split(" ")[0] in head for s in shapes)
    if not unexpected and head_only and (missing or shapes):
        n_ckpt = next((tuple(state_dict[k].shape)[0] for k in head if k in state_dict), None)
        warnings.warn(
            f"{source}: classifier has {n_ckpt} classes, model has {getattr(model, 'num_classes', '?')}; "
            "the head was re-initialised",
            stacklevel=3,
        )
        for k in head:
            state_dict.pop(k, None)
        model.load_state_dict(state_dict, strict=False)
        return
    if missing or unexpected or shapes:
        arch = getattr(model, "model_name", type(model).__name__)
        raise WeightsError(
            f"{source} does not fit {arch}: {_describe_mismatch(missing, unexpected, shapes)}. "
            "Is it a checkpoint of another architecture or size?"
        )
    model.load_state_dict(state_dict, strict=True)


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load weights from `path` into `model` in place, converting official/timm layouts automatically."""
    state_dict = convert_state_dict(read_state_dict(path), model)
    load_state_dict_into(model, state_dict, source=str(path))
    return model


def save_pretrained(model: nn.Module, folder: str | os.PathLike, class_names: list[str] | None = None,
                    config_extra: dict[str, Any] | None = None) -> Path:
    """Save a model built by `create_model` as `folder/model.safetensors` + `folder/config.json` in timm's Hub
    layout (`architecture`, `num_classes`, `num_features`, `global_pool`, `model_args`, `pretrained_cfg` with
    timm's fields, `label_names`; lstmvision's further cfg fields under `lstmvision`; `config_extra`: further
    top-level keys). An existing folder is written into (its other files stay).

    `create_model("local-dir:FOLDER", pretrained=True)` (or `create_model(FOLDER)`) rebuilds the architecture
    and restores the weights exactly; so does `timm.create_model` once lstmvision is imported.
    `lstmvision.save_for_hf` adds what the Hub and transformers read (a model card, `modeling_lstmvision.py`).
    """
    name = getattr(model, "model_name", None)
    if name is None:
        raise WeightsError("save_pretrained needs a model built by lstmvision.create_model")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    cfg = _fit_normalisation(jsonable_cfg(model))
    timm_cfg = {k: v for k, v in cfg.items() if k in TIMM_CFG_FIELDS and k not in _SOURCE_FIELDS}
    extra = {k: v for k, v in cfg.items() if k not in TIMM_CFG_FIELDS and k not in _SOURCE_FIELDS}
    names = class_names or getattr(model, "class_names", None)
    pool = getattr(model, "global_pool", None)
    config = dict(
        architecture=name.removeprefix(TIMM_PREFIX),
        num_classes=model.num_classes,
        num_features=getattr(model, "num_features", None),
        global_pool=pool if isinstance(pool, str) else None,
        model_args=getattr(model, "model_kwargs", {}),
        pretrained_cfg=timm_cfg,
        label_names=list(names) if names else None,
        lstmvision=dict(format=2, timm=name.startswith(TIMM_PREFIX), pretrained_cfg=extra),
        **(config_extra or {}),
    )
    atomic_write(folder / WEIGHTS_NAME, lambda p: safetensors.torch.save_file(tensors, p, metadata={"format": "pt"}))
    atomic_write(folder / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(config, indent=2)))
    return folder



def _fit_normalisation(cfg: dict[str, Any]) -> dict[str, Any]:
    """`mean` / `std` with one value per input channel of `input_size` (a grayscale model built from an RGB cfg:
    their average), as timm's `resolve_data_config` (and transformers' TimmWrapperImageProcessor) require."""
    size = cfg.get("input_size")
    chans = int(size[0]) if isinstance(size, (list, tuple)) and size else None
    out = dict(cfg)
    for key in ("mean", "std"):
        values = cfg.get(key)
        if chans and isinstance(values, (list, tuple)) and len(values) != chans:
            if chans == 1:
                out[key] = (sum(values) / len(values),)
            elif len(values) == 1:
                out[key] = tuple(values) * chans
    return out


def jsonable_cfg(model: nn.Module) -> dict[str, Any]:
    """The entries of `model.pretrained_cfg` that survive a JSON round trip (for config files and metadata)."""
    return {k: v for k, v in (getattr(model, "pretrained_cfg", {}) or {}).items() if _jsonable(v)}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The `config.json` of a saved folder, as `architecture` ('timm:NAME' for timm's own models, 'upernet:...'
    for segmenters), `num_classes`, `kwargs` (the model arguments), `pretrained_cfg` and `class_names`. Reads
    timm's Hub layout (`save_pretrained`, `timm.models.push_to_hf_hub`) and lstmvision's earlier one; a broken
    file is a WeightsError naming it."""
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        why = os_reason(e) if isinstance(e, OSError) else first_line(e)  # an OSError's text repeats the path
        raise WeightsError(f"{path} is not a readable config file ({why}); re-save the model, or pass the "
                           f"weights file {Path(folder) / WEIGHTS_NAME} with a model name") from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise WeightsError(f"{path} does not name an architecture: it is not a saved model's config")
    ours = config.get("lstmvision") or {}
    arch = config["architecture"]
    if ours.get("timm") and not arch.startswith(TIMM_PREFIX):
        arch = TIMM_PREFIX + arch
    cfg = {**(config.get("pretrained_cfg") or {}), **(ours.get("pretrained_cfg") or {})}
    labels = config.get("label_names", config.get("class_names"))
    if isinstance(labels, dict):  # timm allows {index: name}
        labels = [labels[k] for k in sorted(labels, key=int)]
    return dict(architecture=arch, num_classes=config.get("num_classes", cfg.get("num_classes")),
                kwargs=dict(config.get("model_args", config.get("kwargs")) or {}), pretrained_cfg=cfg,
                class_names=list(labels) if labels else None)


# ------------------------------------------------------------------------ checkpoint folders


def _checkpoint_order(prefer: str) -> tuple[str, ...]:
    # `.<name>.old` is the previous checkpoint when a save was interrupted mid-swap (engine.checkpoint)
    if prefer == "last":
        return "last", ".last.old"
    if prefer == "best":
        return "best", ".best.old", "last", ".last.old"
    raise ValueError(f"prefer must be 'best' or 'last', got {prefer!r}")


def find_checkpoint(path: str | os.PathLike, prefer: str = "last") -> Path:
    """The checkpoint folder (config.json + weights) that `path` names: the folder itself, the folder of a file in
    it, or in a training run folder its `prefer` checkpoint (`last/`: resuming, the default; `best/`: evaluating,
    else `last/`). Any fallback (no best/, an interrupted save) is said in one line on stderr."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_file():
        path = path.parent
    if (path / CONFIG_NAME).is_file():
        return path
    order = _checkpoint_order(prefer)
    for name in order:
        if (path / name / CONFIG_NAME).is_file():
            if name != order[0]:
                print(f"lstmvision: {path} has no {order[0]}/ checkpoint; using {path / name}", file=sys.stderr)
            return path / name
    inside = "best/ or last/" if prefer == "best" else "last/"
    raise FileNotFoundError(f"{path} holds no checkpoint (expected config.json + model.safetensors, or {inside})")
