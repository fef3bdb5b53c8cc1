"""Run-folder checkpoints: `last/` and `best/`, each a `save_pretrained` folder plus a resumable `state.pth`.

A checkpoint folder is first staged as `.<name>.new/` (every file written atomically and fsynced), then
published by renames (`<name>` → `.<name>.old`, `.<name>.new` → `<name>`, remove `.old`).

The end of an epoch is one commit: `best/` (when it improved) and `last/` are both staged, then `last/` is
published (the commit point: its state holds every summary row so far), then `best/`. `recover` (run before a
resume) finishes or rolls back whatever a crash interrupted, so `best/` always holds the best committed epoch
and no temporary entry is left behind.
"""
from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError

from lstmvision.outputs import atomic_write
from lstmvision.weights import refused_pickle, save_pretrained

STATE_NAME = "state.pth"


class CheckpointWriteError(ValueError):
    """A checkpoint could not be written (full disk, permissions): the previous one is left intact."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_errors() -> tuple[type[BaseException], ...]:
    """What a failed write raises: OSError, torch.save's RuntimeError ('unexpected pos'), SafetensorError."""
    return (OSError, RuntimeError, SafetensorError)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        return e.strerror or os.strerror(e.errno)
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "No space left" in text or "unexpected pos" in text:
        return os.strerror(errno.ENOSPC)
    return text


def stage(run_dir: Path, name: str, model: torch.nn.Module, state: dict[str, Any],
          class_names: list[str] | None) -> Path:
    """Write the checkpoint `name` as `run_dir/.<name>.new` (complete and fsynced, not yet visible)."""
    new = Path(run_dir) / f".{name}.new"
    if new.exists():
        shutil.rmtree(new)
    try:
        save_pretrained(model, new, class_names=class_names)
        atomic_write(new / STATE_NAME, lambda p: torch.save(state, p))
        _fsync_dir(new)
    except _write_errors() as e:
        shutil.rmtree(new, ignore_errors=True)
        kept = Path(run_dir) / name
        keep = f"the previous {kept} is intact" if kept.exists() else f"no earlier {name}/ checkpoint existed"
        raise CheckpointWriteError(f"could not write the checkpoint {Path(run_dir) / name} "
                                   f"({_describe(e)}); {keep}") from None
    return new


def publish(run_dir: Path, name: str, on_phase: Callable[[str], None] | None = None) -> Path:
    """Swap the staged `.<name>.new` in as `<name>`. `on_phase` is a test hook called between the renames."""
    run_dir = Path(run_dir)
    final, new, old = run_dir / name, run_dir / f".{name}.new", run_dir / f".{name}.old"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
        if on_phase is not None:
            on_phase(f"swap:{name}")
    os.replace(new, final)
    _fsync_dir(run_dir)
    if old.exists():
        shutil.rmtree(old)
    return final


def save_checkpoint(run_dir: Path, name: str, model: torch.nn.Module, state: dict[str, Any],
                    class_names: list[str] | None) -> Path:
    stage(run_dir, name, model, state, class_names)
    return publish(run_dir, name)


def _progress(folder: Path) -> tuple[int, int] | None:
    try:
        state = load_state(folder)
    except (ValueError, FileNotFoundError):
        return None
    return int(state["epoch"]), int(state["global_step"])


def recover(run_dir: Path) -> None:
    """Finish or roll back an interrupted checkpoint commit in `run_dir` (see the module docstring)."""
    run_dir = Path(run_dir)
    last, last_old = run_dir / "last", run_dir / ".last.old"
    if not last.exists() and (last_old / STATE_NAME).is_file():
        os.replace(last_old, last)  # the swap of last/ was interrupted before its commit: roll back
    for leftover in (run_dir / ".last.new", last_old):
        shutil.rmtree(leftover, ignore_errors=True)
    best_new, best_old = run_dir / ".best.new", run_dir / ".best.old"
    committed = _progress(last) if last.exists() else None
    if best_new.exists():
        if committed is not None and _progress(best_new) == committed:
            publish(run_dir, "best")  # staged with the epoch that last/ committed: roll forward
        else:
            shutil.rmtree(best_new)
    if not (run_dir / "best").exists() and (best_old / STATE_NAME).is_file():
        os.replace(best_old, run_dir / "best")
    shutil.rmtree(best_old, ignore_errors=True)
    for tmp in run_dir.glob(".*.tmp*"):  # atomic_write temp files of a killed process
        if tmp.is_file():
            tmp.unlink()


def load_state(folder: Path) -> dict[str, Any]:
    try:
        return torch.load(folder / STATE_NAME, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(refused_pickle(folder / STATE_NAME, e)) from None
    except Exception as e:
        raise ValueError(f"{folder / STATE_NAME} is not a readable training state: {str(e).splitlines()[0]}") from None


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = dict(
        python=[py[0], list(py[1]), py[2]],
        numpy=[np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]),
               float(np_state[4])],
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy(), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
