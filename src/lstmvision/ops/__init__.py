"""Recurrence operators shared by the model families: the 2-D RNN scan of Sequencer and the mLSTM of ViL.

Each op has one reference function holding the math and fast paths behind the same signature, chosen
automatically with a fallback (`LSTMVISION_KERNELS`, `LSTMVISION_MLSTM_BACKEND`).
"""
from lstmvision.ops.mlstm import BACKENDS as MLSTM_BACKENDS
from lstmvision.ops.mlstm import mlstm, resolve_backend

__all__ = ["MLSTM_BACKENDS", "mlstm", "resolve_backend"]
