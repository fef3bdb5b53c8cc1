"""Model registry: every public architecture is a function registered under its name.

`create_model` builds a model by name, attaches its `pretrained_cfg`, loads weights from a local file or
folder, and optionally wraps it as a feature extractor (timm's `features_only` contract).
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn
from timm.models import FeatureDictNet, FeatureGraphNet, FeatureHookNet, FeatureListNet
from timm.models._builder import pretrained_cfg_for_features
from timm.models._features import FeatureGetterNet

from lstmvision.constants import IMAGENET_MEAN, IMAGENET_STD
from lstmvision.weights import CONFIG_NAME, load_pretrained, read_config

_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}
_CFGS: dict[str, dict[str, Any]] = {}


def make_cfg(**overrides: Any) -> dict[str, Any]:
    """The pretrained cfg of a model (timm's fields); `overrides` replace the defaults."""
    cfg = dict(
        url="",
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=None,
        crop_pct=0.875,
        interpolation="bicubic",
        fixed_input_size=False,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        first_conv="stem.proj",
        classifier="head.fc",
        license="apache-2.0",
        paper_top1=None,
    )
    cfg.update(overrides)
    return cfg


def register_model(cfg: dict[str, Any] | None = None) -> Callable:
    """Decorator: register `fn(**kwargs) -> nn.Module` under its function name with a pretrained cfg."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _ENTRYPOINTS:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        _ENTRYPOINTS[fn.__name__] = fn
        _CFGS[fn.__name__] = cfg if cfg is not None else make_cfg()
        return fn

    return wrap


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; `pattern` is a shell-style wildcard (e.g. 'sequencer2d_*')."""
    names = sorted(_ENTRYPOINTS)
    if pattern:
        if not any(c in pattern for c in "*?["):
            pattern = f"*{pattern}*"
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def is_model(name: str) -> bool:
    return name in _ENTRYPOINTS


def get_pretrained_cfg(name: str) -> dict[str, Any]:
    _check_name(name)
    return dict(_CFGS[name])


def _check_name(name: str) -> None:
    if name not in _ENTRYPOINTS:
        close = [n for n in _ENTRYPOINTS if name.split("_")[0] in n][:5]
        hint = f" Similar: {', '.join(close)}." if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Run `lstmvision models` for the full list.")


def _saved_config(path: str | os.PathLike | None) -> dict[str, Any] | None:
    if path is None:
        return None
    cfg_file = Path(path) / CONFIG_NAME
    if Path(path).is_dir() and cfg_file.is_file():
        return read_config(path)
    return None


def create_model(
    name: str | None = None,
    pretrained: str | os.PathLike | None = None,
    num_classes: int | None = None,
    features_only: bool = False,
    out_indices: Any = None,
    feature_fmt: str | None = None,
    feature_cls: str | type | None = None,
    feature_cfg: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally loading weights from `pretrained` (file or saved folder).

    `pretrained` may be an official checkpoint (.pth / .pth.tar), a timm-format state dict (.safetensors or
    .pth) or a folder written by `save_pretrained`; the format is detected and converted. When `name` is None
    the architecture is read from the folder's config.json. Keyword arguments override the architecture.
    A different `num_classes` than the checkpoint's re-initialises the classifier (with a warning).

    `features_only=True` wraps the model as timm does: `feature_cls` 'getter' (the default, via
    `forward_intermediates`, maps in `feature_fmt`, NCHW unless given), 'hook', 'fx', 'list' or 'dict' (these
    return the model's native NHWC maps), or a timm feature class; `feature_cfg` holds further wrapper options.
    """
    if pretrained is not None and not Path(pretrained).exists():
        raise FileNotFoundError(f"pretrained weights not found: {pretrained}")
    saved = _saved_config(pretrained)
    if saved is not None:
        if name is not None and name != saved["architecture"]:
            raise ValueError(
                f"{pretrained} holds a {saved['architecture']!r} model: a checkpoint of {saved['architecture']} "
                f"cannot load into {name}; ask for model {saved['architecture']!r}, or give no model name"
            )
        name = saved["architecture"]
        kwargs = {**saved.get("kwargs", {}), **kwargs}
        if num_classes is None:
            num_classes = saved.get("num_classes")
    if name is None:
        raise ValueError("create_model needs a model name, or pretrained= a folder written by save_pretrained")
    _check_name(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    cfg = dict(_CFGS[name])
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = _ENTRYPOINTS[name](**kwargs)
    if saved is not None and saved.get("pretrained_cfg"):
        cfg.update(saved["pretrained_cfg"])
    cfg["num_classes"] = model.num_classes
    cfg["pool_size"] = model.feature_grid(cfg["input_size"])
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    model.model_name = name
    model.model_kwargs = {k: v for k, v in kwargs.items() if k != "num_classes"}
    if saved is not None and saved.get("class_names"):
        model.class_names = list(saved["class_names"])
    if pretrained is not None:
        load_pretrained(model, pretrained)
    if features_only:
        model = _feature_wrapper(model, out_indices, feature_fmt, feature_cls, dict(feature_cfg or {}))
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(cfg)
        model.model_name = name
    elif feature_cls is not None or feature_cfg is not None or out_indices is not None:
        raise ValueError("out_indices, feature_cls and feature_cfg need features_only=True")
    return model


def _feature_class(feature_cls: str | type) -> type:
    if isinstance(feature_cls, type):
        return feature_cls
    classes = dict(getter=FeatureGetterNet, hook=FeatureHookNet, fx=FeatureGraphNet, list=FeatureListNet,
                   dict=FeatureDictNet)
    if str(feature_cls).lower() not in classes:
        raise ValueError(f"feature_cls must be one of {sorted(classes)} or a timm feature class, got {feature_cls!r}")
    return classes[str(feature_cls).lower()]


def _feature_wrapper(
    model: nn.Module, out_indices: Any, feature_fmt: str | None, feature_cls: str | type | None,
    feature_cfg: dict[str, Any],
) -> nn.Module:
    """timm's features_only adaptation (timm.models.build_model_with_cfg): route the feature class and options."""
    cls = _feature_class(feature_cls or feature_cfg.pop("feature_cls", "getter"))
    feature_cfg.pop("feature_cls", None)
    if out_indices is not None:
        feature_cfg["out_indices"] = out_indices
    feature_cfg.setdefault("out_indices", tuple(range(len(model.feature_info))))
    fmt = feature_fmt or feature_cfg.pop("output_fmt", None)
    if getattr(model, "num_prefix_tokens", 0) and not issubclass(cls, FeatureGetterNet):
        # hooks and fx see the blocks' (map, class tokens) pairs; forward_intermediates strips the class tokens
        raise ValueError(f"{cls.__name__} cannot separate a class-token model's maps from its class tokens; use feature_cls='getter'")
    if issubclass(cls, FeatureGetterNet):
        feature_cfg["output_fmt"] = fmt or "NCHW"
    else:
        if fmt is not None and fmt != model.output_fmt:
            raise ValueError(
                f"feature_cls={cls.__name__} returns the model's native {model.output_fmt} maps; "
                f"feature_fmt={fmt!r} needs feature_cls='getter'"
            )
        feature_cfg["output_fmt"] = model.output_fmt
    rebuilds = issubclass(cls, FeatureDictNet) or (
        issubclass(cls, FeatureHookNet) and not feature_cfg.get("no_rewrite", not feature_cfg.get("flatten_sequential"))
    )
    if rebuilds:
        _check_rebuildable(model, cls.__name__)
        feature_cfg.setdefault("flatten_sequential", True)  # stages.{i} live in a top-level nn.Sequential
    return cls(model, **feature_cfg)


def _check_rebuildable(model: nn.Module, wrapper: str) -> None:
    """FeatureListNet/DictNet (and a rewriting FeatureHookNet) re-run the model's top-level modules in order;
    refuse models whose forward does more than that, instead of returning silently different features."""
    extra = [n for n, p in model.named_parameters(recurse=False)]
    if getattr(model, "shuffle_tokens", False):
        extra.append("shuffle_tokens")
    if extra:
        raise ValueError(
            f"{wrapper} rebuilds {getattr(model, 'model_name', type(model).__name__)} from its top-level modules, "
            f"which would skip {', '.join(extra)}; use feature_cls='getter', 'hook' or 'fx'"
        )
