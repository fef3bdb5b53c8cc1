"""The one way to load a model: `load_model(spec, pretrained)` builds any spec (a registered name, `timm:NAME`, a
folder written by `save_pretrained`, a training run folder) and loads its weights in any supported layout.
`check_input_size` tells, without memory or compute, whether an architecture takes an input size."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn

from lstmvision.constants import TIMM_PREFIX, UPERNET_PREFIX
from lstmvision.errors import first_line
from lstmvision.models import timm_bridge
from lstmvision.models.registry import create_model, get_pretrained_cfg, is_model
from lstmvision.models.upernet import create_segmenter
from lstmvision.weights import (
    CHECKPOINT_NAMES,
    convert_state_dict,
    find_checkpoint,
    load_state_dict_into,
    read_config,
    read_state_dict,
)


def _is_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or Path(spec).exists()


def _head_classes(state: dict[str, torch.Tensor], classifier: Any) -> int | None:
    """Classes of the classifier weights in a state dict (own, timm or official key layout), if found."""
    names = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
    keys = [f"{n}.weight" for n in names if n] + ["head.fc.weight", "head.weight"]
    head = next((state[k] for k in keys if k in state), None)
    return int(head.shape[0]) if head is not None and head.dim() == 2 else None


def _label(folder: Path) -> str:
    folder = folder.resolve()
    return folder.parent.name if folder.name in CHECKPOINT_NAMES else folder.name


def _load_folder(folder: Path, num_classes: int | None, kwargs: dict[str, Any]) -> nn.Module:
    """A model saved by `save_pretrained` (a lstmvision or a `timm:` architecture)."""
    saved = read_config(folder)
    arch = str(saved.get("architecture", ""))
    if arch.startswith(UPERNET_PREFIX):
        model = create_segmenter(num_classes=saved.get("num_classes"), **{**(saved.get("kwargs") or {}), **kwargs})
        load_state_dict_into(model, read_state_dict(folder), source=str(folder))
        model.pretrained_cfg = {**dict(model.pretrained_cfg or {}), **(saved.get("pretrained_cfg") or {})}
        model.class_names = saved.get("class_names")
        return model
    if not arch.startswith(TIMM_PREFIX):
        return create_model(pretrained=folder, num_classes=num_classes, **kwargs)
    model = timm_bridge.create_timm_model(arch[len(TIMM_PREFIX):], saved.get("num_classes"), None, None,
                              {**(saved.get("kwargs") or {}), **kwargs})
    load_state_dict_into(model, read_state_dict(folder), source=str(folder))
    model.pretrained_cfg = {**dict(model.pretrained_cfg or {}), **(saved.get("pretrained_cfg") or {})}
    model.class_names = saved.get("class_names")
    return model


def _load_named(name: str, pretrained: str | os.PathLike | None, num_classes: int | None, img_size: int | None,
                kwargs: dict[str, Any]) -> nn.Module:
    """A registered or `timm:` architecture, with weights from a file or a (run/checkpoint) folder if given."""
    timm_name = timm_bridge.timm_name(name)
    weights = None
    if pretrained is not None:
        weights = Path(pretrained)
        if not weights.exists():
            raise FileNotFoundError(f"pretrained weights not found: {weights}")
        if weights.is_dir():
            weights = find_checkpoint(weights, prefer="best")
    if timm_name is None and (weights is None or weights.is_dir()):
        return create_model(name, pretrained=weights, num_classes=num_classes, **kwargs)
    state = read_state_dict(weights) if weights is not None else None
    if timm_name is not None:
        if num_classes is None and state is not None:
            cfg = timm.get_pretrained_cfg(timm_name) if timm.is_model(timm_name) else None
            num_classes = _head_classes(state, getattr(cfg, "classifier", None))
        model = timm_bridge.create_timm_model(timm_name, num_classes, None, img_size, kwargs)
    else:
        if num_classes is None:
            num_classes = _head_classes(state, get_pretrained_cfg(name).get("classifier"))
        model = create_model(name, num_classes=num_classes, **kwargs)
    if state is not None:
        load_state_dict_into(model, convert_state_dict(state, model), source=str(weights))
    return model


def load_model(spec: str | os.PathLike, pretrained: str | os.PathLike | None = None, num_classes: int | None = None,
               in_chans: int | None = None, img_size: int | None = None, **kwargs: Any) -> nn.Module:
    """The model `spec` names, in eval mode, with `.label` (a short name for tables) set. `spec` is one of:

    - a registered name (`sequencer2d_s`), random init unless `pretrained` (a weights file in any supported
      layout, or a save_pretrained / checkpoint / training run folder) gives weights;
    - `timm:NAME`, built by timm without downloading (`pretrained` as above);
    - a folder written by `save_pretrained`, or a training run folder (its best/, else last/, said on stderr).

    A weights file without classes given gives the model its classifier's size. `img_size` is the input size the
    model is built for (position embeddings; timm models with a fixed input size); `in_chans` and `kwargs`
    override the architecture.
    """
    spec = str(spec)
    if in_chans:
        kwargs = {**kwargs, "in_chans": in_chans}
    if not (spec.startswith(TIMM_PREFIX) or is_model(spec)) and _is_path(spec):
        path = Path(spec)
        if path.is_file():
            raise ValueError(f"{path} is a weights file: say which architecture it holds "
                             f"(--model NAME --pretrained {path})")
        if pretrained is not None:
            raise ValueError(f"{path} is a saved model with its own weights: give either it or pretrained weights "
                             "for a model name, not both")
        folder = find_checkpoint(path, prefer="best")
        model = _load_folder(folder, num_classes, kwargs)
        model.label = _label(folder)
    else:
        if img_size is not None and not timm_bridge.timm_name(spec):
            kwargs = {**kwargs, "img_size": img_size}
        model = _load_named(spec, pretrained, num_classes, img_size, kwargs)
        model.label = timm_bridge.timm_name(spec) or spec
    return model.eval()


def check_input_size(name: str, kwargs: dict[str, Any], in_chans: int, size: int,
                     num_classes: int | None = None) -> None:
    """Build registered model `name` with `kwargs` on the meta device (no memory, no compute) and pass one
    (1, in_chans, size, size) input: a ValueError if the architecture cannot take that size. Arguments the
    model does not take raise TypeError.

    The forward pass is skipped at or above the model's own input size with no architecture arguments: such
    sizes work, and a long LSTM sequence costs seconds even on the meta device (dispatch per time step)."""
    shape_args = set(kwargs) - {"img_size", "in_chans", "num_classes", "drop_path_rate", "drop_rate"}
    kwargs = dict(kwargs, in_chans=in_chans)
    num_classes = kwargs.pop("num_classes", None) or num_classes or 10
    with torch.device("meta"), torch.no_grad():
        try:
            model = create_model(name, num_classes=num_classes, **kwargs)
        except AssertionError as e:
            raise TypeError(first_line(e)) from None
        except ValueError as e:  # the constructor's own size check (e.g. an image smaller than a patch)
            raise ValueError(f"{name} cannot take {size}x{size} inputs (--img-size {size}): "
                             f"{first_line(e)}") from None
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
                             f"{first_line(e)}") from None
