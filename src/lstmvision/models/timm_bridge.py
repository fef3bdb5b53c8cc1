"""Registration of lstmvision's models in timm's registry, done by `import lstmvision` (at once when timm is
already imported, else as soon as it is: see `lstmvision/__init__.py`); `register_timm()` does it explicitly and is
a no-op once done.

After it, `timm.create_model('vil2_tiny', ...)` builds the lstmvision model, so timm's own scripts (train.py,
validate.py, benchmark.py) run it unchanged, e.g. `python -c "import lstmvision, runpy, sys; sys.argv =
['train.py', ...]; runpy.run_path('train.py', run_name='__main__')"`, and so do transformers' TimmWrapper /
TimmBackbone and segmentation_models_pytorch's `tu-` encoders. Names timm already has (sequencer2d_s/m/l) stay
timm's.

timm registers an entrypoint under its function name and takes its pretrained cfg from `default_cfgs` of the
entrypoint's module, which is this one.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import timm.models
import torch.nn as nn
from timm.models import PretrainedCfg, generate_default_cfgs

from lstmvision.models.loading import create_model
from lstmvision.models.registry import get_pretrained_cfg, list_models, list_pretrained
from lstmvision.weights import TIMM_CFG_FIELDS

default_cfgs: dict[str, Any] = {}  # read by timm.models.register_model: name -> DefaultCfg with every tag


def _timm_cfgs(name: str) -> dict[str, Any]:
    """timm's DefaultCfg of `name`: its pretrained tags (or its plain cfg), timm's fields only."""
    tags = [t for t in list_pretrained(f"{name}.*") if t.split(".")[0] == name] or [name]
    cfgs = {tag: {k: v for k, v in get_pretrained_cfg(tag).items() if k in TIMM_CFG_FIELDS} for tag in tags}
    return generate_default_cfgs(cfgs)[name]


def _as_dict(pretrained_cfg: Any) -> dict[str, Any]:
    if isinstance(pretrained_cfg, PretrainedCfg):
        return {k: v for k, v in dataclasses.asdict(pretrained_cfg).items() if v is not None}
    return dict(pretrained_cfg) if isinstance(pretrained_cfg, dict) else {}


def _create(
    name: str, pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: dict | None = None,
    cache_dir: Any = None, **kwargs: Any,
) -> nn.Module:
    """timm's entrypoint call -> `lstmvision.create_model`. `pretrained_cfg` is a tag ('in1k_e400', from
    `timm.create_model('vil2_tiny.in1k_e400')`) or the cfg of an `hf-hub:` / `local-dir:` name; with
    `pretrained=True` the weights come, as in timm, from `pretrained_cfg_overlay['file']`, the cfg's `file`
    (local-dir), its `hf_hub_id`, else the tag's own sources. `cache_dir` is not used (huggingface_hub's and
    torch.hub's caches are)."""
    tag = pretrained_cfg if isinstance(pretrained_cfg, str) and pretrained_cfg else None
    overlay = {**_as_dict(pretrained_cfg), **(pretrained_cfg_overlay or {})}
    kwargs.pop("pretrained_model_args", None)  # timm passes a saved model's arguments twice
    if overlay.get("num_classes") is not None and overlay.get("source") in ("hf-hub", "local-dir"):
        kwargs.setdefault("num_classes", overlay["num_classes"])
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    overlay = {k: v for k, v in overlay.items() if k not in ("architecture", "tag")}
    model = create_model(f"{name}.{tag}" if tag else name, pretrained=bool(pretrained),
                         pretrained_cfg_overlay=overlay, **kwargs)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, "architecture": name}
    return model


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create(name, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"lstmvision's {name} (registered in timm by `import lstmvision`)."
    return entrypoint


def register_timm() -> list[str]:
    """Register each lstmvision model that timm lacks with timm; returns the names added by this call (none once
    `import lstmvision` has registered them)."""
    added = []
    for name in list_models():
        if name in default_cfgs or timm.models.is_model(name):
            continue  # registered by an earlier call, or timm's own model
        default_cfgs[name] = _timm_cfgs(name)
        timm.models.register_model(_entrypoint(name))
        added.append(name)
    return added
