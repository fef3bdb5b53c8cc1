"""Evaluation: loss, top-1 and top-5 over a loader, exact across distributed ranks."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.utils import accuracy

from lstmvision.data import BadImageCounter, DataError


def autocast_context(device: torch.device, amp: str):
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


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device, amp: str = "none",
             channels_last: bool = False, bad: BadImageCounter | None = None) -> dict[str, Any]:
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top1 correct, top5 correct, count
    bad = bad or BadImageCounter()
    for x, y, skipped in loader:
        bad(skipped)
        if x is None:
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, amp):
            out = model(x)
        out = out.float()
        k = min(5, out.shape[1])
        top1, top5 = accuracy(out, y, topk=(1, k))
        n = y.shape[0]
        sums += torch.tensor([F.cross_entropy(out, y, reduction="sum").item(), top1.item() * n / 100,
                              top5.item() * n / 100, n], dtype=torch.float64)
    sums = sum_over_ranks(sums, device)
    model.train(was_training)
    if sums[3].item() == 0:
        raise DataError(f"no readable images in {data_source(loader.dataset)} (every evaluation image was skipped)")
    n = sums[3].item()
    return dict(loss=sums[0].item() / n, top1=100 * sums[1].item() / n, top5=100 * sums[2].item() / n,
                count=int(sums[3].item()), skipped=bad.count)


def data_source(dataset) -> str:
    """Where a (possibly subset) dataset reads from, for messages."""
    while hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    root = getattr(dataset, "root", None)
    return str(root) if root is not None else "the evaluation data"
