"""Host-side Triton helpers shared by the rnn2d and mLSTM kernels: is Triton there, may it run here, and a
loader that imports a kernel module on first use (CPU-only installs never import triton)."""
from __future__ import annotations

import importlib
import os
from typing import Any, Callable

import torch


def triton_available() -> bool:
    try:
        import triton  # noqa: F401, PLC0415 (optional dependency: GPU kernels)
    except Exception:  # pragma: no cover - triton missing or broken
        return False
    return True


def interpret() -> bool:
    """Triton's own switch: kernels run in its Python interpreter (on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def can_run(device: torch.device | str) -> bool:
    """Triton kernels can run on tensors of `device`: CUDA, or CPU under TRITON_INTERPRET=1; Triton importable."""
    dev = torch.device(device)
    return (dev.type == "cuda" or (dev.type == "cpu" and interpret())) and triton_available()


def kernel_loader(module: str, *names: str) -> Callable[[], tuple[Any, ...]]:
    """A function returning (triton, *kernels named `names` in `module`), importing them on its first call."""
    cache: list[tuple[Any, ...]] = []

    def load() -> tuple[Any, ...]:
        if not cache:
            import triton  # noqa: PLC0415 (optional dependency: GPU kernels)

            mod = importlib.import_module(module)
            cache.append((triton, *(getattr(mod, n) for n in names)))
        return cache[0]

    return load
