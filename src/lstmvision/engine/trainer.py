"""The training loop: the steps, the epochs, checkpoints and progress, around the run that `engine.run` builds
(the task's data and model, timm's optimizer, scheduler, Mixup/CutMix and EMA, AMP, DDP).

`train(cfg, callbacks)` takes a resolved config dict (see `recipes.DEFAULTS`; it is not modified) and returns
the final metrics. Only rank 0 logs, writes and holds the run folder's lock (`engine.lock`: a second
training into the folder is refused at once); all ranks step in lockstep (DDP all-reduces gradients; the
non-finite checks are reduced too, so every rank stops at the same step).

The loop does not synchronise with the device at every step: the loss is summed on the device and read (and
checked for NaN/inf) at log intervals and before every checkpoint. A checkpoint is only written when the loss
so far, the weights and the optimizer state are finite, so `last/` is always a good point to resume from.
Resuming restores the epoch's running sums, so a resumed run on CPU (``--workers 0``) reproduces the
uninterrupted run exactly (weights and summary rows; only the img_s timing differs). With data-loader worker
processes only a streamed source (`data.shards.ShardStream`, which seeds each sample's augmentation) does: the
workers of map-style data draw from random streams seeded once when they start, not part of a checkpoint.

Under torchrun, rank 0 records the run folder of a new run in `<output>/.torchelastic-<rendezvous id>` (removed
when the run ends well); a worker group that torchelastic restarted (`--max-restarts`,
TORCHELASTIC_RESTART_COUNT > 0 on any rank) takes the folder from there and resumes it from its last checkpoint as
`--resume RUN_DIR` would (or starts the run again in it when no checkpoint was written yet).
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import yaml
from timm.utils import random_seed
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from lstmvision.data.images import BadImageCounter, DataError, default_data_root
from lstmvision.data.loaders import start_epoch
from lstmvision.data.sources import data_root
from lstmvision.device import autocast_context, cpu_threads
from lstmvision.engine import checkpoint as ckpt
from lstmvision.engine.callbacks import Callback
from lstmvision.engine.checkpoint import set_rng_state
from lstmvision.engine.lock import RunFolderBusy, RunLock
from lstmvision.engine.run import (
    Dist,
    EpochSums,
    Logger,
    Run,
    build_parts,
    choose_run_dir,
    elastic_restart,
    forget_elastic_run,
    prepare_config,
    wrap_for_training,
)
from lstmvision.engine.state import check_loss, check_same_data, commit_epoch, open_resume, restore, save_mid_epoch
from lstmvision.engine.summary import write_file, write_summary
from lstmvision.errors import first_line
from lstmvision.outputs import check_run_folder, checkpoint_reads
from lstmvision.tasks import get_task
from lstmvision.weights import find_checkpoint


# ------------------------------------------------------------------------------------------- train
def train(cfg: dict[str, Any], callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train by the resolved config `cfg` (not modified); `callbacks` see `lstmvision.engine.callbacks`. The run
    folder is locked (`lstmvision.engine.lock`) from before anything in it is read until the end."""
    env = Dist(cfg["device"])
    try:
        cfg = prepare_config(cfg, env)
        restarted = False
        if cfg["resume"]:
            run_dir = find_checkpoint(cfg["resume"]).parent
        else:
            again = env.any_true(elastic_restart() > 0)  # collective: each node counts its own restarts
            run_dir, restarted = env.broadcast(choose_run_dir(cfg, again) if env.main else None)
            data = data_root(cfg["data"]) if cfg.get("data") else None  # a shard source's folder
            check_run_folder(run_dir, [*checkpoint_reads(cfg.get("initial_checkpoint")), data])
        lock = lock_run_dir(run_dir, env)
        try:
            if restarted:
                cfg = elastic_resume(cfg, env, run_dir)
            run = setup(cfg, env, list(callbacks), run_dir)
            try:
                result = fit(run)
            finally:
                run.close()
            if env.main:
                forget_elastic_run(run_dir)
            return result
        finally:
            if lock is not None:
                lock.release()
    finally:
        env.close()


def elastic_resume(cfg: dict[str, Any], env: Dist, run_dir: Path) -> dict[str, Any]:
    """A restarted torchelastic attempt in its job's (locked) run folder: the config of `--resume RUN_DIR` when
    the folder holds a checkpoint (after finishing an interrupted commit), else `cfg` (the run starts again)."""
    if env.main:
        ckpt.recover(run_dir)
    has_last = env.broadcast(env.main and (run_dir / "last").is_dir())
    log = Logger(env.main)
    if not has_last:
        log(f"train: torchelastic restart {elastic_restart()}: {run_dir} holds no checkpoint yet; starting the run "
            "again")
        return cfg
    log(f"train: torchelastic restart {elastic_restart()}: resuming {run_dir} from its last checkpoint")
    return dict(cfg, resume=str(run_dir), pretrained=False, initial_checkpoint=None)


def lock_run_dir(run_dir: Path, env: Dist) -> RunLock | None:
    """Rank 0 locks the run folder (the other ranks get None); every rank stops with its error when that fails
    (collective in DDP)."""
    if not env.main:
        error = env.broadcast(None)
        if error is not None:
            raise RunFolderBusy(error)
        return None
    try:
        lock = RunLock.acquire(run_dir)
    except (ValueError, OSError) as e:
        env.broadcast(first_line(e))
        raise
    env.broadcast(None)
    if lock.stale_message:
        Logger(True)(f"train: {lock.stale_message}")
    return lock


def setup(cfg: dict[str, Any], env: Dist, callbacks: list[Callback], run_dir: Path) -> Run:
    """Everything the run needs, in the (locked) `run_dir`; a resume first finishes an interrupted commit."""
    if env.device.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(cfg.get("threads") or cpu_threads(int(cfg["workers"] or 0), local_world))
    resume_from, state = open_resume(cfg, env, run_dir) if cfg["resume"] else (None, None)
    if state is None and env.broadcast(env.main and (run_dir / "last").exists()):
        raise ValueError(f"{run_dir} already holds a run; pass --resume {run_dir} or another --experiment")
    random_seed(cfg["seed"], env.rank)
    task = get_task(cfg.get("task"))
    data = task.build_data(cfg, env.world, env.rank, pin_memory=env.device.type == "cuda")
    if state is not None:
        check_same_data(state, data, cfg, resume_from)
    parts = build_parts(cfg, task, data, env)
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


def open_run_folder(run: Run, resumed: bool) -> None:
    """Rank 0: the run's config.yaml, its summary (rebuilt from the checkpoint on resume), TensorBoard."""
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


# ------------------------------------------------------------------------------------------ training
def train_step(run: Run, x: Any, y: Any, i: int, step: int) -> bool:
    """One batch: forward, backward and (at the end of an accumulation) the update. True after an update. The
    task moves the batch, counts its images and computes its loss (tensor batches by default; detection: lists
    of images and target dicts); Mixup and channels-last apply to tensor batches only (the tasks that take
    lists refuse them)."""
    cfg, p, device, task = run.cfg, run.parts, run.device, run.task
    x, y = task.to_device(x, y, device)
    n = task.batch_size(x, y)
    if p.mixup is not None:
        x, y = p.mixup(x, y)
    if cfg["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast_context(device, cfg["amp"]):
        loss = task.train_loss(p.train_model, x, y, p.criterion)
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
    run.sums.images += n * run.env.world
    run.probe = x
    run.emit("on_step_end", n)
    return accum_last


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
    start_epoch(data.train_loader, run.epoch, run.step_in_epoch * cfg["batch_size"])
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
        raise DataError(f"no readable images in {training_data(cfg)} (every training image was skipped)")


def progress_bar(run: Run, first_step: int) -> Any:
    if not (run.env.main and run.log.tty):
        return None
    return tqdm(total=run.data.steps_per_epoch, initial=first_step, desc=f"epoch {run.epoch}", unit="it",
                dynamic_ncols=True, leave=False, mininterval=0.5)


def training_data(cfg: dict[str, Any]) -> str:
    """Where the run's training images come from, for messages."""
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
