"""Sequencer's token mixers over an NHWC map: BiLSTM2D (vertical and horizontal RNNs fused by a Linear) and the
vanilla mixer (one RNN over the raster-ordered tokens). The recurrent layers are `lstmvision.layers.rnn`'s."""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import register_notrace_module

from lstmvision.layers.rnn import GRU, LSTM, RNN
from lstmvision.ops import dispatch
from lstmvision.ops.rnn2d import module_weights, resolve_rnn2d_backend, rnn2d

# nn.RNNBase layers with torch's LSTM/GRU/RNN weights and kernels that torch.compile traces without graph breaks
RNN_TYPES = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
_CELLS = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn"}  # by nn.RNNBase.mode
UNIONS = ("cat", "add", "vertical", "horizontal")


def make_rnn(rnn_type: str, dim: int, hidden: int, bidirectional: bool) -> nn.RNNBase:
    """One batch-first, single-layer recurrent layer of `rnn_type` ('lstm', 'gru' or 'rnn')."""
    if rnn_type not in RNN_TYPES:
        raise ValueError(f"rnn_type must be one of {sorted(RNN_TYPES)}, got {rnn_type!r}")
    return RNN_TYPES[rnn_type](dim, hidden, num_layers=1, batch_first=True, bias=True, bidirectional=bidirectional)


@register_notrace_module  # a leaf for timm's fx tracing: the recurrence dispatches on the real input
class RNN2DMixer(nn.Module):
    """BiLSTM2D (or GRU/RNN): vertical and horizontal RNNs over an NHWC map, fused by a Linear.

    Output channels of the union are ordered [vertical fwd | vertical bwd | horizontal fwd | horizontal bwd].
    `backend` (None: the active choice of `lstmvision.ops.dispatch`, default "auto"): "module" (what "auto"
    resolves to) calls the nn.LSTM/GRU/RNN modules themselves, exactly as the official code does; the other
    backends of `lstmvision.ops.rnn2d` run all directions in one `rnn2d` call.
    """

    def __init__(
        self,
        dim: int,
        hidden_size: int,
        rnn_type: str = "lstm",
        bidirectional: bool = True,
        union: str = "cat",
        with_fc: bool = True,
        backend: str | None = None,
    ):
        super().__init__()
        self.backend = None if backend is None else dispatch.check("rnn2d", backend)
        if union not in UNIONS:
            raise ValueError(f"union must be one of {UNIONS}, got {union!r}")
        self.union = union
        out = hidden_size * (2 if bidirectional else 1)
        self.rnn_v = make_rnn(rnn_type, dim, hidden_size, bidirectional) if union != "horizontal" else None
        self.rnn_h = make_rnn(rnn_type, dim, hidden_size, bidirectional) if union != "vertical" else None
        mixed = 2 * out if union == "cat" else out
        if with_fc:
            self.fc = nn.Linear(mixed, dim)
        elif mixed != dim:
            raise ValueError(
                f"with_fc=False needs the {union!r} output width ({mixed}) to equal dim ({dim}); "
                f"choose hidden_size={dim // (mixed // hidden_size)} or with_fc=True"
            )
        else:
            self.fc = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript: the recurrent modules (the fused ops are not scriptable)
            parts = self._forward_modules(x)
        else:
            parts = self._forward_parts(x)
        if self.union == "cat":
            x = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        elif self.union == "add":
            x = parts[0] + parts[1]
        else:
            x = parts[0]
        return self.fc(x) if self.fc is not None else x

    @torch.jit.unused
    def _forward_parts(self, x: torch.Tensor) -> list[torch.Tensor]:
        rnn = self.rnn_v if self.rnn_v is not None else self.rnn_h
        cell = _CELLS[rnn.mode]
        backend = resolve_rnn2d_backend(x, cell, self.backend)
        if backend == "module":
            parts = self._forward_modules(x)
        else:
            y = rnn2d(
                x,
                module_weights(self.rnn_v) if self.rnn_v is not None else None,
                module_weights(self.rnn_h) if self.rnn_h is not None else None,
                cell,
                getattr(rnn, "nonlinearity", "tanh"),
                backend,
            )
            parts = list(y.chunk(2, -1)) if self.union == "add" else [y]  # cat: y is already [v | h]
        return parts

    def _forward_modules(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The official formulation: nn.LSTM over the columns, then over the rows."""
        B, H, W, C = x.shape
        parts = []
        if self.rnn_v is not None:
            # (B, H, W, C) -> (B*W, H, C)
            v = x.permute(0, 2, 1, 3).reshape(B * W, H, C)  # one sequence per column, top to bottom
            v = self.rnn_v(v)[0].reshape(B, W, H, -1).permute(0, 2, 1, 3)  # (B*W, H, out) -> (B, H, W, out)
            parts.append(v)
        if self.rnn_h is not None:
            # (B, H, W, C) -> (B*H, W, C); rnn_h output (B*H, W, out) -> (B, H, W, out)
            h = self.rnn_h(x.reshape(B * H, W, C))[0].reshape(B, H, W, -1)  # one sequence per row
            parts.append(h)
        return parts


@register_notrace_module
class RNN1DMixer(nn.Module):
    """Vanilla Sequencer mixer: one (Bi)RNN over all H*W tokens in row-major raster order, no fc."""

    def __init__(self, dim: int, hidden_size: int, rnn_type: str = "lstm", bidirectional: bool = True):
        super().__init__()
        out = hidden_size * (2 if bidirectional else 1)
        if out != dim:
            raise ValueError(f"the vanilla mixer has no fc: its output width ({out}) must equal dim ({dim})")
        self.rnn = make_rnn(rnn_type, dim, hidden_size, bidirectional)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        # (B, H, W, C) -> (B, H*W, C) raster order; rnn output (B, H*W, C) -> (B, H, W, C)
        return self.rnn(x.reshape(B, H * W, C))[0].reshape(B, H, W, -1)
