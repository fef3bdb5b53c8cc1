"""Runtime choices shared by every command: which device, how many CPU threads."""
from __future__ import annotations

import os

import torch


def resolve_device(name: str | None) -> torch.device:
    """`name` ('cpu', 'cuda', 'cuda:1', ...) checked for availability; None: CUDA if present, else CPU."""
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA GPU is available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_threads(workers: int, local_world: int = 1) -> int:
    """Compute threads per process on CPU: the cores left after the data workers (at least one core is left
    for the data pipeline / the rest of the system), shared by the local ranks.

    Oversubscribing cores is very costly for the LSTM kernels (OpenMP barriers): measured on a busy 2-core
    machine, 2 threads took 4.8 s per step where 1 thread took 0.3 s.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(local_world, 1) - max(workers, 1))
