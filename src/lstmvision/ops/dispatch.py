"""Which backend runs each recurrence: one place for the rnn2d (Sequencer) and mLSTM (ViL) choices.

Backend names (each means one thing):

- rnn2d (`RNN2D_BACKENDS`): ``module`` torch's nn.LSTM/GRU/RNN kernels (cuDNN on CUDA, oneDNN on CPU), the
  official formulation; ``reference`` the step-by-step math loop `rnn2d_reference` (ground truth, slow);
  ``fused`` one input GEMM for all directions and one PyTorch time loop; ``triton`` that GEMM and a persistent
  Triton kernel (LSTM only, opt-in); ``auto`` = ``module`` on every device.
- mLSTM (`MLSTM_BACKENDS`): ``parallel`` the quadratic form as the official code writes it; ``fused`` the same
  form with less (S, S) work; ``factored`` the same form with none beyond the masked q·k product (the decay
  factored onto q and k; ``fused`` where the gates' spread is too wide for that); ``chunkwise`` linear-memory
  chunks; ``recurrent`` step by step (the math reference); ``triton`` the chunkwise form as Triton kernels
  (opt-in); ``auto`` = up to 256 tokens factored on the CPU and fused elsewhere (no GPU measurement yet),
  chunkwise above.

- Opt-in libraries (`pip install "lstmvision[kernels]"`; ImportError naming that extra when missing):
  rnn2d ``flashrnn-vanilla``, ``flashrnn-vanilla_fwbw``, ``flashrnn-triton`` (its triton_fused),
  ``flashrnn-cuda`` (its cuda_fused), see `lstmvision.ops._flashrnn`; mLSTM ``mlstm_kernels-chunkwise-native``,
  ``mlstm_kernels-parallel-native``, ``mlstm_kernels-chunkwise-triton`` (NXAI Community License; the Triton
  one's gradients hold the normaliser constant), see `lstmvision.ops._mlstm_kernels`.

`auto` picks only what committed measurements on the device show correct and fastest. No GPU measurement
is committed yet, so Triton and the libraries are never chosen automatically; run `lstmvision check-kernels --device cuda` and
the GPU suite before changing that.

Precedence: a backend given to the op or the model (`rnn_backend=`, `mlstm_backend=`) wins; else the active
choice, set by `set_backend` / `use_backend`, which starts from the environment variables
LSTMVISION_KERNELS (rnn2d) and LSTMVISION_MLSTM_BACKEND (mLSTM), read once at import. An unknown value in a
variable is reported (ValueError naming it) when that op first runs, not at import.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping, NamedTuple

from lstmvision.constants import MLSTM_BACKENDS, RNN2D_BACKENDS

ENV_VARS = {"rnn2d": "LSTMVISION_KERNELS", "mlstm": "LSTMVISION_MLSTM_BACKEND"}
_CHOICES = {"rnn2d": RNN2D_BACKENDS, "mlstm": MLSTM_BACKENDS}
_LABELS = {"rnn2d": "rnn2d", "mlstm": "mLSTM"}


class Backends(NamedTuple):
    rnn2d: str
    mlstm: str


def _read_environment(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """op -> (requested name, where it came from); validated when used."""
    out = {}
    for op, var in ENV_VARS.items():
        value = (environ.get(var) or "").strip().lower()
        out[op] = (value, f"${var}") if value else ("auto", "default")
    return out


_active = _read_environment(os.environ)


def check(op: str, name: str, source: str = "backend argument") -> str:
    """`name` if it is a backend of `op` ('rnn2d' or 'mlstm'), else ValueError saying where it came from."""
    if name not in _CHOICES[op]:
        raise ValueError(f"unknown {_LABELS[op]} backend {name!r} (from the {source}); "
                         f"choose one of {', '.join(_CHOICES[op])}")
    return name


def requested(op: str, backend: str | None = None) -> str:
    """The backend asked for `op`: `backend` when given, else the active choice."""
    if backend:
        return check(op, backend.strip().lower())
    name, source = _active[op]
    return check(op, name, source)


def get_backend() -> Backends:
    """The active choices (names as requested, e.g. 'auto'; the ops resolve them per call)."""
    return Backends(_active["rnn2d"][0], _active["mlstm"][0])


def set_backend(rnn2d: str | None = None, mlstm: str | None = None) -> Backends:
    """Choose the backends of the ops for the whole process (None keeps one); returns the previous choices."""
    previous = get_backend()
    wanted = {op: check(op, name.strip().lower(), "set_backend argument")  # all checked before any is set
              for op, name in (("rnn2d", rnn2d), ("mlstm", mlstm)) if name is not None}
    _active.update({op: (name, "set_backend") for op, name in wanted.items()})
    return previous


@contextlib.contextmanager
def use_backend(rnn2d: str | None = None, mlstm: str | None = None) -> Iterator[Backends]:
    """`set_backend` inside a `with` block; every choice is restored on exit."""
    global _active
    saved = dict(_active)
    try:
        set_backend(rnn2d, mlstm)
        yield get_backend()
    finally:
        _active = saved


def reload_environment(environ: Mapping[str, str] | None = None) -> Backends:
    """Re-read LSTMVISION_KERNELS / LSTMVISION_MLSTM_BACKEND (they are read once at import): for a process
    that changed them on purpose, and for tests (inside `use_backend()`, which undoes it)."""
    global _active
    _active = _read_environment(os.environ if environ is None else environ)
    return get_backend()


__all__ = ["Backends", "ENV_VARS", "MLSTM_BACKENDS", "RNN2D_BACKENDS", "check", "get_backend", "reload_environment",
           "requested", "set_backend", "use_backend"]
