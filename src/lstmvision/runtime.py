"""Runtime choices shared by every command: which device, how many CPU threads, building models by spec."""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.nn as nn

TIMM_PREFIX = "timm:"


def create_timm_model(name: str, num_classes: int | None, in_chans: int | None, img_size: int | None,
                      kwargs: dict[str, Any] | None = None) -> nn.Module:
    """timm model `name` (no download), any input size where the architecture allows; `model_name` is
    'timm:NAME' and `model_kwargs` what rebuilds it."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
    kw: dict[str, Any] = dict(kwargs or {})
    if num_classes is not None:
        kw["num_classes"] = num_classes
    if in_chans is not None:
        kw["in_chans"] = in_chans
    cfg = timm.get_pretrained_cfg(name)
    fixed = bool(getattr(cfg, "fixed_input_size", False)) if cfg is not None else False
    if img_size is not None and fixed:
        kw.setdefault("img_size", img_size)
    try:  # ViT-style models: let them take any input size (position embeddings interpolated)
        model = timm.create_model(name, pretrained=False, dynamic_img_size=True, **kw)
    except TypeError:
        model = timm.create_model(name, pretrained=False, **kw)
    model.model_name = TIMM_PREFIX + name
    model.model_kwargs = {k: v for k, v in kw.items() if k != "num_classes"}
    return model


def resolve_device(name: str | None) -> torch.device:
    """`name` ('cpu', 'cuda', 'cuda:1', ...) checked for availability; None: CUDA if present, else CPU."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"--device {name!r} is not supported: use cpu, cuda or cuda:N")
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


def fit_channels(values: Sequence[float], chans: int) -> tuple[float, ...]:
    """Per-channel normalisation values for a `chans`-channel input: repeated from one value, averaged to one."""
    values = tuple(float(v) for v in values)
    if len(values) == chans:
        return values
    if len(values) == 1:
        return values * chans
    if chans == 1:
        return (sum(values) / len(values),)
    raise ValueError(f"normalisation has {len(values)} values but the model takes {chans} channels")
