"""Layer norms of Vision-LSTM: the offset-scale LayerNorm and its per-head variant for the mLSTM output."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class OffsetLayerNorm(nn.Module):
    """LayerNorm whose stored weight is an offset: the scale is 1 + weight (weight initialised to 0)."""

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the normalised shape from the parameter, not from x: a static size keeps ONNX export possible
        return F.layer_norm(x, self.weight.shape, 1 + self.weight, self.bias, self.eps)


class MultiHeadLayerNorm(OffsetLayerNorm):
    """Per-head LayerNorm of (B, NH, S, DH) with an offset affine over all NH·DH channels; returns (B, S, NH·DH)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, NH, S, DH = x.shape
        x = x.transpose(1, 2)  # (B, NH, S, DH) -> (B, S, NH, DH)
        if torch.jit.is_tracing():  # ONNX export: the head width is a traced value, F.layer_norm needs it static
            mean = x.mean(-1, keepdim=True)
            x = (x - mean) * torch.rsqrt((x - mean).pow(2).mean(-1, keepdim=True) + self.eps)
        else:
            x = F.layer_norm(x, (DH,), eps=self.eps)
        x = x * (1 + self.weight).view(NH, DH)  # (NH*DH,) -> (NH, DH)
        if self.bias is not None:
            x = x + self.bias.view(NH, DH)  # (NH*DH,) -> (NH, DH)
        return x.reshape(B, S, NH * DH)  # (B, S, NH, DH) -> (B, S, NH*DH)
