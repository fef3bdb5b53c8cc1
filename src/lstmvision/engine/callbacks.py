"""Training callbacks: hooks the trainer calls at fixed points, so that tests and tools can observe or perturb a
run without flags read inside the training loop.

`train(cfg, callbacks=[...])` calls, on every rank: `on_loss(run, loss) -> loss` before each backward,
`on_step_end(run, images)` after each batch, `on_checkpoint(run, phase)` at each phase of a checkpoint commit
(`stage:best`, `stage:last`, `swap:last`, `publish:last`, `swap:best`, `publish:best`, `summary`; `publish:last`
is the commit point of an epoch), `on_epoch_end(run, row)` after an epoch is committed, and `on_train_end(run)`.
`run` is the trainer's `Run` state (epoch, step_in_epoch, global_step, model, env, ...).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from lstmvision.engine.run import Run


class Callback:
    """No-op base: override the events you need."""

    def on_loss(self, run: "Run", loss: torch.Tensor) -> torch.Tensor:
        return loss

    def on_step_end(self, run: "Run", images: int) -> None:
        pass

    def on_checkpoint(self, run: "Run", phase: str) -> None:
        pass

    def on_epoch_end(self, run: "Run", row: dict[str, Any]) -> None:
        pass

    def on_train_end(self, run: "Run") -> None:
        pass


class NanAtStep(Callback):
    """Make the loss NaN from optimizer update `step` (1-based global step) on: tests the non-finite-loss stop."""

    def __init__(self, step: int):
        self.step = int(step)

    def on_loss(self, run: "Run", loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if run.global_step + 1 >= self.step else loss


class StepDelay(Callback):
    """Sleep after every batch (gives a test time to kill the process at a chosen point)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)

    def on_step_end(self, run: "Run", images: int) -> None:
        time.sleep(self.seconds)


class RankDump(Callback):
    """Write what this rank ended with (steps, samples seen, a parameter digest) to `folder/rank<r>.json`."""

    def __init__(self, folder: str | Path):
        self.folder, self.samples = Path(folder), 0

    def on_step_end(self, run: "Run", images: int) -> None:
        self.samples += images

    def on_train_end(self, run: "Run") -> None:
        flat = torch.cat([p.detach().flatten().double().cpu() for p in run.model.parameters()])
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{run.env.rank}.json").write_text(json.dumps(dict(
            rank=run.env.rank, world=run.env.world, global_step=run.global_step, samples=self.samples,
            param_sum=flat.sum().item(), param_abs_sum=flat.abs().sum().item(), first=flat[:16].tolist())))


def debug_callbacks(cfg: dict[str, Any]) -> list[Callback]:
    """The callbacks asked for by the hidden `--debug-*` flags of `lstmvision train` (cfg keys `_debug_*`)."""
    out: list[Callback] = []
    if cfg.get("_debug_nan_at_step") is not None:
        out.append(NanAtStep(cfg["_debug_nan_at_step"]))
    if cfg.get("_debug_step_delay"):
        out.append(StepDelay(cfg["_debug_step_delay"]))
    if cfg.get("_debug_rank_dir"):
        out.append(RankDump(cfg["_debug_rank_dir"]))
    return out
