"""Official constructor arguments -> lstmvision models (test-only: builds the model an official checkpoint fits).

Each official family (the `family` metadata of the reference fixtures) maps to one function that turns the
official constructor's keyword arguments into `create_model(name, **kwargs)` arguments. Weights then load
through `create_model(..., pretrained=...)`, which detects and converts the official key layout.
"""
from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from lstmvision.models import create_model

OfficialMapper = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]
OFFICIAL_FAMILIES: dict[str, OfficialMapper] = {}


def official_family(name: str) -> Callable[[OfficialMapper], OfficialMapper]:
    def wrap(fn: OfficialMapper) -> OfficialMapper:
        OFFICIAL_FAMILIES[name] = fn
        return fn

    return wrap


def _official_sequencer_common(kw: dict[str, Any]) -> dict[str, Any]:
    kw = dict(kw)
    if "drop_rate" in kw:  # the official drop_rate is the MLP dropout; ours (as timm's) is the head dropout
        kw["proj_drop_rate"] = kw.pop("drop_rate")
    return kw


@official_family("official_sequencer2d")
def _sequencer2d(kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "sequencer2d_s", _official_sequencer_common(kwargs)


@official_family("official_vanilla_sequencer")
def _vanilla_sequencer(kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kw = _official_sequencer_common(kwargs)
    kw["pos_embed"] = bool(kw.pop("ape", False))
    kw["shuffle_tokens"] = bool(kw.pop("shuffle", False))
    return "v_sequencer_s", kw


def _official_vil_common(kwargs: dict[str, Any], depth_scale: int) -> dict[str, Any]:
    """Official VisionLSTM / VisionLSTM2 constructor kwargs -> ours (v2's depth counts pairs: depth_scale=2)."""
    kw = dict(kwargs)
    out: dict[str, Any] = {}
    if "dim" in kw:
        out["embed_dim"] = kw.pop("dim")
    if "depth" in kw:
        out["depth"] = depth_scale * kw.pop("depth")
    if "input_shape" in kw:
        shape = list(kw.pop("input_shape"))
        out["in_chans"], out["img_size"] = shape[0], tuple(shape[1:])
    if "output_shape" in kw:
        shape = kw.pop("output_shape")
        out["num_classes"] = shape[0] if isinstance(shape, (list, tuple)) else shape
    if "pooling" in kw:
        out["global_pool"] = kw.pop("pooling")
    if "init_weights" in kw:
        out["init_mode"] = kw.pop("init_weights")
    mode = kw.pop("mode", "classifier")
    if mode == "features":
        out["num_classes"], out["global_pool"] = 0, out.get("global_pool") or ""
    for key in ("patch_size", "stride", "drop_path_rate", "drop_path_decay", "legacy_norm", "conv_kind",
                "conv_kernel_size", "proj_bias", "norm_bias", "alternation"):
        if key in kw:
            out[key] = kw.pop(key)
    if kw:
        raise ValueError(f"unsupported official Vision-LSTM arguments: {sorted(kw)}")
    return out


@official_family("official_vil2")
@official_family("official_vil2_released")
def _vil2(kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kw = _official_vil_common(kwargs, depth_scale=2)
    kw.setdefault("legacy_norm", False)  # the official VisionLSTM2 default
    kw.setdefault("patch_size", 16)
    return "vil2_tiny", kw


@official_family("official_vil1")
@official_family("official_vil1_released")
def _vil1(kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kw = _official_vil_common(kwargs, depth_scale=1)
    kw.setdefault("legacy_norm", False)  # the official VisionLSTM default
    kw.setdefault("patch_size", 16)
    return "vil_tiny", kw


def model_from_official(family: str, kwargs: dict[str, Any], pretrained=None, **overrides: Any) -> nn.Module:
    """Build the lstmvision model equivalent to an official model class called with `kwargs`."""
    if family not in OFFICIAL_FAMILIES:
        raise ValueError(f"unknown official family {family!r}; known: {', '.join(sorted(OFFICIAL_FAMILIES))}")
    name, kw = OFFICIAL_FAMILIES[family](kwargs)
    return create_model(name, pretrained=pretrained, **{**kw, **overrides})
