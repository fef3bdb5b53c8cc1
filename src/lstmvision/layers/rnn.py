"""Recurrent layers that `torch.compile` traces without graph breaks.

Dynamo graph-breaks on every `torch.nn.LSTM`/`GRU`/`RNN` instance ("Dynamo does not support RNN, GRU, or LSTM")
unless the global flag `torch._dynamo.config.allow_rnn` is set; the check is on those three classes. The
classes here derive from `nn.RNNBase` instead, with the same parameters (`weight_ih_l0`, `weight_hh_l0_reverse`,
...), the same state-dict keys, the same fused kernels (`torch._VF.lstm`/`gru`/`rnn_*`, i.e. cuDNN and oneDNN)
and the same outputs. So timm and official checkpoints load unchanged, TorchScript and ONNX export emit the
same `aten::lstm` (ONNX `LSTM`) op, and Dynamo puts the whole recurrence in the graph as one op.

Only what the models use is supported: (batch, seq, feature) or (seq, batch, feature) tensors, or unbatched
2-D input; no `PackedSequence`, no `proj_size`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch import _VF, Tensor

__all__ = ["LSTM", "GRU", "RNN", "RNN_GATES", "is_rnn"]

# gates per recurrent cell type (`nn.RNNBase.mode`): used by the MAC counter
RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def is_rnn(module: nn.Module) -> bool:
    """True for torch's and lstmvision's LSTM/GRU/RNN layers."""
    return isinstance(module, nn.RNNBase) and module.mode in RNN_GATES


class _Compilable(nn.RNNBase):
    def _batched(self, x: Tensor) -> Tuple[Tensor, bool]:
        if x.dim() == 3:
            return x, True
        if x.dim() == 2:
            return x.unsqueeze(0 if self.batch_first else 1), False
        raise ValueError(f"{self.mode}: expected a 2-D or 3-D input, got {x.dim()}-D")

    def _zeros(self, x: Tensor) -> Tensor:
        batch = x.size(0) if self.batch_first else x.size(1)
        dirs = 2 if self.bidirectional else 1
        return torch.zeros(self.num_layers * dirs, batch, self.hidden_size, dtype=x.dtype, device=x.device)

    def _unbatch(self, out: Tensor, batched: bool) -> Tensor:
        return out if batched else out.squeeze(0 if self.batch_first else 1)


class LSTM(_Compilable):
    """`torch.nn.LSTM` (without proj_size/packed input) that Dynamo traces; same weights and outputs."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        x, batched = self._batched(input)
        if hx is None:
            h0 = self._zeros(x)
            state = (h0, torch.zeros_like(h0))
        elif batched:
            state = hx
        else:
            state = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        out, h, c = _VF.lstm(x, state, self._flat_weights, self.bias, self.num_layers, float(self.dropout),
                             self.training, self.bidirectional, self.batch_first)
        if not batched:
            h, c = h.squeeze(1), c.squeeze(1)
        return self._unbatch(out, batched), (h, c)


class GRU(_Compilable):
    """`torch.nn.GRU` (without packed input) that Dynamo traces; same weights and outputs."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        x, batched = self._batched(input)
        if hx is None:
            h0 = self._zeros(x)
        elif batched:
            h0 = hx
        else:
            h0 = hx.unsqueeze(1)
        out, h = _VF.gru(x, h0, self._flat_weights, self.bias, self.num_layers, float(self.dropout),
                         self.training, self.bidirectional, self.batch_first)
        if not batched:
            h = h.squeeze(1)
        return self._unbatch(out, batched), h


class RNN(_Compilable):
    """`torch.nn.RNN` (tanh or relu, without packed input) that Dynamo traces; same weights and outputs."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        x, batched = self._batched(input)
        if hx is None:
            h0 = self._zeros(x)
        elif batched:
            h0 = hx
        else:
            h0 = hx.unsqueeze(1)
        if self.mode == "RNN_TANH":
            out, h = _VF.rnn_tanh(x, h0, self._flat_weights, self.bias, self.num_layers, float(self.dropout),
                                  self.training, self.bidirectional, self.batch_first)
        else:
            out, h = _VF.rnn_relu(x, h0, self._flat_weights, self.bias, self.num_layers, float(self.dropout),
                                  self.training, self.bidirectional, self.batch_first)
        if not batched:
            h = h.squeeze(1)
        return self._unbatch(out, batched), h
