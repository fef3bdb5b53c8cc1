"""The training loop: timm data pipeline, optimizer / scheduler factories, Mixup/CutMix, EMA, AMP, DDP.

`train(cfg, callbacks)` takes a resolved config dict (see `recipes.DEFAULTS`; it is not modified) and returns
the final metrics. Only rank 0 logs and writes; all ranks step in lockstep (DDP all-reduces gradients; the
non-finite checks are reduced too, so every rank stops at the same step).

The loop does not synchronise with the device at every step: the loss is summed on the device and read (and
checked for NaN/inf) at log intervals and before every checkpoint. A checkpoint is only written when the loss
so far, the weights and the optimizer state are finite, so `last/` is always a good point to resume from.
Resuming restores the epoch's running sums, so a resumed run on CPU (``--workers 0``) reproduces the
uninterrupted run exactly (weights and summary rows; only the img_s timing differs). With data-loader worker
processes it cannot: their random streams (augmentation) live in the workers, which are seeded once when they
start and are not part of a checkpoint.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import yaml

from lstmvision.data import BadImageCounter, DataError
from lstmvision.engine import checkpoint as ckpt
from lstmvision.engine.callbacks import Callback
from lstmvision.engine.checkpoint import load_state, rng_state, set_rng_state
from lstmvision.engine.config import check_settings
from lstmvision.engine.evaluate import autocast_context
from lstmvision.engine.tasks import Data, Task, get_task
from lstmvision.runtime import cpu_threads, find_checkpoint, resolve_device
from lstmvision.weights import atomic_write

def summary_fields(task: Task) -> list[str]:
    return ["epoch", "train_loss", "val_loss", *task.metrics, "lr", "img_s"]


class TrainingError(ValueError):
    """Training stopped for a reason the user must act on (reported as one line)."""


# ------------------------------------------------------------------------------------- distributed
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


def write_file(path: Path, write) -> None:
    """`atomic_write`, with a failed write (full disk, ...) as one TrainingError line."""
    try:
        atomic_write(path, write)
    except OSError as e:
        raise TrainingError(f"could not write {path} ({e.strerror or e})") from None


def write_summary(run_dir: Path, rows: list[dict[str, Any]], task: Task) -> None:
    fields = summary_fields(task)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in fields})
    write_file(run_dir / "summary.csv", lambda p: Path(p).write_text(buf.getvalue()))


def read_summary(run_dir: Path) -> list[dict[str, Any]]:
    f = run_dir / "summary.csv"
    if not f.is_file():
        return []
    with open(f) as fh:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in csv.DictReader(fh)]


def plot_curves(run_dir: Path, rows: list[dict[str, Any]], task: Task) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    a.plot(ep, [r["val_loss"] for r in rows], "o-", label="val")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    for key in task.metrics:
        b.plot(ep, [r[key] for r in rows], "o-", label=key)
    b.set_xlabel("epoch"), b.set_ylabel("validation (%)"), b.legend(), b.grid(alpha=0.3)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    write_file(run_dir / "curves.png", lambda p: fig.savefig(p, format="png", dpi=80))
    plt.close(fig)


# ---------------------------------------------------------------------------------------- building
def check_config(cfg: dict[str, Any], device: torch.device) -> None:
    """`config.check_settings` (every range and shape; `train(cfg)` may be called without `resolve_config`) plus
    the combinations that need the device or several settings: one clear error before anything is built."""
    check_settings(cfg)
    if cfg["amp"] == "fp16" and device.type == "cpu":
        raise ValueError("--amp fp16 needs a CUDA GPU; use --amp bf16 or --amp none on CPU")
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
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

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


# -------------------------------------------------------------------------------------------- resume
def open_resume(cfg: dict[str, Any], env: Dist) -> tuple[Path, dict[str, Any]]:
    """The checkpoint folder to resume from (after finishing an interrupted commit) and its state."""
    folder = find_checkpoint(cfg["resume"])
    if env.main:
        ckpt.recover(folder.parent)
    env.barrier()
    folder = find_checkpoint(cfg["resume"])
    state = load_state(folder)
    saved_model = state.get("model_name")
    if saved_model and saved_model != cfg["model"]:
        raise ValueError(f"{folder} is a checkpoint of {saved_model!r}, not {cfg['model']!r}")
    return folder, state


def check_same_data(state: dict[str, Any], data: Data, cfg: dict[str, Any], folder: Path) -> None:
    """A resumed run must go on with the data (classes, channels) it was trained on."""
    where = f"resume data {cfg['data'] or 'default (Fashion-MNIST)'}"
    names = state.get("class_names")
    if names is not None and list(names) != data.class_names:
        raise TrainingError(
            f"--resume {folder}: the run was trained on {len(names)} classes ({', '.join(names[:4])}...) but the "
            f"{where} has {len(data.class_names)} ({', '.join(data.class_names[:4])}...); resume with the run's data")
    for key, have, what in (("in_chans", data.in_chans, "model input channels"),
                            ("data_chans", data.data_chans, "image channels")):
        saved = state.get(key)
        if saved is not None and int(saved) != have:
            raise TrainingError(f"--resume {folder}: the run was trained with {saved} {what}, the {where} gives "
                                f"{have}; resume with the run's data and --in-chans")


def restore(run: Run, folder: Path, state: dict[str, Any]) -> None:
    from lstmvision.weights import load_pretrained

    p = run.parts
    load_pretrained(p.model, folder)
    p.optimizer.load_state_dict(state["optimizer"])
    p.scheduler.load_state_dict(state["scheduler"])
    if p.scaler is not None and state.get("scaler"):
        p.scaler.load_state_dict(state["scaler"])
    if p.ema is not None and state.get("ema"):
        p.ema.load_state_dict(state["ema"])
    run.epoch, run.step_in_epoch = state["epoch"], state["step_in_epoch"]
    run.global_step, run.best = state["global_step"], state.get("best")
    rank = str(run.env.rank)
    if state.get("world_size", 1) == run.env.world and state.get("rng", {}).get(rank):
        run.pending_rng = state["rng"][rank]
    if "rows" in state:
        run.rows = [dict(r) for r in state["rows"]]
    else:  # a checkpoint from before summary rows were part of the state
        run.rows = [r for r in read_summary(run.run_dir) if r["epoch"] < run.epoch]
    sums = EpochSums.zero(run.device)
    saved = state.get("epoch_sums")
    if saved and run.step_in_epoch > 0:
        if run.env.main:  # saved sums cover every rank; the other ranks add their own from here on
            sums.loss_sum += float(saved["loss_sum"])
            sums.loss_n = int(saved["loss_n"])
        sums.images, sums.time_before = int(saved["images"]), float(saved["time"])
    run.sums = sums
    if run.step_in_epoch >= run.data.steps_per_epoch:
        run.epoch, run.step_in_epoch, run.sums = run.epoch + 1, 0, EpochSums.zero(run.device)


# ---------------------------------------------------------------------------------------- checkpoints
def make_state(run: Run) -> dict[str, Any]:
    """The resumable state at this point (collective in DDP: every rank calls it)."""
    env, p, sums = run.env, run.parts, run.sums
    rng = {str(env.rank): rng_state()}
    loss_sum, loss_n = sums.loss_sum.item(), sums.loss_n
    if env.world > 1:
        buf = io.BytesIO()  # RNG states as bytes: tensors do not travel well as objects
        torch.save(rng, buf)
        gathered: list[Any] = [None] * env.world
        dist.all_gather_object(gathered, buf.getvalue())
        rng = {}
        for blob in gathered:
            rng.update(torch.load(io.BytesIO(blob), weights_only=True))
        loss_sum, loss_n = env.all_sum([loss_sum, loss_n])
    return dict(
        epoch=run.epoch, step_in_epoch=run.step_in_epoch, global_step=run.global_step,
        steps_per_epoch=run.data.steps_per_epoch, optimizer=p.optimizer.state_dict(),
        scheduler=p.scheduler.state_dict(), scaler=p.scaler.state_dict() if p.scaler is not None else {},
        ema=p.ema.state_dict() if p.ema is not None else {}, best=run.best, rng=rng, world_size=env.world,
        class_names=run.data.class_names, in_chans=run.data.in_chans, data_chans=run.data.data_chans,
        model_name=run.cfg["model"], lr=p.optimizer.param_groups[0]["lr"], rows=[dict(r) for r in run.rows],
        epoch_sums=dict(loss_sum=loss_sum, loss_n=int(loss_n), images=sums.images, time=sums.elapsed()),
    )


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    floats = [t for t in tensors if t.is_floating_point() and t.numel()]
    return bool(torch.stack([torch.isfinite(t).all() for t in floats]).all().item()) if floats else True


def state_is_finite(run: Run) -> bool:
    """Weights, optimizer state and EMA finite, and the weights give finite outputs on the last batch (finite but
    huge weights can already overflow to NaN inside the network)."""
    p = run.parts
    tensors = list(p.model.parameters()) + list(p.model.buffers())
    tensors += [v for s in p.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    if p.ema is not None:
        tensors += list(p.ema.module.parameters())
    if run.probe is not None:
        with torch.no_grad(), autocast_context(run.device, run.cfg["amp"]):
            was_training = p.model.training
            p.model.eval()  # no dropout / drop-path: the probe draws no random numbers
            tensors.append(p.model(run.probe).float())
            p.model.train(was_training)
    return _all_finite([t.detach() for t in tensors])


def _kept(run: Run) -> str:
    last = run.run_dir / "last"
    return f"the last good checkpoint is {last}" if last.exists() else "no checkpoint had been saved yet"


def check_loss(run: Run) -> float:
    """Read the epoch's mean loss so far (one host sync); stop if any loss so far was not finite."""
    sums = run.sums
    loss_sum, bad_step = torch.stack([sums.loss_sum, sums.bad_step.double()]).tolist()
    if run.env.any_true(bad_step >= 0):
        if bad_step >= 0:
            step = int(bad_step)
            where = (f"became {sums.bad_loss.item()} at epoch {run.epoch} step {step} "
                     f"(global step {run.update_at_step.get(step, '?')})")
        else:
            where = f"became non-finite on another rank in epoch {run.epoch}"
        raise TrainingError(f"loss {where}; training stopped, {_kept(run)}. "
                            "Lower --lr, add --clip-grad, or use --amp none")
    run.update_at_step.clear()
    return loss_sum / max(sums.loss_n, 1)


def checked_state(run: Run) -> dict[str, Any]:
    """The state to save, after making sure that nothing non-finite is saved (collective in DDP)."""
    check_loss(run)
    if run.env.any_true(not state_is_finite(run)):
        raise TrainingError(f"the weights became non-finite (or give non-finite outputs) by epoch {run.epoch} step "
                            f"{run.step_in_epoch} (global step {run.global_step}); training stopped, {_kept(run)}. "
                            "Lower --lr, add --clip-grad, or use --amp none")
    return make_state(run)


def _stage(run: Run, name: str, state: dict[str, Any]) -> None:
    if run.env.main:
        ckpt.stage(run.run_dir, name, run.model, state, run.data.class_names)
    run.emit("on_checkpoint", f"stage:{name}")


def _publish(run: Run, name: str) -> None:
    if run.env.main:
        path = ckpt.publish(run.run_dir, name, on_phase=lambda phase: run.emit("on_checkpoint", phase))
        at = (f"end of epoch {run.epoch - 1}" if run.step_in_epoch == 0
              else f"epoch {run.epoch} step {run.step_in_epoch}")
        run.log(f"train: saved checkpoint {path} ({at}, global step {run.global_step})")
    run.emit("on_checkpoint", f"publish:{name}")


def save_mid_epoch(run: Run) -> None:
    state = checked_state(run)
    _stage(run, "last", state)
    _publish(run, "last")
    run.env.barrier()


def commit_epoch(run: Run, row: dict[str, Any], is_best: bool) -> None:
    """End of an epoch as one commit: stage best/ and last/, publish last/ (the commit), then best/, then the
    summary. A crash anywhere is finished or rolled back by `checkpoint.recover` on resume."""
    run.rows.append(row)
    state = checked_state(run)
    if is_best:
        _stage(run, "best", state)
    _stage(run, "last", state)
    _publish(run, "last")
    if is_best:
        _publish(run, "best")
    if run.env.main:
        write_summary(run.run_dir, run.rows, run.task)
        plot_curves(run.run_dir, run.rows, run.task)
    run.emit("on_checkpoint", "summary")
    run.env.barrier()


# ------------------------------------------------------------------------------------------ training
def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, i: int, step: int) -> bool:
    """One batch: forward, backward and (at the end of an accumulation) the update. True after an update."""
    cfg, p, device = run.cfg, run.parts, run.device
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    n = y.shape[0]
    if p.mixup is not None:
        x, y = p.mixup(x, y)
    if cfg["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast_context(device, cfg["amp"]):
        out = p.train_model(x)
        loss = p.criterion(_as_float(out), y)
    for cb in run.callbacks:
        loss = cb.on_loss(run, loss)
    track_loss(run, loss.detach(), n, step)
    accum_last = (i + 1) % cfg["grad_accum"] == 0 or step == run.data.steps_per_epoch
    sync = run.env.world == 1 or accum_last
    with (contextlib.nullcontext() if sync else p.train_model.no_sync()):
        scaled = loss / cfg["grad_accum"]
        (p.scaler.scale(scaled) if p.scaler is not None else scaled).backward()
    if accum_last:
        optimizer_step(run)
    run.sums.images += x.shape[0] * run.env.world
    run.probe = x
    run.emit("on_step_end", x.shape[0])
    return accum_last


def _as_float(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def track_loss(run: Run, loss: torch.Tensor, n: int, step: int) -> None:
    """Add the batch loss to the epoch sums on the device (no host sync); remember the first non-finite one."""
    sums = run.sums
    sums.loss_sum += loss.double() * n
    sums.loss_n += n
    first_bad = ~torch.isfinite(loss) & (sums.bad_step < 0)
    sums.bad_step = torch.where(first_bad, step, sums.bad_step)
    sums.bad_loss = torch.where(first_bad, loss, sums.bad_loss)
    run.update_at_step[step] = run.global_step + 1


def optimizer_step(run: Run) -> None:
    cfg, p = run.cfg, run.parts
    if p.scaler is not None:
        if cfg["clip_grad"]:
            p.scaler.unscale_(p.optimizer)
            nn.utils.clip_grad_norm_(p.model.parameters(), cfg["clip_grad"])
        p.scaler.step(p.optimizer)
        p.scaler.update()
    else:
        if cfg["clip_grad"]:
            nn.utils.clip_grad_norm_(p.model.parameters(), cfg["clip_grad"])
        p.optimizer.step()
    p.optimizer.zero_grad(set_to_none=True)
    run.global_step += 1
    p.scheduler.step_update(run.global_step)
    if p.ema is not None:
        p.ema.update(p.model, step=run.global_step)


def report_progress(run: Run, step: int, first_step: int) -> None:
    """Log line / progress bar / TensorBoard at log intervals (the one host sync of the loop)."""
    steps, bar = run.data.steps_per_epoch, run.bar
    if bar is not None:
        bar.update(1)
    if not (step % run.cfg["log_interval"] == 0 or step == steps):
        return
    loss = check_loss(run)
    lr = run.parts.optimizer.param_groups[0]["lr"]
    ips = run.sums.images / max(run.sums.elapsed(), 1e-9)
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{ips:.0f}")
    elif run.env.main:
        done = step - first_step
        eta = (time.time() - run.sums.started) / max(done, 1) * (steps - step)
        run.log(f"epoch {run.epoch} [{step}/{steps}] loss {loss:.4f} lr {lr:.3e} {ips:.0f} img/s eta {eta:.0f}s")
    if run.writer is not None:
        run.writer.add_scalar("train/loss", loss, run.global_step)
        run.writer.add_scalar("train/lr", lr, run.global_step)


def train_epoch(run: Run) -> None:
    """The rest of epoch `run.epoch` from `run.step_in_epoch` on."""
    cfg, data = run.cfg, run.data
    run.parts.train_model.train()
    sampler = data.train_loader.sampler
    sampler.set_epoch(run.epoch)
    sampler.skip_samples = run.step_in_epoch * cfg["batch_size"]
    first_step = run.step_in_epoch
    # the RNG state was saved at an epoch boundary (before the loader draws its seed) or mid-epoch (after)
    if run.pending_rng is not None and first_step == 0:
        set_rng_state(run.pending_rng)
        run.pending_rng = None
    batches = iter(data.train_loader)
    if run.pending_rng is not None:
        set_rng_state(run.pending_rng)
        run.pending_rng = None
    run.sums.started = time.time()
    run.bar = progress_bar(run, first_step)
    run.parts.optimizer.zero_grad(set_to_none=True)
    for i, (x, y, skipped) in enumerate(batches):
        run.bad(skipped)
        step = first_step + i + 1
        if x is None:
            continue
        updated = train_step(run, x, y, i, step)
        run.step_in_epoch = step
        report_progress(run, step, first_step)
        every = cfg["checkpoint_steps"]
        if every and step % every == 0 and step < data.steps_per_epoch and updated:
            save_mid_epoch(run)
    if run.bar is not None:
        run.bar.close()
        run.bar = None
    if run.env.all_sum([run.sums.loss_n])[0] == 0:
        raise DataError(f"no readable images in {data_source(cfg)} (every training image was skipped)")


def progress_bar(run: Run, first_step: int) -> Any:
    if not (run.env.main and run.log.tty):
        return None
    from tqdm import tqdm

    return tqdm(total=run.data.steps_per_epoch, initial=first_step, desc=f"epoch {run.epoch}", unit="it",
                dynamic_ncols=True, leave=False, mininterval=0.5)


def data_source(cfg: dict[str, Any]) -> str:
    from lstmvision.data import default_data_root

    return str(cfg["data"] or default_data_root())


def evaluate_epoch(run: Run) -> dict[str, Any]:
    """Validation metrics and the summary row of the epoch just trained."""
    cfg, p, sums = run.cfg, run.parts, run.sums
    loss_sum, loss_n = sums.loss_sum.item(), sums.loss_n
    if run.env.world > 1:
        loss_sum, loss_n = run.env.all_sum([loss_sum, loss_n])
    train_time = sums.elapsed()
    ips = sums.images / max(train_time, 1e-9)
    loader, device = run.data.val_loader, run.device
    task = run.task
    metrics = task.evaluate(p.model, loader, device, cfg, run.bad)
    if p.ema is not None and cfg["eval_ema"]:
        metrics[f"ema_{task.score}"] = task.evaluate(p.ema.module, loader, device, cfg, run.bad)[task.score]
    metrics["train_time"] = train_time
    run.metrics = metrics
    lr = p.optimizer.param_groups[0]["lr"]
    return dict(epoch=run.epoch, train_loss=round(loss_sum / max(loss_n, 1), 6), val_loss=round(metrics["loss"], 6),
                **{k: round(metrics[k], 4) for k in task.metrics}, lr=lr, img_s=round(ips, 1))


def log_epoch(run: Run, row: dict[str, Any], t_start: float) -> None:
    if not run.env.main:
        return
    task = run.task
    for k in ("train_loss", "val_loss", *task.metrics, "img_s"):
        run.writer.add_scalar(f"epoch/{k}", row[k], row["epoch"])
    run.writer.flush()
    m = run.metrics
    ema = f"ema_{task.score}"
    extra = f" {ema} {m[ema]:.2f}" if ema in m else ""
    scores = " ".join(f"{k} {row[k]:.2f}" for k in task.metrics)
    run.log(f"epoch {row['epoch']}: train_loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
            f"{scores}{extra} lr {row['lr']:.3e} {row['img_s']:.0f} img/s "
            f"({m['train_time']:.0f}s train, {time.time() - t_start:.0f}s total)")


def finish_epoch(run: Run, t_start: float) -> None:
    """Evaluate, step the epoch schedule and commit the epoch (checkpoints + summary row)."""
    row = evaluate_epoch(run)
    key = run.task.score
    score = run.metrics[key]
    run.parts.scheduler.step(run.epoch + 1, score)
    is_best = run.best is None or score > run.best[key]
    if is_best:
        run.best = dict(epoch=run.epoch, **{k: run.metrics[k] for k in run.task.metrics}, loss=run.metrics["loss"])
    check_loss(run)
    run.epoch, run.step_in_epoch, run.sums = run.epoch + 1, 0, EpochSums.zero(run.device)
    commit_epoch(run, row, is_best)
    log_epoch(run, row, t_start)
    run.emit("on_epoch_end", row)


# ------------------------------------------------------------------------------------------- train
def train(cfg: dict[str, Any], callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train by the resolved config `cfg` (not modified); `callbacks` see `lstmvision.engine.callbacks`."""
    env = Dist(cfg["device"])
    try:
        run = setup(prepare_config(cfg, env), env, list(callbacks))
        try:
            return fit(run)
        finally:
            run.close()
    finally:
        env.close()


def setup(cfg: dict[str, Any], env: Dist, callbacks: list[Callback]) -> Run:
    from timm.utils import random_seed

    if env.device.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(cfg.get("threads") or cpu_threads(int(cfg["workers"] or 0), local_world))
    resume_from, state = open_resume(cfg, env) if cfg["resume"] else (None, None)
    random_seed(cfg["seed"], env.rank)
    task = get_task(cfg.get("task"))
    data = task.build_data(cfg, env.world, env.rank, pin_memory=env.device.type == "cuda")
    if state is not None:
        check_same_data(state, data, cfg, resume_from)
    parts = build_parts(cfg, task, data, env)
    run_dir = resume_from.parent if resume_from is not None else new_run_dir(cfg, env)
    run = Run(cfg, task, env, Logger(env.main), callbacks, data, parts, run_dir, sums=EpochSums.zero(env.device),
              bad=BadImageCounter(strict=cfg["strict_images"], verbose=env.main))
    if state is not None:
        restore(run, resume_from, state)
    wrap_for_training(parts, cfg, env)
    if env.main:
        open_run_folder(run, resumed=state is not None)
    n_params = sum(p.numel() for p in parts.model.parameters())
    run.log(f"train: {cfg['model']} ({n_params / 1e6:.2f}M params, in_chans {data.in_chans}, {data.num_classes} "
            f"classes) on {data.n_train} train / {data.n_val} val images, {cfg['img_size']}px, device {env.device}, "
            f"{torch.get_num_threads()} threads, world {env.world}, batch {cfg['batch_size']}x{cfg['grad_accum']}x"
            f"{env.world}, lr {parts.lr:.3g}, {parts.total_epochs} epochs; run folder {run_dir}")
    if state is not None:
        run.log(f"train: resumed from {resume_from} at epoch {state['epoch']} step {state['step_in_epoch']} "
                f"(global step {run.global_step}, lr {parts.optimizer.param_groups[0]['lr']:.6g})")
    return run


def new_run_dir(cfg: dict[str, Any], env: Dist) -> Path:
    run_dir = env.broadcast(make_run_dir(cfg) if env.main else None)
    if env.broadcast(env.main and (run_dir / "last").exists()):
        raise ValueError(f"{run_dir} already holds a run; pass --resume {run_dir} or another --experiment")
    return run_dir


def open_run_folder(run: Run, resumed: bool) -> None:
    """Rank 0: the run's config.yaml, its summary (rebuilt from the checkpoint on resume), TensorBoard."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir, data = run.run_dir, run.data
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = dict(run.cfg, run_dir=str(run_dir), world_size=run.env.world, in_chans=data.in_chans,
                 num_classes=data.num_classes)
    write_file(run_dir / "config.yaml", lambda p: Path(p).write_text(yaml.safe_dump(saved, sort_keys=True)))
    if resumed:
        write_summary(run_dir, run.rows, run.task)
    run.writer = SummaryWriter(str(run_dir / "tb"), purge_step=run.global_step if resumed else None)


def fit(run: Run) -> dict[str, Any]:
    t_start = time.time()
    for _ in range(run.epoch, run.parts.total_epochs):
        train_epoch(run)
        finish_epoch(run, t_start)
    run.emit("on_train_end")
    if run.bad.count:
        run.log(f"train: skipped {run.bad.count} unreadable images")
    m = run.metrics
    return dict(run_dir=str(run.run_dir), epochs=run.parts.total_epochs, global_step=run.global_step, best=run.best,
                final=dict({k: m.get(k) for k in run.task.metrics}, loss=m.get("loss")),
                time_s=round(time.time() - t_start, 1), skipped_images=run.bad.count, rank=run.env.rank)
