"""The mLSTM layer of Vision-LSTM (xLSTM's mLSTM block body) and its cell: gates, the mLSTM recurrence over heads
(`lstmvision.ops.mlstm`) and the per-head output norm."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lstmvision.layers.conv import make_sequence_conv
from lstmvision.layers.linear import BlockDiagonalLinear
from lstmvision.layers.norm import MultiHeadLayerNorm
from lstmvision.ops.mlstm import mlstm


class MLSTMCell(nn.Module):
    """Gates from [q, k, v], the mLSTM over NH heads, and the per-head output norm."""

    def __init__(self, inner_dim: int, num_heads: int = 4, norm_bias: bool = True, backend: str | None = None, chunk_size: int = 64):
        super().__init__()
        self.num_heads = num_heads
        self.backend = backend
        self.chunk_size = chunk_size
        self.igate = nn.Linear(3 * inner_dim, num_heads)
        self.fgate = nn.Linear(3 * inner_dim, num_heads)
        self.outnorm = MultiHeadLayerNorm(inner_dim, bias=norm_bias, eps=1e-5)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        B, S, E = q.shape
        i, f = self._gates(q, k, v)
        # (B, S, E) -> (B, S, NH, DH) -> (B, NH, S, DH), DH = E // NH
        q, k, v = (t.reshape(B, S, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        h = mlstm(q, k, v, i, f, backend=self.backend, chunk_size=self.chunk_size, reverse=reverse)
        return self.outnorm(h)

    def _gates(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and forget gate pre-activations (B, NH, S) from [q, k, v]: both gates' Linear at once, as a sum
        over the three parts (no (B, S, 3E) concatenation)."""
        E = q.shape[-1]
        weight = torch.cat([self.igate.weight, self.fgate.weight])  # (2NH, 3E)
        out = F.linear(q, weight[:, :E], torch.cat([self.igate.bias, self.fgate.bias]))
        out = out + F.linear(k, weight[:, E:2 * E]) + F.linear(v, weight[:, 2 * E:])  # (B, S, 2NH)
        i, f = out.transpose(1, 2).chunk(2, dim=1)  # (B, S, 2NH) -> (B, 2NH, S) -> 2 x (B, NH, S)
        return i, f


class MLSTMLayer(nn.Module):
    """xLSTM's mLSTM block body (pre-up-projection), on a (B, S, dim) sequence in its scan order."""

    def __init__(
        self,
        dim: int,
        expansion: int = 2,
        num_heads: int = 4,
        qkv_block_size: int = 4,
        conv_kind: str = "2d",
        conv_kernel_size: int | None = None,
        proj_bias: bool = True,
        norm_bias: bool = True,
        mlstm_backend: str | None = None,
        mlstm_chunk_size: int = 64,
    ):
        super().__init__()
        inner = expansion * dim
        if inner % num_heads:
            raise ValueError(f"inner width {inner} is not divisible by num_heads={num_heads}")
        self.inner_dim = inner
        self.proj_up = nn.Linear(dim, 2 * inner, bias=proj_bias)
        self.q_proj = BlockDiagonalLinear(inner, qkv_block_size, bias=proj_bias)
        self.k_proj = BlockDiagonalLinear(inner, qkv_block_size, bias=proj_bias)
        self.v_proj = BlockDiagonalLinear(inner, qkv_block_size, bias=proj_bias)
        self.conv = make_sequence_conv(conv_kind, inner, conv_kernel_size)
        self.mlstm_cell = MLSTMCell(inner, num_heads, norm_bias, mlstm_backend, mlstm_chunk_size)
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], cls_at: tuple[int, int] | None = None,
                reverse: bool = False) -> torch.Tensor:
        """`grid`: the (h, w) the patch tokens lie on in this scan order; `cls_at`: (start, count) of the class
        tokens in the sequence, or None; `reverse`: the scan reads the sequence from its end."""
        xm, z = self.proj_up(x).chunk(2, dim=-1)  # (B, S, dim) -> 2 x (B, S, inner)
        c = F.silu(self.conv(xm, grid, cls_at, reverse))
        h = self.mlstm_cell(self.q_proj(c), self.k_proj(c), self.v_proj(xm), reverse)
        return self.proj_down((h + self.learnable_skip * c) * F.silu(z))  # (B, S, inner) -> (B, S, dim)
