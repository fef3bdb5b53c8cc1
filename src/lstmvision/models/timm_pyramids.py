"""timm names whose `features_only` maps are the 4/8/16/32 feature pyramid: `NAME_pyramid` for each lstmvision
model NAME, registered in timm by `register_timm_pyramids()`.

segmentation_models_pytorch 0.6.0's `tu-NAME` encoders first build `timm.create_model(NAME, features_only=True)`
with no other argument and refuse any model whose feature strides are not 2/4/8/16/32 or 4/8/16/32; Sequencer2D's
native strides are 7/14/14/14 and ViL's 16 for every block, and the default `features_only` maps stay those. A
`_pyramid` name is the same model (timm's own class for the names timm has, sequencer2d_s/m/l; lstmvision's for
the others), built by `timm.create_model(NAME, ...)`, whose `features_only` maps are those of
`feature_cls='pyramid'` (`lstmvision.layers.pyramid.FeaturePyramid`):

    smp.Unet("tu-vil2_tiny_pyramid", encoder_weights=None, in_channels=1, classes=2)
    smp.FPN("tu-sequencer2d_s_pyramid", encoder_weights=None)

Without `features_only` a `_pyramid` name builds the plain classifier; its pretrained tags and weights are those
of NAME (`tu-vil2_tiny_pyramid.in1k_e400`).
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable

import timm
import torch.nn as nn
from timm.models import DefaultCfg
from timm.models._builder import pretrained_cfg_for_features

from lstmvision.layers.pyramid import PYRAMID_STRIDES, FeaturePyramid
from lstmvision.models.registry import list_models
from lstmvision.models.timm_bridge import register_timm

PYRAMID_SUFFIX = "_pyramid"
default_cfgs: dict[str, DefaultCfg] = {}  # read by timm.models.register_model: name -> the base model's cfgs


def pyramid_features(model: nn.Module, out_indices: Any = None, feature_cfg: dict[str, Any] | None = None,
                     feature_cls: Any = None) -> nn.Module:
    """`model` (a classifier with `forward_intermediates`) wrapped as `FeaturePyramid`, with timm's feature cfg;
    `feature_cfg` may hold `strides` and `output_fmt`, `feature_cls` may only be 'pyramid'."""
    cfg = dict(feature_cfg or {})
    if (feature_cls or cfg.pop("feature_cls", "pyramid")) not in ("pyramid", FeaturePyramid):
        raise ValueError(f"a {PYRAMID_SUFFIX} model's features are the pyramid (feature_cls='pyramid'), got "
                         f"feature_cls={feature_cls!r}; ask for the name without {PYRAMID_SUFFIX} for other wrappers")
    fmt = cfg.pop("output_fmt", "NCHW")
    strides = cfg.pop("strides", PYRAMID_STRIDES)
    cfg.pop("out_indices", None)
    if cfg:
        raise ValueError(f"feature_cfg of the pyramid takes strides and output_fmt, not {', '.join(sorted(cfg))}")
    wrapped = FeaturePyramid(model, out_indices=out_indices, output_fmt=fmt, strides=strides)
    wrapped.pretrained_cfg = wrapped.default_cfg = pretrained_cfg_for_features(dict(model.pretrained_cfg or {}))
    return wrapped


def _entrypoint(base: str, name: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        features = kwargs.pop("features_only", False)
        feature_args = {k: kwargs.pop(k) for k in ("out_indices", "feature_cfg", "feature_cls") if k in kwargs}
        if feature_args and not features:
            raise ValueError(f"{', '.join(sorted(feature_args))} need features_only=True")
        model = timm.create_model(base, pretrained=pretrained, **kwargs)
        return pyramid_features(model, **feature_args) if features else model

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{base}, whose features_only maps are the 4/8/16/32 feature pyramid."
    return entrypoint


def register_timm_pyramids() -> list[str]:
    """Register `NAME_pyramid` in timm for each lstmvision model NAME (registering NAME first where timm lacks
    it, as `register_timm` does), with NAME's pretrained cfgs; returns the `_pyramid` names added by this call."""
    register_timm()
    added = []
    for base in list_models():
        name = base + PYRAMID_SUFFIX
        if name in default_cfgs or timm.models.is_model(name) or not timm.models.is_model(base):
            continue
        cfgs = {full.partition(".")[2]: cfg for full, cfg in timm.models.get_arch_pretrained_cfgs(base).items()}
        default_cfgs[name] = DefaultCfg(tags=deque(cfgs), cfgs=cfgs)
        timm.models.register_model(_entrypoint(base, name))
        added.append(name)
    return added
