"""Recurrence operators shared by the model families: the 2-D RNN scan of Sequencer (`rnn2d`) and the mLSTM
of ViL (`mlstm`).

Each op has a math reference and fast paths behind the same signature. Which one runs is chosen in one
place, `lstmvision.ops.dispatch`: `set_backend(rnn2d=..., mlstm=...)`, `use_backend(...)` for a block,
`get_backend()`; initially from LSTMVISION_KERNELS / LSTMVISION_MLSTM_BACKEND. `check_kernels` compares every
backend available on a device with the math reference (`lstmvision check-kernels`).
"""
from lstmvision.ops.dispatch import (
    MLSTM_BACKENDS,
    RNN2D_BACKENDS,
    Backends,
    get_backend,
    set_backend,
    use_backend,
)
from lstmvision.ops.mlstm import mlstm, resolve_mlstm_backend
from lstmvision.ops.rnn2d import rnn2d, rnn2d_reference

__all__ = [
    "Backends", "MLSTM_BACKENDS", "RNN2D_BACKENDS", "get_backend", "mlstm", "resolve_mlstm_backend", "rnn2d",
    "rnn2d_reference", "set_backend", "use_backend",
]
