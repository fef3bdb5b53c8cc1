"""Official constructor arguments -> lstmvision models, and checkpoint conversion to a saved folder.

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


def model_from_official(family: str, kwargs: dict[str, Any], pretrained=None, **overrides: Any) -> nn.Module:
    """Build the lstmvision model equivalent to an official model class called with `kwargs`."""
    if family not in OFFICIAL_FAMILIES:
        raise ValueError(f"unknown official family {family!r}; known: {', '.join(sorted(OFFICIAL_FAMILIES))}")
    name, kw = OFFICIAL_FAMILIES[family](kwargs)
    return create_model(name, pretrained=pretrained, **{**kw, **overrides})
