"""NXAI's mlstm_kernels as backends of `lstmvision.ops.mlstm`: opt-in only, `pip install "lstmvision[kernels]"`.

Licence: mlstm_kernels is under the NXAI Community License, not Apache-2.0 like lstmvision. Whoever distributes
it, or a product that uses it, must include that licence and its Notice line and display "Built with technology
from NXAI"; above a revenue threshold (EUR 100 M a year) a commercial product needs a licence from NXAI. So it
is never a default dependency, and `auto` never picks these backends. lstmvision ships none of its code: it calls
the installed package. See NOTICE and docs/performance.md.

Backends (same signature as the other mLSTM backends):

- ``mlstm_kernels-parallel-native``: ``parallel--native_autograd``, the quadratic form in PyTorch; autograd,
  exact gradients.
- ``mlstm_kernels-chunkwise-native``: ``chunkwise--native_autograd``, the chunkwise form in PyTorch; autograd,
  exact gradients.
- ``mlstm_kernels-chunkwise-triton``: ``chunkwise--triton_limit_chunk``, Triton forward and backward kernels
  (chunks of 16..64 tokens); CUDA, or CPU under TRITON_INTERPRET=1 (where it is verified). Picked over the
  faster-at-scale ``triton_xl_chunk`` because it runs (and so is checked) under the interpreter and accepts any
  whole number of chunks, where xl_chunk needs a power-of-two length or a multiple of 128. Its backward treats
  the stabiliser m and the normaliser max(|q·n|, exp(-m)) + eps as constants, by design: its gradients are
  those of `detached_reference`, not the exact gradients of its forward. Do not use it where exact gradients
  are promised (check-kernels compares its gradients with `detached_reference`).

Definition: the same function as ours. On random inputs in fp64 (B=1, NH=2, S=37, DQK=DV=12, chunk 16)
``parallel--native_autograd`` matches our ``parallel`` to 2e-15 and ``chunkwise--native_autograd`` our
``recurrent`` to 2e-14: gates (exp(i), sigmoid(f) through logsigmoid), scale DQK^-1/2 and the normaliser
max(|q·n|, exp(-m)) + eps (eps added after the maximum) agree. The only difference between forms, in both
libraries alike, is the stabiliser m: the parallel form takes m_t = max_j log D_tj, the chunkwise and recurrent
forms also carry the zero initial state (m_t >= cumulative log forget gate), which moves exp(-m) and so the
output by ~4e-8 here. Compare parallel with parallel, chunkwise with recurrent/chunkwise.

Shapes: the chunkwise kernels need whole chunks: the sequence is zero-padded at the end (exact for the causal
outputs of the real tokens; ViL's 196 tokens become 256 with chunks of 64). The native chunk is
min(chunk_size, S); the Triton chunk a power of two in [16, 64] near chunk_size. The Triton kernels get head
dims zero-padded to a power of two >= 16 or a multiple of 64 (`triton_head_dim`: ViL-T's 96 -> 128, ViL-S's 192
stays; 12, 48 and 96 crash or fail in their kernels under the interpreter), q scaled so that the kernel's
(padded DQK)^-1/2 is DQK^-1/2: exact.

Precision: the native kernels compute everything, gate math included, in the dtype of their inputs; fed bf16
they are far off (check-kernels' problem: forward abs error 0.43-0.49, gradients 41 % relative, from the
logsigmoid cumulative sums and exponentials in bf16). So half inputs run them in fp32 (inputs upcast, output cast
back), as our precision policy does for the gate math: agreement then is that of fp32. The Triton kernels take
the input dtype, run their gate math in fp32 and tl.dot in the input dtype (TF32 for fp32 on CUDA).
`mlstm` switches autocast off around every backend.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from lstmvision.ops._triton_common import can_run

EXTRA = 'pip install "lstmvision[kernels]"'
KERNELS = {  # our name -> mlstm_kernels' name
    "mlstm_kernels-chunkwise-native": "chunkwise--native_autograd",
    "mlstm_kernels-parallel-native": "parallel--native_autograd",
    "mlstm_kernels-chunkwise-triton": "chunkwise--triton_limit_chunk",
}
EXACT_GRADIENTS = frozenset({"mlstm_kernels-chunkwise-native", "mlstm_kernels-parallel-native"})
TRITON = frozenset({"mlstm_kernels-chunkwise-triton"})


@functools.lru_cache(maxsize=1)
def _import() -> tuple[Callable[[str], Any] | None, str]:
    try:
        from mlstm_kernels.torch import get_mlstm_kernel  # noqa: PLC0415 (optional dependency: mlstm_kernels, the [kernels] extra, NXAI licence)
    except Exception as e:  # missing, or broken
        return None, f"{type(e).__name__}: {e}"
    return get_mlstm_kernel, ""


def library() -> Callable[[str], Any]:
    """mlstm_kernels' `get_mlstm_kernel`; ImportError naming the extra when the package is missing."""
    get, err = _import()
    if get is None:
        raise ImportError(f"the mLSTM backends mlstm_kernels-* need the mlstm_kernels package, which is not installed "
                          f"or does not import ({err}); install the opt-in extra: {EXTRA} (NXAI Community License)")
    return get


def available() -> bool:
    return _import()[0] is not None


def unavailable_reason(backend: str, device: torch.device | str, dtype: torch.dtype | None = None) -> str:
    """Why `backend` cannot run on `device` (and `dtype`) here; '' when it can."""
    if not available():
        return f"mlstm_kernels is not installed ({EXTRA})"
    if backend in TRITON:
        if not can_run(device):
            return ("needs CUDA, or TRITON_INTERPRET=1 on CPU, and Triton installed (the native backends run "
                    "anywhere)")
        if dtype == torch.float64:
            return f"{backend} runs fp32, fp16 and bf16"
    return ""


def require(backend: str, device: torch.device | str, dtype: torch.dtype | None = None) -> None:
    """ImportError naming the extra when mlstm_kernels is missing; RuntimeError when `backend` cannot run here."""
    library()
    why = unavailable_reason(backend, device, dtype)
    if why:
        raise RuntimeError(f"mLSTM backend {backend!r}: {why}")


def _kernel(backend: str) -> Callable[..., torch.Tensor]:
    return library()(KERNELS[backend])


def _pad_tokens(ts: tuple[torch.Tensor, ...], L: int) -> tuple[tuple[torch.Tensor, ...], int]:
    """(q, k, v, i, f) zero-padded at the end to a whole number of chunks of L tokens; and the padding."""
    S = ts[0].shape[2]
    pad = -(-S // L) * L - S
    if not pad:
        return ts, 0
    q, k, v, i, f = ts
    return (*(F.pad(t, (0, 0, 0, pad)) for t in (q, k, v)), *(F.pad(t, (0, pad)) for t in (i, f))), pad


def _native_dtype(q: torch.Tensor) -> torch.dtype:
    """The native kernels compute everything, gate math included, in one dtype: fp32 for half inputs."""
    return torch.float32 if q.dtype in (torch.bfloat16, torch.float16) else q.dtype


def parallel_native(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    dt = _native_dtype(q)
    h = _kernel("mlstm_kernels-parallel-native")(*(t.to(dt) for t in (q, k, v, i, f)), eps=eps)
    return h.to(v.dtype)


def chunkwise_native(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    S = q.shape[2]
    L = max(1, min(int(chunk_size), S))
    dt = _native_dtype(q)
    ts, pad = _pad_tokens(tuple(t.to(dt) for t in (q, k, v, i, f)), L)
    h = _kernel("mlstm_kernels-chunkwise-native")(*ts, eps=eps, chunk_size=L)
    return (h[:, :, :S] if pad else h).to(v.dtype)


def triton_chunk(S: int, chunk_size: int) -> int:
    """The Triton kernel's chunk: a power of two in [16, 64] (tl.dot needs 16; 'limit_chunk' at most 64)."""
    return min(64, max(16, 1 << (max(1, min(int(chunk_size), S)) - 1).bit_length()))


def triton_head_dim(d: int) -> int:
    """The head dim the Triton kernels get: a power of two >= 16, or a multiple of 64 (their block is
    min(64, next_pow2(d)); other sizes, e.g. 12, 48, 96, fail or crash under the interpreter)."""
    if d % 64 == 0:
        return d
    return max(16, 1 << (d - 1).bit_length()) if d < 64 else -(-d // 64) * 64


def chunkwise_triton(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    require("mlstm_kernels-chunkwise-triton", q.device, q.dtype)
    S, dqk, dv = q.shape[2], q.shape[3], v.shape[3]
    pq, pv = triton_head_dim(dqk) - dqk, triton_head_dim(dv) - dv
    if pq:  # zero columns; the kernel scales q·k by (dqk + pq)^-1/2: rescale q to keep dqk^-1/2
        q = F.pad(q * math.sqrt((dqk + pq) / dqk), (0, pq))
        k = F.pad(k, (0, pq))
    if pv:
        v = F.pad(v, (0, pv))
    L = triton_chunk(S, chunk_size)
    ts, pad = _pad_tokens((q, k, v, i, f), L)
    h = _kernel("mlstm_kernels-chunkwise-triton")(*ts, eps=eps, chunk_size=L, autocast_kernel_dtype=q.dtype)
    return h[:, :, :S, :dv] if (pad or pv) else h


BACKENDS: dict[str, Callable[..., torch.Tensor]] = {
    "mlstm_kernels-chunkwise-native": chunkwise_native,
    "mlstm_kernels-parallel-native": parallel_native,
    "mlstm_kernels-chunkwise-triton": chunkwise_triton,
}


def detached_reference(q, k, v, i, f, eps: float = 1e-6, initial_state: bool = True) -> torch.Tensor:
    """The mLSTM as one quadratic form with the stabiliser m and the normaliser max(|q·n|, exp(-m)) + eps
    detached: the same forward, and the gradient that mlstm_kernels' custom backward (``*_custbw``, the Triton
    kernels) computes. `initial_state`: m as the chunkwise/recurrent forms (with the zero initial state), else as
    the parallel form. A check reference: run it in fp64."""
    S, dqk = q.shape[-2], q.shape[-1]
    cum = torch.cumsum(F.logsigmoid(f), dim=-1)  # (B, NH, S)
    log_d = cum.unsqueeze(-1) - cum.unsqueeze(-2) + i.unsqueeze(-2)  # (B, NH, S, S)
    causal = torch.ones(S, S, dtype=torch.bool, device=q.device).tril_()
    log_d = log_d.masked_fill(~causal, float("-inf"))
    m = log_d.amax(dim=-1, keepdim=True)  # (B, NH, S, 1)
    if initial_state:
        m = torch.maximum(m, cum.unsqueeze(-1))
    m = m.detach()
    c = (q @ k.transpose(-1, -2)) * (dqk**-0.5) * torch.exp(log_d - m)  # k (B, NH, S, dqk) -> (B, NH, dqk, S)
    normaliser = (torch.maximum(c.sum(dim=-1, keepdim=True).abs(), torch.exp(-m)) + eps).detach()
    return (c / normaliser) @ v


__all__ = ["BACKENDS", "EXACT_GRADIENTS", "EXTRA", "KERNELS", "TRITON", "available", "chunkwise_native",
           "chunkwise_triton", "detached_reference", "library", "parallel_native", "require", "triton_chunk",
           "triton_head_dim",
           "unavailable_reason"]
