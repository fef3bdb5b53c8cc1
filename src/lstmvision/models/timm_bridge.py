"""Opt-in registration of lstmvision's models in timm's registry (`lstmvision.register_timm()`).

After the call, `timm.create_model('vil2_tiny', ...)` builds the lstmvision model, so timm's own scripts
(train.py, validate.py, benchmark.py) run it unchanged, e.g.
`python -c "import lstmvision, runpy, sys; lstmvision.register_timm(); sys.argv = ['train.py', ...];
runpy.run_path('train.py', run_name='__main__')"`. Names timm already has (sequencer2d_s/m/l) stay timm's.

timm registers an entrypoint under its function name and takes its pretrained cfg from `default_cfgs` of the
entrypoint's module, which is this one.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import timm
import timm.models
import torch.nn as nn
from timm.models import PretrainedCfg

from lstmvision.constants import TIMM_PREFIX
from lstmvision.models.registry import create_model, get_pretrained_cfg, list_models

default_cfgs: dict[str, dict[str, Any]] = {}  # read by timm.models.register_model


def _timm_cfg(name: str) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    return {k: v for k, v in get_pretrained_cfg(name).items() if k in fields}


def _create(
    name: str, pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: dict | None = None,
    cache_dir: Any = None, **kwargs: Any,
) -> nn.Module:
    """timm's entrypoint call -> lstmvision.create_model; `pretrained=True` loads `pretrained_cfg_overlay['file']`
    (any format `create_model(pretrained=...)` reads). `pretrained_cfg` (a tag's cfg) and `cache_dir` have no
    use here: each lstmvision model has one cfg and no downloads."""
    overlay = dict(pretrained_cfg_overlay or {})
    weights = overlay.pop("file", None) if pretrained else None
    if pretrained and weights is None:
        warnings.warn(  # timm's behaviour for a model without downloadable weights
            f"{name}: lstmvision has no downloadable weights; pass pretrained_cfg_overlay=dict(file=PATH). "
            "Using random initialization.",
            stacklevel=3,
        )
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    model = create_model(name, pretrained=weights, **kwargs)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, **overlay, "architecture": name}
    return model


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create(name, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"lstmvision's {name} (registered by lstmvision.register_timm())."
    return entrypoint


def register_timm() -> list[str]:
    """Register each lstmvision model that timm lacks with timm; returns the names added by this call."""
    added = []
    for name in list_models():
        if name in default_cfgs or timm.models.is_model(name):
            continue  # registered by an earlier call, or timm's own model
        default_cfgs[name] = _timm_cfg(name)
        timm.models.register_model(_entrypoint(name))
        added.append(name)
    return added


def timm_name(spec: str) -> str | None:
    """NAME of a `timm:NAME` spec, else None."""
    return spec[len(TIMM_PREFIX):] if spec.startswith(TIMM_PREFIX) else None


def create_timm_model(name: str, num_classes: int | None, in_chans: int | None, img_size: int | None,
                      kwargs: dict[str, Any] | None = None) -> nn.Module:
    """timm model `name` (no download), any input size where the architecture allows; `model_name` is
    'timm:NAME' and `model_kwargs` what rebuilds it."""
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
    kw: dict[str, Any] = dict(kwargs or {})
    if num_classes is not None:
        kw["num_classes"] = num_classes
    if in_chans is not None:
        kw["in_chans"] = in_chans
    cfg = timm.get_pretrained_cfg(name)
    fixed = bool(getattr(cfg, "fixed_input_size", False)) if cfg is not None else False
    if img_size is not None and fixed:
        kw.setdefault("img_size", img_size)
    try:  # ViT-style models: let them take any input size (position embeddings interpolated)
        model = timm.create_model(name, pretrained=False, dynamic_img_size=True, **kw)
    except TypeError:
        model = timm.create_model(name, pretrained=False, **kw)
    model.model_name = TIMM_PREFIX + name
    model.model_kwargs = {k: v for k, v in kw.items() if k != "num_classes"}
    return model
