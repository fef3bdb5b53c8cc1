"""Block-diagonal Linear: the q/k/v projections of the mLSTM layer."""
from __future__ import annotations

import torch
import torch.nn as nn


class BlockDiagonalLinear(nn.Module):
    """Linear map made of `dim // block` independent `block x block` blocks (xLSTM's LinearHeadwiseExpand)."""

    def __init__(self, dim: int, block: int = 4, bias: bool = True):
        super().__init__()
        if dim % block:
            raise ValueError(f"width {dim} is not divisible by the q/k/v block size {block}")
        self.block = block
        self.weight = nn.Parameter(torch.empty(dim // block, block, block))  # (blocks, out, in)
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(*shape[:-1], -1, self.block)  # (..., dim) -> (..., blocks, block)
        # (..., blocks, in) x (blocks, out, in) -> (..., blocks, out) -> (..., dim). On a CPU as fast as
        # broadcast multiply-adds or a batched matmul in inference, and the fastest with gradients
        x = torch.einsum("...hi,hoi->...ho", x, self.weight).reshape(shape)
        return x + self.bias if self.bias is not None else x
