"""Pieces both model families share: input checks, the position-embedding resize and the registry entrypoints
made from a family's table of models.

The functions that look at tensor sizes are wrapped for torch.fx (`torch.fx.wrap` in the modules that call
them), so symbolic tracing records them as calls instead of tracing through their Python conditions: a traced
model (timm's FeatureGraphNet, torchvision's create_feature_extractor) still runs the checks on real inputs.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def image_size(img_size: int | Sequence[int], min_size: int, model: str) -> tuple[int, int]:
    """`img_size` as (h, w), or a ValueError when a side is below the smallest input the model can take."""
    hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)[-2:]
    if len(hw) != 2 or any(not isinstance(s, int) or s < min_size for s in hw):
        raise ValueError(f"img_size={img_size!r}: {model} needs an int or (h, w) pair of at least {min_size}")
    return hw


def check_input(x: torch.Tensor, in_chans: int, min_size: int) -> torch.Tensor:
    """`x` unchanged if it is a non-empty (B, in_chans, H, W) batch with H, W >= min_size; else a ValueError.

    Returns its input so that the call sits on the data path (a traced graph keeps it).
    """
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"expected a (batch, {in_chans}, height, width) image tensor, got shape {list(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("the input batch is empty (batch size 0)")
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise ValueError(
            f"input {x.shape[-2]}x{x.shape[-1]} is too small: this model needs at least {min_size}x{min_size}"
        )
    return x


def resize_pos_embed(pos_embed: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a (1, h, w, C) position embedding to `grid` (unchanged if it already fits)."""
    fits = pos_embed.shape[1] == grid[0] and pos_embed.shape[2] == grid[1]
    if fits and not torch.jit.is_tracing():  # traced (ONNX export): resample always, so any input size works
        return pos_embed
    pe = F.interpolate(pos_embed.permute(0, 3, 1, 2).float(), size=[grid[0], grid[1]], mode="bicubic", align_corners=False)
    return pe.to(pos_embed.dtype).permute(0, 2, 3, 1)


def entrypoint(
    name: str, build: Callable[[dict[str, Any], dict[str, Any]], nn.Module], defaults: dict[str, Any], module: str
) -> Callable[..., nn.Module]:
    """The model function `name(**kwargs)` of one table row: `build(defaults, kwargs)`, the caller's arguments
    over the row's. `register_model` files it under its name; `module` is the family's module."""

    def model_fn(**kwargs: Any) -> nn.Module:
        return build(defaults, kwargs)

    model_fn.__name__ = model_fn.__qualname__ = name
    model_fn.__module__ = module
    model_fn.__doc__ = f"{name}: {', '.join(f'{k}={v!r}' for k, v in defaults.items())} (keyword arguments override)."
    return model_fn
