"""timm's own models as lstmvision builds them (`timm:NAME` specs): any input size where the architecture allows,
with the attributes `save_pretrained` and the commands read."""
from __future__ import annotations

from typing import Any

import timm
import torch.nn as nn

from lstmvision.constants import TIMM_PREFIX


def timm_name(spec: str) -> str | None:
    """NAME of a `timm:NAME` spec, else None."""
    return spec[len(TIMM_PREFIX):] if spec.startswith(TIMM_PREFIX) else None


def create_timm_model(name: str, num_classes: int | None, in_chans: int | None, img_size: int | None,
                      kwargs: dict[str, Any] | None = None, pretrained: bool = False) -> nn.Module:
    """timm model `name`, any input size where the architecture allows (timm's own weights with `pretrained`);
    `model_name` is 'timm:NAME' and `model_kwargs` what rebuilds it."""
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
    kw: dict[str, Any] = dict(kwargs or {})
    if num_classes is not None:
        kw["num_classes"] = num_classes
    if in_chans is not None:
        kw["in_chans"] = in_chans
    cfg = timm.get_pretrained_cfg(name)
    if img_size is not None and cfg is not None and getattr(cfg, "fixed_input_size", False):
        kw.setdefault("img_size", img_size)
    try:  # ViT-style models: let them take any input size (position embeddings interpolated)
        model = timm.create_model(name, pretrained=pretrained, dynamic_img_size=True, **kw)
    except TypeError:
        model = timm.create_model(name, pretrained=pretrained, **kw)
    model.model_name = TIMM_PREFIX + name
    model.model_kwargs = {k: v for k, v in kw.items() if k != "num_classes"}
    model.weights_source = f"timm:{name} (timm's pretrained weights)" if pretrained else None
    return model
