"""Scan orders of a token grid: the four directions a ViL sub-block reads its (B, h·w [+ class tokens], C)
tokens in, and their inverses."""
from __future__ import annotations

import torch


def transpose_grid(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Row-major (B, h·w, C) tokens of an (h, w) grid -> the row-major tokens of the transposed (w, h) grid."""
    B, S, C = x.shape
    h, w = grid
    # (B, S, C) -> (B, h, w, C) -> (B, w, h, C) -> (B, S, C)
    return x.reshape(B, h, w, C).transpose(1, 2).reshape(B, S, C)


def to_scan(
    x: torch.Tensor, grid: tuple[int, int], direction: int, num_cls: int = 0
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Row-major (B, h·w [+ num_cls], C) tokens -> the token order of `direction` and the grid they lie on in it.

    0: rows from the top left; 1: rows from the bottom right (a 180° rotation of the grid);
    2: columns from the top left (the grid transposed); 3: columns from the bottom right.
    Directions 2 and 3 transpose the grid here; 1 and 3 are not flipped: the layer reads the sequence from its
    end (`reverse`), which equals flipping it, class tokens included. Class tokens (num_cls of them at index
    h·w // 2) stay in the middle of a column-wise sequence.
    """
    h, w = grid
    if direction < 2:
        return x, grid
    if not num_cls:
        return transpose_grid(x, grid), (w, h)
    mid = (h * w) // 2
    patches = transpose_grid(torch.cat([x[:, :mid], x[:, mid + num_cls:]], dim=1), grid)
    return torch.cat([patches[:, :mid], x[:, mid:mid + num_cls], patches[:, mid:]], dim=1), (w, h)


def from_scan(x: torch.Tensor, grid: tuple[int, int], direction: int, num_cls: int = 0) -> torch.Tensor:
    """The inverse of `to_scan` (`grid` is the row-major grid)."""
    h, w = grid
    return to_scan(x, (w, h), direction, num_cls)[0]
