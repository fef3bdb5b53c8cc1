"""The one way to get a model: `create_model(name, pretrained=...)`, with timm's semantics.

`name` is any of:
- a registered architecture, optionally with a pretrained tag: `sequencer2d_s`, `sequencer2d_s.in1k`,
  `vil2_tiny.in1k_e400` (the name alone means its default tag);
- `timm:NAME`, any timm model (timm's own weights with `pretrained=True`);
- `hf-hub:ORG/REPO[@REV]` or `local-dir:PATH`: a model saved in timm's Hub layout (`save_for_hf`), built from its
  config.json;
- a folder written by `save_pretrained` or a training run folder (its best/, else last/), with its weights
  (classifiers, and the segmenters and detectors of `lstmvision segment` / `lstmvision detect`).

`pretrained` is `True` (the weights of the tag or repo: `pretrained_cfg_overlay['file']`, else the Hub, else the
URL, converted from the publisher's layout), `False`/`None` (random weights), or a path to a weights file or saved
folder. `checkpoint_path` loads a checkpoint after the model is built, as timm's does. Every model carries
`weights_source` (where its weights came from; None for random weights) and `label` (a short name for tables).
`check_input_size` tells, without memory or compute, whether an architecture takes an input size.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn

from lstmvision.constants import DETECTOR_PREFIX, UPERNET_PREFIX
from lstmvision.errors import first_line
from lstmvision.models import hub
from lstmvision.models.detection import create_detector
from lstmvision.models.registry import (
    build_model,
    check_arguments,
    get_pretrained_cfg,
    is_model,
    released_tag,
    split_tag,
    unknown_model_message,
    wrap_features,
)
from lstmvision.models.timm_models import create_timm_model, timm_name
from lstmvision.models.upernet import create_segmenter
from lstmvision.outputs import CHECKPOINT_NAMES
from lstmvision.weights import (
    CONFIG_NAME,
    WeightsError,
    convert_state_dict,
    find_checkpoint,
    load_pretrained,
    load_state_dict_into,
    read_config,
    read_state_dict,
)

HF_HUB_PREFIX = hub.HF_HUB_PREFIX
LOCAL_DIR_PREFIX = "local-dir:"
_FEATURE_ARGS = ("out_indices", "feature_fmt", "feature_cls", "feature_cfg")


def _head_classes(state: dict[str, torch.Tensor], classifier: Any) -> int | None:
    """Classes of the classifier weights in a state dict (own, timm or official key layout), if found."""
    names = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
    keys = [f"{n}.weight" for n in names if n] + ["head.fc.weight", "head.weight"]
    head = next((state[k] for k in keys if k in state), None)
    return int(head.shape[0]) if head is not None and head.dim() == 2 else None


def _label(folder: Path) -> str:
    folder = folder.resolve()
    return folder.parent.name if folder.name in CHECKPOINT_NAMES else folder.name


def _is_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or Path(spec).exists()


# ----------------------------------------------------------------------------------------- saved folders
def _from_config(saved: dict[str, Any], num_classes: int | None, kwargs: dict[str, Any]) -> nn.Module:
    """The architecture a saved config describes (random weights), with its cfg and class names. The saved
    model arguments are defaults that the caller's `num_classes` and `kwargs` override, as in timm."""
    arch = saved["architecture"]
    saved_args = dict(saved["kwargs"])
    saved_classes = saved_args.pop("num_classes", None)  # timm's save_for_hf keeps it among the model args
    asked = {k: kwargs[k] for k in ("in_chans", "img_size") if k in kwargs}
    kwargs = {**saved_args, **kwargs}
    classes = next((c for c in (num_classes, saved["num_classes"], saved_classes) if c is not None), None)
    if arch.startswith(UPERNET_PREFIX):
        model = create_segmenter(num_classes=classes, **kwargs)
    elif arch.startswith(DETECTOR_PREFIX):
        model = create_detector(num_classes=classes, **kwargs)
    elif is_model(arch):
        model = _build(arch, classes, kwargs)
    else:
        name = timm_name(arch) or arch
        if not timm.is_model(name):
            raise WeightsError(f"the saved architecture {arch!r} is neither a lstmvision nor a timm model")
        model = create_timm_model(name, classes, None, None, kwargs)
    own = dict(model.pretrained_cfg or {})
    model.pretrained_cfg = model.default_cfg = {**own, **saved["pretrained_cfg"], "num_classes": model.num_classes}
    if asked and own.get("input_size") and model.pretrained_cfg.get("input_size"):
        model.pretrained_cfg["input_size"] = _asked_input_size(model.pretrained_cfg["input_size"],
                                                               own["input_size"], asked)
    if saved["class_names"] and len(saved["class_names"]) == model.num_classes:
        model.class_names = list(saved["class_names"])
    return model


def _asked_input_size(saved: Any, built: Any, asked: dict[str, Any]) -> tuple[int, ...]:
    """The saved input size with what the caller asked for instead: `in_chans`, and `img_size` (as built)."""
    size = list(saved)
    if "in_chans" in asked:
        size[0] = asked["in_chans"]
    if "img_size" in asked:
        size[1:] = list(built)[1:]
    return tuple(size)


def _saved_model(folder: Path, num_classes: int | None, kwargs: dict[str, Any], weights: bool) -> nn.Module:
    model = _from_config(read_config(folder), num_classes, kwargs)
    if weights:
        _load_weights(model, read_state_dict(folder), str(folder))
    return model


def _hub_model(repo: str, num_classes: int | None, kwargs: dict[str, Any], weights: bool) -> nn.Module:
    """A model saved in timm's layout in Hub repo `repo` ('org/name[@rev]')."""
    model = _from_config(read_config(hub.hub_config_dir(repo)), num_classes, kwargs)
    model.pretrained_cfg = dict(model.pretrained_cfg, hf_hub_id=repo)
    if weights:
        path = hub.weights_file({"hf_hub_id": repo}, HF_HUB_PREFIX + repo)
        _load_weights(model, read_state_dict(path), f"{HF_HUB_PREFIX}{repo} ({path.name})")
    return model


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    load_state_dict_into(model, convert_state_dict(state, model), source=source)
    model.weights_source = source


# -------------------------------------------------------------------------------------------- by name
def _weights_path(pretrained: str | os.PathLike) -> Path:
    path = Path(pretrained)
    if not path.exists():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    return find_checkpoint(path, prefer="best") if path.is_dir() else path


def _named_model(spec: str, pretrained: Any, num_classes: int | None, kwargs: dict[str, Any],
                 overlay: dict[str, Any]) -> nn.Module:
    """A registered architecture (`arch[.tag]`), with weights from its tag (`pretrained=True`) or a path."""
    arch, _ = split_tag(spec)
    cfg = {**get_pretrained_cfg(spec), **overlay}
    if pretrained is True:  # the overlay's own source (timm's local-dir / hf-hub names), else the released tag
        own_source = any(overlay.get(k) for k in ("file", "hf_hub_id", "url"))
        path = hub.weights_file(cfg, spec if own_source else released_tag(spec), released=not own_source)
        source = str(path)
    elif pretrained:
        path = _weights_path(pretrained)
        if path.is_dir():  # a saved / checkpoint folder: its own architecture arguments and classes
            saved = read_config(path)
            if saved["architecture"] != arch:
                raise ValueError(f"{path} holds a {saved['architecture']!r} model: a checkpoint of "
                                 f"{saved['architecture']} cannot load into {arch}; ask for model "
                                 f"{saved['architecture']!r}, or give no model name")
            return _saved_model(path, num_classes, kwargs, weights=True)
        source = str(path)
    else:
        model = _build(arch, num_classes, kwargs)
        model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, **overlay}
        return model
    state = read_state_dict(path)
    if num_classes is None and pretrained is not True:  # a file's own head size
        num_classes = _head_classes(state, cfg.get("classifier"))
    model = _build(arch, num_classes, kwargs)
    model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, **overlay, "num_classes": model.num_classes}
    _load_weights(model, state, source)
    return model


def _timm_model(name: str, pretrained: Any, num_classes: int | None, img_size: int | None,
                kwargs: dict[str, Any]) -> nn.Module:
    if pretrained is True:
        return create_timm_model(name, num_classes, None, img_size, kwargs, pretrained=True)
    if not pretrained:
        return create_timm_model(name, num_classes, None, img_size, kwargs)
    path = _weights_path(pretrained)
    if path.is_dir():  # a saved folder of this timm model
        return _saved_model(path, num_classes, kwargs, weights=True)
    state = read_state_dict(path)
    if num_classes is None:
        cfg = timm.get_pretrained_cfg(name)
        num_classes = _head_classes(state, getattr(cfg, "classifier", None))
    model = create_timm_model(name, num_classes, None, img_size, kwargs)
    _load_weights(model, state, str(path))
    return model


# ---------------------------------------------------------------------------------------- entry point
def create_model(
    model_name: str | os.PathLike | None = None,
    pretrained: bool | str | os.PathLike | None = False,
    num_classes: int | None = None,
    in_chans: int | None = None,
    img_size: int | None = None,
    *,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    features_only: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build model `model_name` and load its weights (see the module docstring for the names and sources).

    `num_classes` other than the weights' re-initialises the classifier (with a warning); `in_chans` other than
    3 adapts RGB weights as timm does; `img_size` is the input size the model is built for (position
    embeddings; timm models with a fixed size); `kwargs` override the architecture.
    `features_only=True` wraps the model as timm does (`out_indices`, `feature_fmt`, `feature_cls`,
    `feature_cfg`; see `lstmvision.models.registry.wrap_features`): the model's own maps, or with
    `feature_cls='pyramid'` maps at strides 4, 8, 16 and 32. The model is returned in train mode, as timm's; call
    `.eval()` to evaluate it.
    """
    _check_call(model_name, pretrained, num_classes, in_chans, img_size, kwargs)
    feature_args = {k: kwargs.pop(k) for k in _FEATURE_ARGS if k in kwargs}
    if any(v is not None for v in feature_args.values()) and not features_only:
        raise ValueError("out_indices, feature_cls and feature_cfg need features_only=True")
    overlay = dict(pretrained_cfg_overlay or {})
    if model_name is None:
        if not isinstance(pretrained, (str, os.PathLike)) or isinstance(pretrained, bool):
            raise ValueError("create_model needs a model name, or pretrained= a folder written by save_pretrained")
        model_name, pretrained = pretrained, True
    spec = str(model_name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    if img_size is not None and not timm_name(spec):
        kwargs["img_size"] = img_size
    if overlay.get("file") and pretrained is False:
        warnings.warn("pretrained_cfg_overlay['file'] is only read with pretrained=True", stacklevel=2)
    model = _dispatch(spec, pretrained, num_classes, img_size, kwargs, overlay)
    if not hasattr(model, "weights_source"):
        model.weights_source = None
    if checkpoint_path is not None:
        load_pretrained(model, checkpoint_path)
        model.weights_source = str(checkpoint_path)
    if features_only:
        if not is_model(getattr(model, "model_name", "")):
            raise ValueError(f"features_only is for lstmvision models; {spec} is not one (timm: use timm's own)")
        label, source = model.label, model.weights_source
        model = wrap_features(model, **feature_args)
        model.label, model.weights_source = label, source
    return model


def _check_call(model_name: Any, pretrained: Any, num_classes: Any, in_chans: Any, img_size: Any,
                kwargs: dict[str, Any]) -> None:
    """create_model's arguments, each refused with one clear ValueError before anything is built or read."""
    if model_name is not None and not isinstance(model_name, (str, os.PathLike)):
        raise ValueError(f"model_name must be a model name (str) or a path, got {type(model_name).__name__} "
                         f"{model_name!r}")
    if pretrained is not None and not isinstance(pretrained, (bool, str, os.PathLike)):
        raise ValueError(f"pretrained must be True/False or a path to weights, got {type(pretrained).__name__} "
                         f"{pretrained!r}")
    if isinstance(model_name, str) and not model_name.strip():
        raise ValueError("model_name is empty")
    if in_chans is not None and (not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1):
        raise ValueError(f"in_chans must be an int >= 1, got {in_chans!r}")
    check_arguments(dict(kwargs, num_classes=num_classes, img_size=img_size))


def _build(arch: str, num_classes: int | None, kwargs: dict[str, Any]) -> nn.Module:
    """`build_model`, with what a constructor raises on arguments it cannot work with as one ValueError."""
    try:
        return build_model(arch, num_classes=num_classes, **kwargs)
    except (RuntimeError, AssertionError, ZeroDivisionError, IndexError) as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ValueError(f"{arch} cannot be built with {shown or 'its defaults'}: {first_line(e)}") from None


def _dispatch(spec: str, pretrained: Any, num_classes: int | None, img_size: int | None,
              kwargs: dict[str, Any], overlay: dict[str, Any]) -> nn.Module:
    if spec.startswith(HF_HUB_PREFIX):
        model = _hub_model(spec[len(HF_HUB_PREFIX):], num_classes, kwargs, weights=bool(pretrained))
        model.label = spec[len(HF_HUB_PREFIX):].split("@")[0].split("/")[-1]
        return model
    if spec.startswith(LOCAL_DIR_PREFIX):
        folder = _local_dir(spec)
        model = _saved_model(folder, num_classes, kwargs, weights=bool(pretrained))
        model.label = _label(folder)
        return model
    name = timm_name(spec)
    if name is not None:
        model = _timm_model(name, pretrained, num_classes, img_size, kwargs)
        model.label = name
        return model
    if not is_model(split_tag(spec)[0]) and _is_path(spec):
        path = Path(spec)
        if path.is_file():
            raise ValueError(_weights_file_message(path))
        if pretrained not in (None, False, True):
            raise ValueError(f"{path} is a saved model with its own weights: give either it or pretrained weights "
                             "for a model name, not both")
        folder = find_checkpoint(path, prefer="best")
        model = _saved_model(folder, num_classes, kwargs, weights=True)
        model.label = _label(folder)
        return model
    model = _named_model(spec, pretrained, num_classes, kwargs, overlay)
    model.label = spec
    return model


def _local_dir(spec: str) -> Path:
    """The folder of a `local-dir:PATH` spec, refused in one line when it holds no saved model."""
    text = spec[len(LOCAL_DIR_PREFIX):]
    if not text.strip():
        raise ValueError(f"{spec} names no folder: give local-dir:PATH, a folder holding config.json and weights")
    folder = Path(text)
    if not folder.is_dir():
        raise FileNotFoundError(f"{spec}: no such folder")
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{folder} holds no config.json (write one with lstmvision.save_for_hf)")
    return folder


def _weights_file_message(path: Path) -> str:
    """What to give instead of a bare weights file where a saved model (a folder) is expected: the folder that
    holds it when it is a saved model's (every command takes that), else a model name for the file."""
    if (path.parent / CONFIG_NAME).is_file():
        return (f"{path} is a weights file and does not say which architecture it holds: give the folder that holds "
                f"it, {path.parent}, a saved model (config.json + weights)")
    return (f"{path} is a weights file with no config.json beside it, so it does not say which architecture it "
            "holds: give a saved model folder, or a model name with the file as its weights "
            f"(create_model(NAME, pretrained=PATH); CLI: --model NAME --initial-checkpoint {path})")


def check_input_size(name: str, kwargs: dict[str, Any], in_chans: int, size: int,
                     num_classes: int | None = None) -> None:
    """Build registered model `name` with `kwargs` on the meta device (no memory, no compute) and pass one
    (1, in_chans, size, size) input: a ValueError if the architecture cannot take that size. Arguments the
    model does not take, or values no architecture takes (`registry.check_arguments`), raise TypeError.

    The forward pass is skipped at or above the model's own input size with no architecture arguments: such
    sizes work, and a long LSTM sequence costs seconds even on the meta device (dispatch per time step)."""
    shape_args = set(kwargs) - {"img_size", "in_chans", "num_classes", "drop_path_rate", "drop_rate"}
    kwargs = dict(kwargs, in_chans=in_chans)
    num_classes = kwargs.pop("num_classes", None) or num_classes or 10
    if not is_model(split_tag(name)[0]):
        raise ValueError(unknown_model_message(name))
    try:
        check_arguments(dict(kwargs, num_classes=num_classes))
    except ValueError as e:
        raise TypeError(first_line(e)) from None
    with torch.device("meta"), torch.no_grad():
        try:
            model = build_model(split_tag(name)[0], num_classes=num_classes, **kwargs)
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
