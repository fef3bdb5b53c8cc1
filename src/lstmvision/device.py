"""Where and how computation runs: the device and its CPU threads, mixed precision, timing steps, summing over
distributed ranks. A leaf: imports nothing of lstmvision."""
from __future__ import annotations

import contextlib
import os
import platform
import time
from importlib import metadata
from typing import Any, Callable

import torch
import torch.distributed as dist


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


def choose_device(name: str | None, workers: int = 0) -> torch.device:
    """`resolve_device(name)`; on CPU also the thread count `cpu_threads(workers)` (oversubscription is very slow
    for the LSTM kernels)."""
    device = resolve_device(name)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(workers))
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], Any], iters: int, device: torch.device, warmup: int = 0) -> float:
    """Seconds taken by `iters` calls of `step`, after `warmup` untimed calls; synchronised on CUDA before and
    after the timed calls so that queued work is counted."""
    for _ in range(warmup):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize(device)
    return time.perf_counter() - t0


def check_amp(amp: str, device: torch.device) -> None:
    """Refuse mixed precision the device cannot run (fp16 autocast needs CUDA)."""
    if amp == "fp16" and device.type == "cpu":
        raise ValueError("--amp fp16 needs a CUDA GPU; use --amp bf16 or --amp none on CPU")


def autocast_context(device: torch.device, amp: str):
    """autocast to bf16/fp16 on `device` ('none': a no-op context)."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def sum_over_ranks(sums: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`sums` (a CPU tensor) added up over the distributed ranks, if any."""
    if not (dist.is_available() and dist.is_initialized()):
        return sums
    t = sums.to(device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.cpu()


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model with its core and torch thread counts (for reports)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"


def versions() -> dict[str, str | None]:
    """Python, torch (and its CUDA), and the installed versions of the libraries results depend on (None:
    missing), for the JSON every benchmark and check writes."""
    out: dict[str, str | None] = dict(python=platform.python_version(), torch=torch.__version__,
                                      cuda=torch.version.cuda)
    for name in ("timm", "triton", "flashrnn", "mlstm_kernels", "lstmvision"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
