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

import torch.nn as nn

from lstmvision.models.registry import create_model, get_pretrained_cfg, list_models

default_cfgs: dict[str, dict[str, Any]] = {}  # read by timm.models.register_model


def _timm_cfg(name: str) -> dict[str, Any]:
    from timm.models import PretrainedCfg

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
    import timm.models

    added = []
    for name in list_models():
        if name in default_cfgs or timm.models.is_model(name):
            continue  # registered by an earlier call, or timm's own model
        default_cfgs[name] = _timm_cfg(name)
        timm.models.register_model(_entrypoint(name))
        added.append(name)
    return added
