"""Model registry: every public architecture is a function registered under its name, with its pretrained cfg
and the tags of its released weights ('sequencer2d_s.in1k'), as timm's registry holds them.

`build_model` builds an architecture by name; `lstmvision.models.loading.create_model` is the one entry point
that also loads weights (files, tags, the Hub) and wraps feature extractors.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable

import torch.nn as nn
from timm.models import FeatureDictNet, FeatureGraphNet, FeatureHookNet, FeatureListNet
from timm.models import is_model as timm_is_model
from timm.models._builder import pretrained_cfg_for_features
from timm.models._features import FeatureGetterNet

from lstmvision.constants import IMAGENET_MEAN, IMAGENET_STD
from lstmvision.layers.pyramid import FeaturePyramid

_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}
_CFGS: dict[str, dict[str, Any]] = {}
_TAGS: dict[str, dict[str, dict[str, Any]]] = {}  # architecture -> tag -> where its released weights live


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


def split_tag(name: str) -> tuple[str, str | None]:
    """'sequencer2d_s.in1k' -> ('sequencer2d_s', 'in1k'); a name without a tag -> (name, None)."""
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def register_pretrained(name: str, **source: Any) -> None:
    """Register released weights `name` ('arch.tag'): where they live (`hf_hub_id` and/or `url`, with
    `file_name`), what they score (`top1`) and any cfg field that differs from the architecture's. The first
    tag registered for an architecture is its default."""
    arch, tag = split_tag(name)
    _check_name(arch)
    if tag is None:
        raise ValueError(f"pretrained weights are registered as 'arch.tag', got {name!r}")
    if tag in _TAGS.setdefault(arch, {}):
        raise ValueError(f"pretrained tag {name!r} is registered twice")
    _TAGS[arch][tag] = source


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Every 'arch.tag' with released weights, sorted; `pattern` as in `list_models`. An architecture's default
    tag is `default_tag(arch)`."""
    tags = sorted(f"{arch}.{tag}" for arch, by_tag in _TAGS.items() for tag in by_tag)
    if pattern:
        if not any(c in pattern for c in "*?["):
            pattern = f"*{pattern}*"
        tags = [t for t in tags if fnmatch.fnmatch(t, pattern)]
    return tags


def default_tag(arch: str) -> str | None:
    """The tag `arch` alone stands for (the first registered), or None when it has no released weights."""
    return next(iter(_TAGS.get(arch, {})), None)


def released_tag(name: str) -> str:
    """The released weights 'arch.tag' that `name` ('arch', its default tag, or 'arch.tag') stands for; one
    ValueError when the architecture has none (unknown names and tags: `get_pretrained_cfg`'s error)."""
    arch = split_tag(name)[0]
    tag = get_pretrained_cfg(name)["tag"]
    if tag is None:
        raise ValueError(f"{arch} has no released weights (`lstmvision models --pretrained` lists them); give your "
                         "own weights instead (--initial-checkpoint PATH, or pretrained=PATH in Python)")
    return f"{arch}.{tag}"


def get_pretrained_cfg(name: str) -> dict[str, Any]:
    """The pretrained cfg of 'arch' (its default tag's, when it has released weights) or of 'arch.tag': timm's
    fields plus `tag`, `hf_hub_id` / `url` / `file_name` (where the weights live) and `top1` (published)."""
    arch, tag = split_tag(name)
    if isinstance(name, str) and arch not in _ENTRYPOINTS:
        raise ValueError(unknown_model_message(name))
    _check_name(arch)
    cfg = dict(_CFGS[arch], architecture=arch, tag=tag or default_tag(arch))
    if cfg["tag"] is not None:
        tags = _TAGS.get(arch, {})
        if cfg["tag"] not in tags:
            known = ", ".join(f"{arch}.{t}" for t in tags) or "none"
            raise ValueError(f"{arch} has no pretrained tag {cfg['tag']!r} (released: {known})")
        cfg.update(tags[cfg["tag"]])
    return cfg


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise ValueError(f"a model name is a str, got {type(name).__name__} {name!r}")
    if name not in _ENTRYPOINTS:
        raise ValueError(unknown_model_message(name))


def unknown_model_message(name: str) -> str:
    """'unknown model NAME' with the registered names and tags closest to it and, when timm has a model of that
    name, the `timm:NAME` spec that builds it."""
    known = list(_ENTRYPOINTS) + list_pretrained()
    key = name.lower()
    close = difflib.get_close_matches(key, known, n=5, cutoff=0.6)
    close += [n for n in _ENTRYPOINTS if key.split("_")[0] in n and n not in close][:5 - len(close)]
    hint = f" Similar: {', '.join(close)}." if close else ""
    arch = split_tag(name)[0]
    if timm_is_model(arch):
        return f"unknown model {name!r}: it is not a lstmvision model, but timm has it: ask for timm:{name}.{hint}"
    return f"unknown model {name!r}.{hint} Run `lstmvision models` for the full list (timm's models: timm:NAME)."


# architecture arguments that are sizes or counts: a positive int, or a list / tuple of them (per stage, (h, w))
# img_size is left to the families' own check, which also names the smallest size the architecture takes
SIZE_ARGUMENTS = frozenset((
    "in_chans", "patch_size", "patch_sizes", "stride", "embed_dim", "embed_dims", "depth", "depths",
    "layers", "num_heads", "hidden_size", "hidden_sizes", "expansion", "qkv_block_size", "conv_kernel_size",
    "mlstm_chunk_size", "drop_path_groups", "decoder_channels", "mlp_ratio", "mlp_ratios",
))
_WHOLE_OK = frozenset(("mlp_ratio", "mlp_ratios"))  # positive numbers, not necessarily whole


def check_arguments(kwargs: dict[str, Any]) -> None:
    """One clear ValueError for an argument that no architecture can take: `num_classes` an int >= 0 (0: no
    classifier), and any size or count in `SIZE_ARGUMENTS` a positive int (or a list / tuple of positive ints).
    None means the architecture's default. Arguments an architecture does not know are its constructor's to
    refuse (TypeError)."""
    num_classes = kwargs.get("num_classes")
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 0):
        raise ValueError(f"num_classes must be an int >= 0 (0: no classifier), got {num_classes!r}")
    for key, value in kwargs.items():
        if key not in SIZE_ARGUMENTS or value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        kind = (int, float) if key in _WHOLE_OK else (int,)
        if not values or any(not isinstance(v, kind) or isinstance(v, bool) or not v > 0 for v in values):
            what = "a positive number" if key in _WHOLE_OK else "a positive int"
            several = f" (or a list of {what.split(' ', 1)[1]}s)" if isinstance(value, (list, tuple)) else ""
            raise ValueError(f"{key} must be {what}{several}, got {value!r}")


def build_model(name: str, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Registered architecture `name` (random init) with `kwargs`, carrying `pretrained_cfg`, `model_name` and
    `model_kwargs`. Loading weights, tags and feature wrappers are `lstmvision.models.loading.create_model`'s."""
    _check_name(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    check_arguments(kwargs)
    model = _ENTRYPOINTS[name](**kwargs)
    cfg = get_pretrained_cfg(name)
    size, chans = kwargs.get("img_size"), kwargs.get("in_chans")
    if size or chans:  # the input this instance is built for (timm adapts its cfg the same way)
        hw = ((size, size) if isinstance(size, int) else tuple(size)) if size else tuple(cfg["input_size"][1:])
        cfg["input_size"] = (chans or cfg["input_size"][0], *hw)
    cfg["num_classes"] = model.num_classes
    cfg["pool_size"] = model.feature_grid(cfg["input_size"])
    model.pretrained_cfg = model.default_cfg = cfg
    model.model_name = name
    model.model_kwargs = {k: v for k, v in kwargs.items() if k != "num_classes"}
    return model


def wrap_features(model: nn.Module, out_indices: Any = None, feature_fmt: str | None = None,
                  feature_cls: str | type | None = None, feature_cfg: dict[str, Any] | None = None) -> nn.Module:
    """`model` as a feature extractor (timm's `features_only` contract): `feature_cls` 'getter' (the default, via
    `forward_intermediates`, maps in `feature_fmt`, NCHW unless given), 'hook', 'fx', 'list' or 'dict' (these
    return the model's native NHWC maps), 'pyramid', or a timm feature class; `feature_cfg` holds further wrapper
    options.

    'pyramid' (`lstmvision.layers.pyramid.FeaturePyramid`) returns maps of strides 4, 8, 16 and 32 made from the
    model's own maps (pooled, as they are, or upsampled by transposed convolutions: the simple feature pyramid),
    whatever the model's native strides (Sequencer2D's 7/14/14/14, ViL's 16 for every block); its `out_indices`
    are indices into those levels, and `feature_cfg=dict(strides=(8, 16, 32))` asks for other power-of-two
    strides."""
    cfg = model.pretrained_cfg
    name = model.model_name
    wrapped = _feature_wrapper(model, out_indices, feature_fmt, feature_cls, dict(feature_cfg or {}))
    wrapped.pretrained_cfg = wrapped.default_cfg = pretrained_cfg_for_features(cfg)
    wrapped.model_name = name
    return wrapped


def _feature_class(feature_cls: str | type) -> type:
    if isinstance(feature_cls, type):
        return feature_cls
    classes = dict(getter=FeatureGetterNet, hook=FeatureHookNet, fx=FeatureGraphNet, list=FeatureListNet,
                   dict=FeatureDictNet, pyramid=FeaturePyramid)
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
    if issubclass(cls, FeaturePyramid):
        return _pyramid(model, cls, out_indices, feature_fmt, feature_cfg)
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


def _pyramid(model: nn.Module, cls: type, out_indices: Any, feature_fmt: str | None,
             feature_cfg: dict[str, Any]) -> nn.Module:
    """The 'pyramid' wrapper: `out_indices` pick levels; `feature_cfg` may hold `strides` and `output_fmt`."""
    fmt = feature_fmt or feature_cfg.pop("output_fmt", None) or "NCHW"
    indices = out_indices if out_indices is not None else feature_cfg.pop("out_indices", None)
    feature_cfg.pop("out_indices", None)
    unknown = sorted(set(feature_cfg) - {"strides"})
    if unknown:
        raise ValueError(f"feature_cls='pyramid' takes out_indices, feature_fmt and feature_cfg strides; "
                         f"not {', '.join(unknown)}")
    return cls(model, out_indices=indices, output_fmt=fmt, **feature_cfg)


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
