"""Checkpoints of a running training: the resumable state (`make_state`, `restore`), the checks that nothing
non-finite is ever saved, and the epoch commit (stage best/ and last/, publish, summary) on top of
`lstmvision.engine.checkpoint`."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist

from lstmvision.device import autocast_context
from lstmvision.engine import checkpoint as ckpt
from lstmvision.engine.checkpoint import load_state, rng_state
from lstmvision.engine.run import Dist, EpochSums, Run, TrainingError
from lstmvision.engine.summary import plot_curves, read_summary, write_summary
from lstmvision.tasks import Data
from lstmvision.weights import find_checkpoint, load_pretrained


# -------------------------------------------------------------------------------------------- resume
def open_resume(cfg: dict[str, Any], env: Dist, run_dir: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The checkpoint folder to resume from (after finishing an interrupted commit in `run_dir`, the run folder,
    which the caller has locked) and its state."""
    if run_dir is None:
        run_dir = find_checkpoint(cfg["resume"]).parent
    if env.main:
        ckpt.recover(run_dir)
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
            tensors.append(run.task.probe_outputs(p.model, run.probe))
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
