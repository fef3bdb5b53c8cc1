"""FlashRNN (NXAI, Apache-2.0) as backends of `lstmvision.ops.rnn2d`: opt-in, `pip install "lstmvision[kernels]"`.

Backends (LSTM only; GRU/RNN requests fall back to ``fused``, as ``triton`` does):

- ``flashrnn-vanilla``: FlashRNN's PyTorch step loop (autograd through it); any device.
- ``flashrnn-vanilla_fwbw``: its PyTorch loop with a hand-written backward; any device.
- ``flashrnn-triton``: its ``triton_fused`` kernels (forward and backward); CUDA, or CPU under TRITON_INTERPRET=1.
- ``flashrnn-cuda``: its ``cuda_fused`` kernels; CUDA only. They are compiled with the CUDA toolkit (nvcc, ninja)
  on first use, once per (hidden size, heads, batch, dtype).

Mapping, done here once from the per-direction nn.LSTM weights `rnn2d` receives (`DirWeights`):

- FlashRNN's ``lstm`` has the gates (i, f, z, o) = nn.LSTM's (i, f, g, o) and block-diagonal recurrent weights,
  one block per head: R (4, NH, D_out, D_in). Every direction of the 2-D scan is one head:
  R[:, r] = w_hh.view(4, D, D) of direction r, zero initial states h and c.
- The gate inputs Wx (N, T, 4, NH, D) of every direction come from one GEMM over the NHWC map,
  x @ w_ih^T + b_ih + b_hh (the biases are folded into that GEMM; FlashRNN's own bias b is zero).
- Sequences as the other rnn2d backends: one per column (vertical, length H) and one per row (horizontal,
  length W); all directions run in one call when both axes have the same length (H == W), else one call per
  axis. A reversed direction is a head whose inputs are flipped in time (and its outputs flipped back).
- Hidden sizes: the Triton and CUDA kernels run the head dim zero-padded to the next power of two >= 16 (Triton
  needs a power of two; Sequencer2D-S has 48 and 96). Exact: a padded unit has zero weights, so its gates are
  i = f = o = 1/2, z = 0 and its c and h stay 0; it never reaches the real units (zero columns of R).
- dtype: the kernels run in the dtype of the gate inputs (autocast's dtype inside `torch.autocast`, R cast to
  it) with autocast switched off inside; fp64 runs on ``flashrnn-vanilla`` only.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from lstmvision.ops._triton_common import can_run

EXTRA = 'pip install "lstmvision[kernels]"'
BACKENDS = {  # our name -> FlashRNN's backend
    "flashrnn-vanilla": "vanilla",
    "flashrnn-vanilla_fwbw": "vanilla_fwbw",
    "flashrnn-triton": "triton_fused",
    "flashrnn-cuda": "cuda_fused",
}
PADDED = ("triton_fused", "cuda_fused")  # head dim padded to a power of two >= 16
_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float64: "float64"}


@functools.lru_cache(maxsize=1)
def _import() -> tuple[Callable[..., Any] | None, str]:
    try:
        from flashrnn import flashrnn  # noqa: PLC0415 (optional dependency: flashrnn, the [kernels] extra)
    except Exception as e:  # missing, or broken (e.g. a torch it was not built for)
        return None, f"{type(e).__name__}: {e}"
    return flashrnn, ""


def library() -> Callable[..., Any]:
    """FlashRNN's `flashrnn` function; ImportError naming the extra when the package is missing."""
    fn, err = _import()
    if fn is None:
        raise ImportError(f"the rnn2d backends flashrnn-* need the flashrnn package, which is not installed or does "
                          f"not import ({err}); install the opt-in extra: {EXTRA}")
    return fn


def available() -> bool:
    return _import()[0] is not None


def unavailable_reason(backend: str, device: torch.device | str, dtype: torch.dtype | None = None) -> str:
    """Why `backend` cannot run on `device` (and `dtype`) here; '' when it can."""
    if not available():
        return f"flashrnn is not installed ({EXTRA})"
    kind = BACKENDS[backend]
    dev = torch.device(device)
    if kind == "triton_fused" and not can_run(dev):
        return ("needs CUDA, or TRITON_INTERPRET=1 on CPU, and Triton installed (flashrnn-vanilla and "
                "flashrnn-vanilla_fwbw run anywhere)")
    if kind == "cuda_fused" and dev.type != "cuda":
        return "needs CUDA: FlashRNN's CUDA kernels (flashrnn-vanilla and flashrnn-vanilla_fwbw run anywhere)"
    if dtype == torch.float64 and kind != "vanilla":
        return f"{backend} runs fp32, fp16 and bf16 (fp64: flashrnn-vanilla)"
    return ""


def require(backend: str, device: torch.device | str, dtype: torch.dtype | None = None) -> None:
    """ImportError naming the extra when flashrnn is missing; RuntimeError when `backend` cannot run here."""
    library()
    why = unavailable_reason(backend, device, dtype)
    if why:
        raise RuntimeError(f"rnn2d backend {backend!r}: {why}")


def _next_pow2(d: int) -> int:
    return max(16, 1 << (d - 1).bit_length())


def lstm_heads(Wx: torch.Tensor, R: torch.Tensor, backend: str) -> torch.Tensor:
    """FlashRNN's LSTM over heads: Wx (N, T, 4, NH, D) gate inputs (biases included), R (4, NH, D, D) recurrent
    weights (nn.LSTM's w_hh.view(4, D, D) per head) -> h (N, T, NH, D); zero initial states."""
    kind = BACKENDS[backend]
    D = Wx.shape[-1]
    Dp = _next_pow2(D) if kind in PADDED else D
    R = R.to(Wx.dtype)
    if Dp != D:  # zero units: exact (see the module docstring)
        Wx = F.pad(Wx, (0, Dp - D))
        R = F.pad(R, (0, Dp - D, 0, Dp - D))
    b = Wx.new_zeros(4, Wx.shape[3], Dp)
    states = library()(Wx, R, b, function="lstm", backend=kind, dtype=_DTYPES[Wx.dtype])[0]  # (2, N, T, NH, Dp)
    return states[0, ..., :D]  # h; states[1] is c


def rnn2d_flashrnn(x: torch.Tensor, weights_v: Sequence | None, weights_h: Sequence | None,
                   backend: str) -> torch.Tensor:
    """`rnn2d` (LSTM) through FlashRNN: x (B, H, W, C) -> (B, H, W, dirs * D), channels as `rnn2d_reference`
    ([vertical fwd | vertical bwd | horizontal fwd | horizontal bwd], the directions present)."""
    B, H, W, C = x.shape
    axes = [(a, list(ws)) for a, ws in (("v", weights_v), ("h", weights_h)) if ws]
    dirs = [(a, k == 1, w) for a, ws in axes for k, w in enumerate(ws)]  # (axis, reversed, weights)
    D = dirs[0][2][1].shape[1]
    # gate inputs of every direction: one GEMM over the NHWC map, biases folded in
    xp = F.linear(x, torch.cat([w[0] for *_, w in dirs]), torch.cat([w[2] + w[3] for *_, w in dirs]))
    xp = xp.unflatten(-1, (len(dirs), 4, D))  # (B, H, W, ndirs*4*D) -> (B, H, W, ndirs, 4, D)
    require(backend, x.device, xp.dtype)
    if len(axes) == 1 or H == W:
        groups = [list(range(len(dirs)))]
    else:
        groups = [[j for j, d in enumerate(dirs) if d[0] == a] for a, _ in axes]
    out: list[torch.Tensor] = [None] * len(dirs)  # type: ignore[list-item]
    with torch.autocast(x.device.type, enabled=False):
        for js in groups:
            seqs = []
            for j in js:
                axis, rev, _ = dirs[j]
                s = xp[..., j, :, :]  # (B, H, W, 4, D)
                # vertical: (B, H, W, 4, D) -> (B, W, H, 4, D) -> (B*W, H, 4, D), one sequence per column;
                # horizontal: (B, H, W, 4, D) -> (B*H, W, 4, D), one sequence per row
                s = s.transpose(1, 2).reshape(B * W, H, 4, D) if axis == "v" else s.reshape(B * H, W, 4, D)
                seqs.append(s.flip(1) if rev else s)
            Wx = torch.stack(seqs, 3)  # R x (N, T, 4, D) -> (N, T, 4, R, D): one head per direction
            R = torch.stack([dirs[j][2][1].view(4, D, D) for j in js], 1)  # R x (4, D, D) -> (4, R, D, D)
            hs = lstm_heads(Wx, R, backend)  # (N, T, R, D)
            for r, j in enumerate(js):
                axis, rev, _ = dirs[j]
                h = hs[:, :, r].flip(1) if rev else hs[:, :, r]  # (N, T, D), natural time order
                # vertical: (B*W, H, D) -> (B, W, H, D) -> (B, H, W, D); horizontal: (B*H, W, D) -> (B, H, W, D)
                out[j] = h.reshape(B, W, H, D).transpose(1, 2) if axis == "v" else h.reshape(B, H, W, D)
    return torch.cat(out, -1)


__all__ = ["BACKENDS", "EXTRA", "available", "library", "lstm_heads", "require", "rnn2d_flashrnn",
           "unavailable_reason"]
