"""Run-folder checkpoints: `last/` and `best/`, each a `save_pretrained` folder plus a resumable `state.pth`.

A checkpoint folder is written as `.<name>.new/`, then swapped in by renames (`<name>` → `.<name>.old`,
`.<name>.new` → `<name>`, remove `.old`); every file inside is written atomically and fsynced. A crash at any
point leaves either the previous or the new checkpoint complete: `lstmvision.runtime.find_checkpoint` falls back to
`.<name>.old` when the swap was interrupted.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from lstmvision.weights import atomic_write, save_pretrained

STATE_NAME = "state.pth"


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


def save_checkpoint(run_dir: Path, name: str, model: torch.nn.Module, state: dict[str, Any],
                    class_names: list[str] | None) -> Path:
    run_dir = Path(run_dir)
    final, new, old = run_dir / name, run_dir / f".{name}.new", run_dir / f".{name}.old"
    if new.exists():
        shutil.rmtree(new)
    save_pretrained(model, new, class_names=class_names)
    atomic_write(new / STATE_NAME, lambda p: torch.save(state, p))
    _fsync_dir(new)
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    _fsync_dir(run_dir)
    if old.exists():
        shutil.rmtree(old)
    return final


def load_state(folder: Path) -> dict[str, Any]:
    try:
        return torch.load(folder / STATE_NAME, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{folder / STATE_NAME} is not a readable training state: {str(e).splitlines()[0]}") from None


def rng_state() -> dict[str, Any]:
    import random

    import numpy as np

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
    import random

    import numpy as np

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy(), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
