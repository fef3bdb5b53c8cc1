"""Multiply-accumulate (MAC) counting that includes recurrent layers.

`torch.utils.flop_counter` counts matmuls and convolutions but not `nn.LSTM`/`nn.GRU`/`nn.RNN` (their fused
kernels have no FLOP formula), which under-counts Sequencer by ~40%. Recurrent layers are therefore counted
analytically from forward hooks: per direction and time step, `gates * hidden * (input + hidden)` MACs.
Papers report MACs and call them FLOPs; so do we (MACs = FLOPs / 2).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from lstmvision.layers.rnn import RNN_GATES, is_rnn
from lstmvision.models.registry import (
    build_model,
    get_pretrained_cfg,  # noqa: I001
)
from lstmvision.ops.dispatch import use_backend


def rnn_macs(module: nn.RNNBase, batch: int, steps: int) -> int:
    """MACs of the input and recurrent projections of an nn.LSTM/GRU/RNN over `batch` sequences."""
    gates = RNN_GATES[module.mode]
    dirs = 2 if module.bidirectional else 1
    total, in_size = 0, module.input_size
    for _ in range(module.num_layers):
        total += dirs * gates * module.hidden_size * (in_size + module.hidden_size) * batch * steps
        in_size = module.hidden_size * dirs
    return total


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224), batch: int = 1) -> dict[str, int]:
    """MACs of one forward pass per image: {'total', 'rnn', 'other'} (integers)."""
    rnn_total = 0

    def hook(module, args, output):
        nonlocal rnn_total
        x = args[0]
        b, t = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
        rnn_total += rnn_macs(module, b, t)

    handles = [m.register_forward_hook(hook) for m in model.modules() if is_rnn(m)]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = torch.zeros(batch, *input_size, device=param.device, dtype=param.dtype)
        # the module path, so that the hooks see every recurrence whatever backend would run otherwise
        with use_backend(rnn2d="module"), FlopCounterMode(display=False) as counter:
            model(x)
        # Some RNN kernels (GRU/RNN on CPU) decompose into matmuls the counter sees: drop those, the
        # analytic count above replaces them.
        root = type(model).__name__
        inside = counter.get_flop_counts()
        rnn_names = {f"{root}.{n}" for n, m in model.named_modules() if is_rnn(m)}
        seen_in_rnn = sum(sum(inside[n].values()) for n in rnn_names if n in inside)
        other = (counter.get_total_flops() - seen_in_rnn) // 2
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return dict(total=(other + rnn_total) // batch, rnn=rnn_total // batch, other=other // batch)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_rows(names: list[str], img_size: int | None = None, macs: bool = True) -> list[dict]:
    """Per registered model: parameters, input size, paper top-1 and (with `macs`) GMACs at `img_size` (default:
    each model's own)."""

    rows = []
    for name in tqdm(names, desc="measuring", disable=len(names) < 3, leave=False):
        cfg = get_pretrained_cfg(name)
        size = img_size or cfg["input_size"][-1]
        model = build_model(name)
        row = dict(model=name, params=count_params(model), img_size=size, paper_top1=cfg.get("paper_top1"))
        if macs:
            row["gmacs"] = round(count_macs(model, (cfg["input_size"][0], size, size))["total"] / 1e9, 2)
        rows.append(row)
    return rows
