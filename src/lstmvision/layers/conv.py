"""Depthwise convolutions over a (B, S, C) token sequence: causal along the sequence (ViL v1) or 2-D on the
token grid (ViL v2). Both take the scan direction (`reverse`) and turn the kernel instead of the tokens."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

CONV_KINDS = ("2d", "causal1d")


class CausalConv1d(nn.Conv1d):
    """Depthwise causal Conv1d along the sequence of (B, S, C) tokens (left padding k-1); with `reverse`, causal
    for the sequence read backwards (right padding, the kernel mirrored): the flipped input's output, flipped."""

    def __init__(self, dim: int, kernel_size: int = 4, bias: bool = True):
        super().__init__(dim, dim, kernel_size, groups=dim, bias=bias)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], cls_at: tuple[int, int] | None = None,  # type: ignore[override]
                reverse: bool = False) -> torch.Tensor:
        # class tokens (cls_at) are ordinary sequence positions for the 1-D conv, as in the official v1
        pad = (0, self.kernel_size[0] - 1) if reverse else (self.kernel_size[0] - 1, 0)
        weight = self.weight.flip(-1) if reverse else self.weight
        x = F.pad(x.transpose(1, 2), pad)  # (B, S, C) -> (B, C, S + k-1)
        return F.conv1d(x, weight, self.bias, groups=self.groups).transpose(1, 2)  # (B, C, S) -> (B, S, C)


class GridConv2d(nn.Conv2d):
    """Depthwise 'same' Conv2d applied to (B, S, C) tokens laid out on the real (h, w) grid of this input. With
    `reverse` the tokens are the grid read backwards (rotated by 180°): the kernel is rotated instead of the map."""

    def __init__(self, dim: int, kernel_size: int = 3, bias: bool = True):
        if kernel_size % 2 == 0:
            raise ValueError(f"the 2-D conv needs an odd kernel size, got {kernel_size}")
        super().__init__(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=bias)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], cls_at: tuple[int, int] | None = None,  # type: ignore[override]
                reverse: bool = False) -> torch.Tensor:
        if cls_at is not None:  # class tokens (start, count) skip the conv: their output is their input
            start, n = cls_at
            y = self.forward(torch.cat([x[:, :start], x[:, start + n:]], dim=1), grid, reverse=reverse)
            return torch.cat([y[:, :start], x[:, start:start + n], y[:, start:]], dim=1)
        B, S, C = x.shape
        h, w = grid
        if h * w != S:
            raise ValueError(f"{S} tokens do not form the {h}x{w} grid")
        weight = self.weight.flip(-1, -2) if reverse else self.weight
        # (B, S, C) -> (B, h, w, C) -> (B, C, h, w) as a channels-last view: no copy either way
        y = F.conv2d(x.reshape(B, h, w, C).permute(0, 3, 1, 2), weight, self.bias, padding=self.padding,
                     groups=self.groups)
        return y.permute(0, 2, 3, 1).reshape(B, S, C)  # (B, C, h, w) -> (B, h, w, C) -> (B, S, C)


def make_sequence_conv(kind: str, dim: int, kernel_size: int | None = None) -> nn.Module:
    """The depthwise conv of `kind` ('2d': GridConv2d, k=3; 'causal1d': CausalConv1d, k=4 unless given)."""
    if kind == "2d":
        return GridConv2d(dim, kernel_size or 3)
    if kind == "causal1d":
        return CausalConv1d(dim, kernel_size or 4)
    raise ValueError(f"conv_kind must be one of {CONV_KINDS}, got {kind!r}")
