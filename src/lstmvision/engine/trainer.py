"""The training loop: timm data pipeline, optimizer / scheduler factories, Mixup/CutMix, EMA, AMP, DDP.

`train(cfg)` takes a resolved config dict (see `recipes.DEFAULTS`) and returns the final metrics. Only rank 0
logs and writes; all ranks step in lockstep (DDP all-reduces gradients; the non-finite-loss check is reduced
too, so every rank stops at the same step).
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import yaml

from lstmvision.data import BadImageCounter, DataError, build_loader, create_eval_transform, limit, resolve_dataset
from lstmvision.engine.checkpoint import load_state, rng_state, save_checkpoint, set_rng_state
from lstmvision.engine.evaluate import autocast_context, evaluate
from lstmvision.runtime import cpu_threads, find_checkpoint, resolve_device
from lstmvision.weights import atomic_write

SUMMARY_FIELDS = ["epoch", "train_loss", "val_loss", "top1", "top5", "lr", "img_s"]


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


def write_summary(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS)
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in SUMMARY_FIELDS})
    atomic_write(run_dir / "summary.csv", lambda p: Path(p).write_text(buf.getvalue()))


def read_summary(run_dir: Path) -> list[dict[str, Any]]:
    f = run_dir / "summary.csv"
    if not f.is_file():
        return []
    with open(f) as fh:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in csv.DictReader(fh)]


def plot_curves(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    a.plot(ep, [r["val_loss"] for r in rows], "o-", label="val")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, [r["top1"] for r in rows], "o-", label="top-1")
    b.plot(ep, [r["top5"] for r in rows], "o-", label="top-5")
    b.set_xlabel("epoch"), b.set_ylabel("val accuracy (%)"), b.legend(), b.grid(alpha=0.3)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    atomic_write(run_dir / "curves.png", lambda p: fig.savefig(p, format="png", dpi=80))
    plt.close(fig)


# ---------------------------------------------------------------------------------------- building
def check_config(cfg: dict[str, Any], device: torch.device) -> None:
    """Impossible combinations → one clear error before anything is built."""
    if cfg["amp"] not in ("none", "bf16", "fp16"):
        raise ValueError(f"--amp must be none, bf16 or fp16, got {cfg['amp']!r}")
    if cfg["amp"] == "fp16" and device.type == "cpu":
        raise ValueError("--amp fp16 needs a CUDA GPU; use --amp bf16 or --amp none on CPU")
    for key in ("epochs", "batch_size", "grad_accum"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be a positive integer, got {cfg[key]!r}")
    if cfg["img_size"] is not None and int(cfg["img_size"]) < 8:
        raise ValueError(f"--img-size must be at least 8, got {cfg['img_size']}")
    if (cfg["mixup"] > 0 or cfg["cutmix"] > 0) and cfg["batch_size"] % 2:
        raise ValueError("Mixup/CutMix needs an even --batch-size")
    if cfg["workers"] is not None and cfg["workers"] < 0:
        raise ValueError("--workers must be >= 0")
    if cfg["resume"] and cfg["pretrained"]:
        raise ValueError("--resume and --pretrained exclude each other: a resumed run restores its own weights")
    lr = cfg["lr"]
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"--lr must be a positive number, got {lr}")


def resolve_lr(cfg: dict[str, Any], world: int) -> float:
    if cfg["lr"] is not None:
        return float(cfg["lr"])
    global_batch = cfg["batch_size"] * cfg["grad_accum"] * world
    return float(cfg["lr_base"]) * global_batch / float(cfg["lr_base_size"])


def build_model(cfg: dict[str, Any], num_classes: int, in_chans: int, class_names: list[str]) -> nn.Module:
    from lstmvision.models import create_model, is_model

    if not is_model(cfg["model"]):
        create_model(cfg["model"])  # raises the registry's "unknown model" error with suggestions
    kwargs = dict(cfg.get("model_kwargs") or {})
    kwargs.setdefault("img_size", int(cfg["img_size"]))  # models with position embeddings need it (ViL)
    if cfg["drop_path"]:
        kwargs["drop_path_rate"] = cfg["drop_path"]
    if cfg["drop"]:
        kwargs["drop_rate"] = cfg["drop"]
    model = create_model(cfg["model"], pretrained=cfg["pretrained"], num_classes=num_classes, in_chans=in_chans,
                         **kwargs)
    model.class_names = list(class_names)
    size = int(cfg["img_size"])
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(in_chans, size, size), mean=tuple(cfg["mean"]),
                                std=tuple(cfg["std"]), crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"],
                                num_classes=num_classes)
    if cfg["grad_checkpointing"]:
        model.set_grad_checkpointing(True)
    return model


def build_transforms(cfg: dict[str, Any], in_chans: int):
    from timm.data import create_transform

    size = int(cfg["img_size"])
    input_size = (in_chans, size, size)
    train_tf = create_transform(
        input_size, is_training=True, scale=tuple(cfg["scale"]), ratio=tuple(cfg["ratio"]), hflip=cfg["hflip"],
        color_jitter=cfg["color_jitter"] or None, auto_augment=cfg["aa"], interpolation=cfg["train_interpolation"],
        mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), re_prob=cfg["reprob"], re_mode=cfg["remode"],
    ) if not cfg.get("no_aug") else create_eval_transform(input_size, cfg["mean"], cfg["std"], 1.0,
                                                          cfg["interpolation"])
    eval_tf = create_eval_transform(input_size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg["crop_pct"],
                                    cfg["interpolation"])
    return train_tf, eval_tf


def make_run_dir(cfg: dict[str, Any]) -> Path:
    name = cfg["experiment"] or f"{datetime.now():%Y%m%d-%H%M%S}-{cfg['model']}-{cfg['img_size']}"
    return Path(cfg["output"]) / name


# ------------------------------------------------------------------------------------------- train
def train(cfg: dict[str, Any]) -> dict[str, Any]:
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3, random_seed

    env = Dist(cfg["device"])
    try:
        return _train(cfg, env, Mixup, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy, create_optimizer_v2,
                      create_scheduler_v2, ModelEmaV3, random_seed)
    finally:
        env.close()


def _train(cfg, env: Dist, Mixup, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy, create_optimizer_v2,
           create_scheduler_v2, ModelEmaV3, random_seed) -> dict[str, Any]:
    device = env.device
    check_config(cfg, device)
    threads = cfg.get("threads") or cpu_threads(int(cfg["workers"] or 0), int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if device.type == "cpu":
        torch.set_num_threads(threads)
    log = Logger(env.main)

    # ---- resume: the run folder and its state
    resume_state, run_dir, resume_from = None, None, None
    if cfg["resume"]:
        resume_from = find_checkpoint(cfg["resume"])
        resume_state = load_state(resume_from)
        run_dir = resume_from.parent
        saved_model = resume_state.get("model_name")
        if saved_model and saved_model != cfg["model"]:
            raise ValueError(f"{resume_from} is a checkpoint of {saved_model!r}, not {cfg['model']!r}")
    random_seed(cfg["seed"], env.rank)

    # ---- data
    grayscale_hint = cfg["in_chans"]
    train_ds = resolve_dataset(cfg["data"], "train", img_mode="L")
    class_names = list(train_ds.class_names)
    in_chans = int(cfg["in_chans"] or (1 if getattr(train_ds, "grayscale", False) else 3))
    del grayscale_hint
    img_mode = "L" if in_chans == 1 else "RGB"
    train_ds.img_mode = img_mode
    val_ds = resolve_dataset(cfg["data"], "val", img_mode=img_mode, class_names=class_names)
    if hasattr(train_ds, "dataset"):
        train_ds.dataset.img_mode = img_mode
    train_ds = limit(train_ds, cfg["limit_train"], cfg["seed"])
    val_ds = limit(val_ds, cfg["limit_val"], cfg["seed"])
    num_classes = int(cfg["num_classes"] or len(class_names))
    if num_classes < len(class_names):
        raise ValueError(f"--num-classes {num_classes} is smaller than the {len(class_names)} classes in the data")
    if cfg["mean"] is None or cfg["std"] is None:
        from lstmvision.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD
        from lstmvision.models.registry import IMAGENET_MEAN, IMAGENET_STD

        if in_chans == 1:
            cfg["mean"], cfg["std"] = list(FASHION_MNIST_MEAN), list(FASHION_MNIST_STD)
        else:
            cfg["mean"], cfg["std"] = list(IMAGENET_MEAN), list(IMAGENET_STD)
    for key in ("mean", "std"):
        if len(cfg[key]) != in_chans:
            cfg[key] = list(cfg[key]) * in_chans if len(cfg[key]) == 1 else [sum(cfg[key]) / len(cfg[key])] * in_chans
    train_tf, eval_tf = build_transforms(cfg, in_chans)
    per_rank_batch = cfg["batch_size"]
    workers = int(cfg["workers"])
    train_loader = build_loader(train_ds, train_tf, per_rank_batch, True, workers, env.world, env.rank, cfg["seed"],
                                pin_memory=device.type == "cuda", drop_last=cfg["mixup"] > 0 or cfg["cutmix"] > 0)
    val_loader = build_loader(val_ds, eval_tf, per_rank_batch * 2, False, workers, env.world, env.rank,
                              pin_memory=device.type == "cuda")
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise DataError("the training set is smaller than one batch; lower --batch-size")
    updates_per_epoch = max(1, math.ceil(steps_per_epoch / cfg["grad_accum"]))

    # ---- model, optimizer, schedule, EMA, AMP
    model = build_model(cfg, num_classes, in_chans, class_names).to(device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    lr = resolve_lr(cfg, env.world)
    cfg["lr_resolved"] = lr
    optimizer = create_optimizer_v2(model, opt=cfg["opt"], lr=lr, weight_decay=cfg["weight_decay"],
                                    layer_decay=cfg["layer_decay"], momentum=cfg["momentum"],
                                    **({"eps": cfg["opt_eps"], "betas": tuple(cfg["opt_betas"])}
                                       if cfg["opt"] in ("adamw", "adam", "nadamw", "lamb") else {}))
    scheduler, total_epochs = create_scheduler_v2(
        optimizer, sched=cfg["sched"], num_epochs=cfg["epochs"], warmup_epochs=cfg["warmup_epochs"],
        warmup_lr=cfg["warmup_lr"], min_lr=cfg["min_lr"], cooldown_epochs=cfg["cooldown_epochs"],
        step_on_epochs=False, updates_per_epoch=updates_per_epoch,
    )
    scaler = torch.amp.GradScaler(device.type) if cfg["amp"] == "fp16" else None
    ema = ModelEmaV3(model, decay=cfg["ema_decay"]) if cfg["ema"] else None
    mixup = None
    if cfg["mixup"] > 0 or cfg["cutmix"] > 0:
        mixup = Mixup(mixup_alpha=cfg["mixup"], cutmix_alpha=cfg["cutmix"], prob=cfg["mixup_prob"],
                      switch_prob=cfg["mixup_switch_prob"], label_smoothing=cfg["smoothing"],
                      num_classes=num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()
    elif cfg["smoothing"]:
        criterion = LabelSmoothingCrossEntropy(cfg["smoothing"])
    else:
        criterion = nn.CrossEntropyLoss()

    start_epoch, step_in_epoch, global_step, best = 0, 0, 0, None
    if resume_state is not None:
        from lstmvision.weights import load_pretrained

        load_pretrained(model, resume_from)
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        if ema is not None and resume_state.get("ema"):
            ema.load_state_dict(resume_state["ema"])
        start_epoch, step_in_epoch = resume_state["epoch"], resume_state["step_in_epoch"]
        global_step, best = resume_state["global_step"], resume_state.get("best")
        if resume_state.get("world_size", 1) == env.world and resume_state.get("rng", {}).get(str(env.rank)):
            set_rng_state(resume_state["rng"][str(env.rank)])
        if step_in_epoch >= steps_per_epoch:
            start_epoch, step_in_epoch = start_epoch + 1, 0

    train_model: nn.Module = model
    if cfg["compile"]:
        train_model = torch.compile(model)
    if env.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)

    # ---- run folder (rank 0 writes)
    if run_dir is None:
        run_dir = env.broadcast(make_run_dir(cfg) if env.main else None)
        taken = env.broadcast(env.main and (run_dir / "last").exists())
        if taken:
            raise ValueError(f"{run_dir} already holds a run; pass --resume {run_dir} or another --experiment")
    writer = None
    rows = read_summary(run_dir) if env.main else []
    if env.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = {k: v for k, v in cfg.items() if not k.startswith("_")}
        saved.update(run_dir=str(run_dir), world_size=env.world, in_chans=in_chans, num_classes=num_classes)
        atomic_write(run_dir / "config.yaml", lambda p: Path(p).write_text(yaml.safe_dump(saved, sort_keys=True)))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=global_step if resume_state else None)
        rows = [r for r in rows if r["epoch"] < start_epoch]
    n_params = sum(p.numel() for p in model.parameters())
    log(f"train: {cfg['model']} ({n_params / 1e6:.2f}M params, in_chans {in_chans}, {num_classes} classes) "
        f"on {len(train_ds)} train / {len(val_ds)} val images, {cfg['img_size']}px, device {device}, "
        f"{torch.get_num_threads()} threads, world {env.world}, batch {per_rank_batch}x{cfg['grad_accum']}x{env.world}, lr {lr:.3g}, "
        f"{total_epochs} epochs; run folder {run_dir}")
    if resume_state is not None:
        log(f"train: resumed from {resume_from} at epoch {start_epoch} step {step_in_epoch} "
            f"(global step {global_step}, lr {optimizer.param_groups[0]['lr']:.6g})")

    def make_state(epoch: int, step: int) -> dict[str, Any]:
        rng = {str(env.rank): rng_state()}
        if env.world > 1:  # gather every rank's RNG state (as bytes: tensors do not travel well as objects)
            buf = io.BytesIO()
            torch.save(rng, buf)
            gathered: list[Any] = [None] * env.world
            dist.all_gather_object(gathered, buf.getvalue())
            rng = {}
            for blob in gathered:
                rng.update(torch.load(io.BytesIO(blob), weights_only=True))
        return dict(
            epoch=epoch, step_in_epoch=step, global_step=global_step, steps_per_epoch=steps_per_epoch,
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else {},
            ema=ema.state_dict() if ema is not None else {}, best=best, rng=rng, world_size=env.world,
            class_names=class_names, model_name=cfg["model"], lr=optimizer.param_groups[0]["lr"],
        )

    def save(name: str, epoch: int, step: int) -> None:
        state = make_state(epoch, step)  # collective in DDP: every rank calls it
        if env.main:
            save_checkpoint(run_dir, name, model, state, class_names)
        env.barrier()

    bad = BadImageCounter(strict=cfg["strict_images"], verbose=env.main)
    nan_at = cfg.get("_debug_nan_at_step")
    step_delay = cfg.get("_debug_step_delay") or 0.0
    seen_samples = 0
    metrics: dict[str, Any] = {}
    t_start = time.time()
    for epoch in range(start_epoch, total_epochs):
        train_model.train()
        sampler = train_loader.sampler
        sampler.set_epoch(epoch)
        sampler.skip_samples = step_in_epoch * per_rank_batch
        loss_sum, loss_n, images, t0 = 0.0, 0, 0, time.time()
        n_steps = steps_per_epoch - step_in_epoch
        bar = None
        if env.main and log.tty:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"epoch {epoch}", unit="it",
                       dynamic_ncols=True, leave=False, mininterval=0.5)
        optimizer.zero_grad(set_to_none=True)
        step = step_in_epoch
        for i, (x, y, skipped) in enumerate(train_loader):
            bad(skipped)
            step = step_in_epoch + i + 1
            if x is None:
                continue
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mixup is not None:
                x, y = mixup(x, y)
            if cfg["channels_last"]:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, cfg["amp"]):
                out = train_model(x)
                loss = criterion(out.float(), y)
            if nan_at is not None and global_step + 1 >= int(nan_at):
                loss = loss * float("nan")
            if env.any_true(not torch.isfinite(loss).item()):
                if bar is not None:
                    bar.close()
                if writer is not None:
                    writer.close()
                where = run_dir / "last" if (run_dir / "last").exists() else None
                kept = f"the last good checkpoint is {where}" if where else "no checkpoint had been saved yet"
                raise TrainingError(
                    f"loss became {loss.item()} at epoch {epoch} step {step} (global step {global_step + 1}); "
                    f"training stopped, {kept}. Lower --lr, add --clip-grad, or use --amp none")
            accum_last = (i + 1) % cfg["grad_accum"] == 0 or step == steps_per_epoch
            sync = env.world == 1 or accum_last
            ctx = train_model.no_sync() if not sync else _null()
            with ctx:
                if scaler is not None:
                    scaler.scale(loss / cfg["grad_accum"]).backward()
                else:
                    (loss / cfg["grad_accum"]).backward()
            if accum_last:
                if scaler is not None:
                    if cfg["clip_grad"]:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), cfg["clip_grad"])
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    if cfg["clip_grad"]:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg["clip_grad"])
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                global_step += 1
                scheduler.step_update(global_step)
                if ema is not None:
                    ema.update(model, step=global_step)
            seen_samples += x.shape[0]
            if step_delay:
                time.sleep(step_delay)
            loss_sum += loss.item() * y.shape[0]
            loss_n += y.shape[0]
            images += x.shape[0] * env.world
            lr_now = optimizer.param_groups[0]["lr"]
            ips = images / max(time.time() - t0, 1e-9)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", lr=f"{lr_now:.2e}", img_s=f"{ips:.0f}")
                bar.update(1)
            elif env.main and (step % cfg["log_interval"] == 0 or step == steps_per_epoch):
                done = step - step_in_epoch
                eta = (time.time() - t0) / max(done, 1) * (n_steps - done)
                log(f"epoch {epoch} [{step}/{steps_per_epoch}] loss {loss_sum / loss_n:.4f} lr {lr_now:.3e} "
                    f"{ips:.0f} img/s eta {eta:.0f}s")
            if writer is not None and global_step % max(1, cfg["log_interval"] // 5) == 0:
                writer.add_scalar("train/loss", loss.item(), global_step)
                writer.add_scalar("train/lr", lr_now, global_step)
            if cfg["checkpoint_steps"] and step % cfg["checkpoint_steps"] == 0 and step < steps_per_epoch and accum_last:
                save("last", epoch, step)
        if bar is not None:
            bar.close()
        train_time = time.time() - t0
        ips = images / max(train_time, 1e-9)
        if env.world > 1:
            t = torch.tensor([loss_sum, loss_n], dtype=torch.float64)
            dist.all_reduce(t)
            loss_sum, loss_n = t.tolist()
        metrics = evaluate(model, val_loader, device, cfg["amp"], cfg["channels_last"], bad)
        if ema is not None and cfg["eval_ema"]:
            ema_metrics = evaluate(ema.module, val_loader, device, cfg["amp"], cfg["channels_last"], bad)
            metrics["ema_top1"] = ema_metrics["top1"]
        lr_now = optimizer.param_groups[0]["lr"]
        row = dict(epoch=epoch, train_loss=round(loss_sum / max(loss_n, 1), 6), val_loss=round(metrics["loss"], 6),
                   top1=round(metrics["top1"], 4), top5=round(metrics["top5"], 4), lr=lr_now, img_s=round(ips, 1))
        scheduler.step(epoch + 1, metrics["top1"])
        is_best = best is None or metrics["top1"] > best["top1"]
        if is_best:
            best = dict(epoch=epoch, top1=metrics["top1"], top5=metrics["top5"], loss=metrics["loss"])
        step_in_epoch = 0
        save("last", epoch + 1, 0)
        if is_best:
            save("best", epoch + 1, 0)
        if env.main:
            rows.append(row)
            write_summary(run_dir, rows)
            plot_curves(run_dir, rows)
            for k in ("train_loss", "val_loss", "top1", "top5", "img_s"):
                writer.add_scalar(f"epoch/{k}", row[k], epoch)
            writer.flush()
            extra = f" ema_top1 {metrics['ema_top1']:.2f}" if "ema_top1" in metrics else ""
            log(f"epoch {epoch}: train_loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
                f"top1 {row['top1']:.2f} top5 {row['top5']:.2f}{extra} lr {lr_now:.3e} {ips:.0f} img/s "
                f"({train_time:.0f}s train, {time.time() - t_start:.0f}s total)")
    if writer is not None:
        writer.close()
    if cfg.get("_debug_rank_dir"):  # test hook: what this rank ended with
        import json

        flat = torch.cat([p.detach().flatten().double().cpu() for p in model.parameters()])
        Path(cfg["_debug_rank_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(cfg["_debug_rank_dir"]) / f"rank{env.rank}.json").write_text(json.dumps(dict(
            rank=env.rank, world=env.world, global_step=global_step, samples=seen_samples,
            param_sum=flat.sum().item(), param_abs_sum=flat.abs().sum().item(), first=flat[:16].tolist())))
    if bad.count:
        log(f"train: skipped {bad.count} unreadable images")
    result = dict(run_dir=str(run_dir), epochs=total_epochs, global_step=global_step, best=best,
                  final=dict(top1=metrics.get("top1"), top5=metrics.get("top5"), loss=metrics.get("loss")),
                  time_s=round(time.time() - t_start, 1), skipped_images=bad.count, rank=env.rank)
    return result


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
