"""Sequence operators shared by the model families."""
from lstmvision.ops.mlstm import BACKENDS as MLSTM_BACKENDS
from lstmvision.ops.mlstm import mlstm, resolve_backend

__all__ = ["MLSTM_BACKENDS", "mlstm", "resolve_backend"]
