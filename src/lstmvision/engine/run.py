"""One training run's parts and running state: the distributed environment, the model with its optimizer,
schedule, AMP scaler, EMA and loss (`build_parts`), the epoch's running sums and `Run`, which carries all of it
from step to step."""
from __future__ import annotations

import copy
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn as nn
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from lstmvision.data.images import BadImageCounter
from lstmvision.device import check_amp, resolve_device
from lstmvision.engine.config import check_settings
from lstmvision.tasks import Data, Task, get_task

if TYPE_CHECKING:
    from lstmvision.engine.callbacks import Callback


class TrainingError(ValueError):
    """Training stopped for a reason the user must act on (reported as one line)."""


# ------------------------------------------------------------------------------------- distributed
SHARED_STORE_WARNING = (
    "torchrun restarts these workers (--max-restarts) and shares its rendezvous store with them, where a "
    "restarted group can read the addresses of the killed one and hang while connecting: start torchrun with "
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment and the c10d rendezvous (--standalone, or "
    "--rdzv-backend c10d)")


def shared_store_restarts() -> bool:
    """Whether torchrun may restart this worker group (TORCHELASTIC_MAX_RESTARTS > 0) while the workers use the
    store of its rendezvous (TORCHELASTIC_USE_AGENT_STORE): that store outlives a restart with the keys the
    previous group wrote, and a restarted process group can connect to the addresses of dead processes."""
    try:
        restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    except ValueError:
        restarts = 0
    return restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


class Dist:
    def __init__(self, device_arg: str | None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(device_arg)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", self.local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self.device = device
        if self.world > 1 and not dist.is_initialized():
            if self.rank == 0 and shared_store_restarts():
                warnings.warn(SHARED_STORE_WARNING, stacklevel=2)
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any_true(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks (float64)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64,
                         device=self.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------------------------- logging
class Logger:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        mode = os.environ.get("LSTMVISION_PROGRESS", "auto")  # auto | bar | log
        self.tty = mode == "bar" or (mode == "auto" and sys.stderr.isatty())

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(msg, flush=True)


# ---------------------------------------------------------------------------------------- building
def check_config(cfg: dict[str, Any], device: torch.device) -> None:
    """`config.check_settings` (every range and shape; `train(cfg)` may be called without `resolve_config`) plus
    the combinations that need the device or several settings: one clear error before anything is built."""
    check_settings(cfg)
    check_amp(cfg["amp"], device)
    get_task(cfg.get("task")).check(cfg, device)
    if cfg["resume"] and cfg["pretrained"]:
        raise ValueError("--resume and --pretrained exclude each other: a resumed run restores its own weights")


def resolve_lr(cfg: dict[str, Any], world: int) -> float:
    if cfg["lr"] is not None:
        return float(cfg["lr"])
    global_batch = cfg["batch_size"] * cfg["grad_accum"] * world
    return float(cfg["lr_base"]) * global_batch / float(cfg["lr_base_size"])


def make_run_dir(cfg: dict[str, Any]) -> Path:
    model = cfg["model"].replace(":", "-")  # timm:NAME
    name = cfg["experiment"] or f"{datetime.now():%Y%m%d-%H%M%S}-{model}-{cfg['img_size']}"
    return Path(cfg["output"]) / name


# -------------------------------------------------------------------------------------------- torchelastic
def elastic_restart() -> int:
    """How often torchelastic (`torchrun --max-restarts N`) has restarted the workers of this node: 0 on the first
    attempt and outside torchrun (TORCHELASTIC_RESTART_COUNT). Each node counts its own restarts: a node whose
    workers were stopped because another node's failed does not count it, so ask every rank (`Dist.any_true`)."""
    try:
        return max(0, int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))
    except ValueError:
        return 0


def elastic_marker(output: str | os.PathLike) -> Path | None:
    """Under torchrun, the file in the output folder that names the run folder of this job,
    `.torchelastic-<rendezvous id>` (TORCHELASTIC_RUN_ID, the same on every node and every restart); None outside
    torchrun."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id:
        return None
    return Path(output) / f".torchelastic-{re.sub(r'[^A-Za-z0-9._-]', '_', run_id)[:100]}"


def choose_run_dir(cfg: dict[str, Any], restarted: bool) -> tuple[Path, bool]:
    """Rank 0: the folder of a new run, and whether it is the folder of an earlier attempt of this torchelastic
    job. A `restarted` group (TORCHELASTIC_RESTART_COUNT > 0 on any rank) takes the folder its job's marker
    names; the first attempt names a new folder (`make_run_dir`) and writes it into the marker."""
    marker = elastic_marker(cfg["output"])
    if marker is None:
        return make_run_dir(cfg), False
    if restarted:
        try:
            name = marker.read_text(encoding="utf-8").strip()
        except OSError:
            name = ""
        if name:
            return marker.parent / name, True
    run_dir = make_run_dir(cfg)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f"{marker.name}.tmp{os.getpid()}")
    tmp.write_text(run_dir.name + "\n", encoding="utf-8")
    os.replace(tmp, marker)
    return run_dir, False


def forget_elastic_run(run_dir: Path) -> None:
    """Rank 0, after the run ended well: remove its torchelastic job's marker (when it still names `run_dir`)."""
    marker = elastic_marker(run_dir.parent)
    try:
        if marker is not None and marker.read_text(encoding="utf-8").strip() == run_dir.name:
            marker.unlink()
    except OSError:
        pass


# -------------------------------------------------------------------------------------------- state
@dataclass
class Parts:
    model: nn.Module
    train_model: nn.Module  # compiled and/or DDP-wrapped `model`
    optimizer: Any
    scheduler: Any
    total_epochs: int
    lr: float
    criterion: nn.Module
    scaler: Any = None
    ema: Any = None
    mixup: Any = None


@dataclass
class EpochSums:
    """Running sums of the current epoch (part of every checkpoint, so a resumed epoch reports all of it)."""

    loss_sum: torch.Tensor  # float64 on the device: read only at log intervals
    loss_n: int = 0
    images: int = 0  # over all ranks
    time_before: float = 0.0  # seconds of this epoch spent before the current process resumed it
    started: float = field(default_factory=time.time)
    bad_step: torch.Tensor | None = None  # first step of the epoch with a non-finite loss (-1: none)
    bad_loss: torch.Tensor | None = None

    @classmethod
    def zero(cls, device: torch.device) -> "EpochSums":
        return cls(loss_sum=torch.zeros((), dtype=torch.float64, device=device),
                   bad_step=torch.full((), -1, dtype=torch.int64, device=device),
                   bad_loss=torch.zeros((), device=device))

    def elapsed(self) -> float:
        return self.time_before + time.time() - self.started


@dataclass
class Run:
    """Everything one training run carries from step to step."""

    cfg: dict[str, Any]
    task: Task
    env: Dist
    log: Logger
    callbacks: list[Callback]
    data: Data
    parts: Parts
    run_dir: Path
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    sums: EpochSums | None = None
    probe: torch.Tensor | None = None  # the last training batch, to check the weights' outputs before a save
    pending_rng: dict[str, Any] | None = None  # restored RNG state, applied where the run saved it
    update_at_step: dict[int, int] = field(default_factory=dict)  # step in epoch → its global step
    writer: Any = None
    bar: Any = None
    bad: BadImageCounter | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    @property
    def model(self) -> nn.Module:
        return self.parts.model

    @property
    def device(self) -> torch.device:
        return self.env.device

    def emit(self, event: str, *args: Any) -> Any:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)


# ------------------------------------------------------------------------------------------ building
def prepare_config(cfg: dict[str, Any], env: Dist) -> dict[str, Any]:
    """A private copy of `cfg` with the settings the run derives (checked first)."""
    cfg = copy.deepcopy({k: v for k, v in cfg.items() if not k.startswith("_")})
    check_config(cfg, env.device)
    return cfg


def build_parts(cfg: dict[str, Any], task: Task, data: Data, env: Dist) -> Parts:
    """Model, optimizer, schedule, AMP scaler, EMA, Mixup and loss; sets cfg['lr_resolved']."""
    device = env.device
    model = task.build_model(cfg, data).to(device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    lr = cfg["lr_resolved"] = resolve_lr(cfg, env.world)
    adam_like = cfg["opt"] in ("adamw", "adam", "nadamw", "lamb")
    optimizer = create_optimizer_v2(model, opt=cfg["opt"], lr=lr, weight_decay=cfg["weight_decay"],
                                    layer_decay=cfg["layer_decay"], momentum=cfg["momentum"],
                                    **({"eps": cfg["opt_eps"], "betas": tuple(cfg["opt_betas"])} if adam_like else {}))
    updates_per_epoch = max(1, math.ceil(data.steps_per_epoch / cfg["grad_accum"]))
    scheduler, total_epochs = create_scheduler_v2(
        optimizer, sched=cfg["sched"], num_epochs=cfg["epochs"], warmup_epochs=cfg["warmup_epochs"],
        warmup_lr=cfg["warmup_lr"], min_lr=cfg["min_lr"], cooldown_epochs=cfg["cooldown_epochs"],
        decay_milestones=list(cfg["decay_milestones"]), decay_rate=cfg["decay_rate"],
        step_on_epochs=False, updates_per_epoch=updates_per_epoch,
    )
    scaler = torch.amp.GradScaler(device.type) if cfg["amp"] == "fp16" else None
    ema = ModelEmaV3(model, decay=cfg["ema_decay"]) if cfg["ema"] else None
    criterion, mixup = task.build_loss(cfg, data)
    return Parts(model, model, optimizer, scheduler, total_epochs, lr, criterion, scaler, ema, mixup)


def wrap_for_training(parts: Parts, cfg: dict[str, Any], env: Dist) -> None:
    train_model: nn.Module = parts.model
    if cfg["compile"]:
        train_model = torch.compile(train_model)
    if env.world > 1:
        device = env.device
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)
    parts.train_model = train_model
