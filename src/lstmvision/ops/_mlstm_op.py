"""The Triton chunkwise mLSTM as custom ops (the ``triton`` backend of `lstmvision.ops.mlstm`).

- ``lstmvision::mlstm_chunkwise_fwd``: pads to whole chunks, prepares the gates in fp32 (logsigmoid,
  within-chunk cumsum), then runs the two kernels of `_mlstm_triton` (chunk states, chunk outputs).
- ``lstmvision::mlstm_chunkwise_bwd``: the backward **by recomputation**: it re-runs the PyTorch chunkwise
  form (`_mlstm_torch.chunkwise`, same math, the requested chunk size) through `torch.func.vjp`.
  There is no Triton backward kernel yet: training with this backend runs the kernels forward, and its
  backward costs a PyTorch chunkwise forward + backward (GPU speed of either not measured yet).
The kernels' chunk is max(16, next_pow2(min(chunk_size, S))) (tl.arange / tl.dot constraints); the chunk size
does not change the result beyond rounding.

Both ops have fake (meta) implementations and the pair is tied by `torch.library.register_autograd`, so
`torch.compile` sees one opaque node per call. Triton is imported on first use only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lstmvision.ops._mlstm_torch import chunkwise
from lstmvision.ops._triton_common import can_run, kernel_loader

_kernels = kernel_loader("lstmvision.ops._mlstm_triton", "mlstm_states_kernel", "mlstm_outputs_kernel")


def chunk_len(S: int, chunk_size: int) -> int:
    """The kernels' chunk: a power of 2 (tl.arange), at least 16 (tl.dot), at most next_pow2(chunk_size)."""
    import triton  # noqa: PLC0415 (optional dependency: GPU kernels)

    return max(16, triton.next_power_of_2(max(1, min(int(chunk_size), S))))


@torch.library.custom_op("lstmvision::mlstm_chunkwise_fwd", mutates_args=())
def mlstm_chunkwise_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor, f: torch.Tensor,
                        chunk_size: int, eps: float) -> torch.Tensor:
    if not can_run(q.device):
        raise RuntimeError("the triton mLSTM backend runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1) "
                           "with Triton installed")
    triton, states_kernel, outputs_kernel = _kernels()
    B, NH, S, DQK = q.shape
    DV = v.shape[-1]
    L = chunk_len(S, chunk_size)
    nc = -(-S // L)
    pad = nc * L - S
    if pad:  # zeros at the end: later tokens never reach earlier (causal) outputs
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        i, f = (F.pad(t, (0, pad)) for t in (i, f))
    Sp = nc * L
    q, k, v = (t.contiguous() for t in (q, k, v))
    ig = i.float().reshape(B * NH, Sp).contiguous()
    b = torch.cumsum(F.logsigmoid(f.float()).reshape(B * NH, nc, L), dim=-1).reshape(B * NH, Sp).contiguous()
    c_st = torch.empty(B * NH, nc, DQK, DV, device=q.device, dtype=torch.float32)
    n_st = torch.empty(B * NH, nc, DQK, device=q.device, dtype=torch.float32)
    m_st = torch.empty(B * NH, nc, device=q.device, dtype=torch.float32)
    h = torch.empty(B, NH, Sp, DV, device=q.device, dtype=v.dtype)
    BK = max(16, min(64, triton.next_power_of_2(DQK)))
    BV = max(16, min(64, triton.next_power_of_2(DV)))
    ieee = q.dtype == torch.float32
    warps = 4 if L * max(BK, BV) <= 64 * 64 else 8
    states_kernel[(B * NH, triton.cdiv(DQK, BK), triton.cdiv(DV, BV))](
        k, v, b, ig, c_st, n_st, m_st, Sp, nc, DQK, DV, IEEE=ieee, L=L, BK=BK, BV=BV, num_warps=warps)
    outputs_kernel[(B * NH * nc, triton.cdiv(DV, BV))](
        q, k, v, b, ig, c_st, n_st, m_st, h, Sp, nc, DQK, DV, DQK**-0.5, float(eps),
        IEEE=ieee, L=L, BK=BK, BV=BV, num_warps=warps)
    return h[:, :, :S].contiguous() if pad else h


@mlstm_chunkwise_fwd.register_fake
def _(q, k, v, i, f, chunk_size, eps):
    return v.new_empty(v.shape)


@torch.library.custom_op("lstmvision::mlstm_chunkwise_bwd", mutates_args=())
def mlstm_chunkwise_bwd(dh: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor,
                        f: torch.Tensor, chunk_size: int, eps: float
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # torch.func.vjp, not torch.autograd.grad: a custom op's body runs below the Autograd dispatch key, where
    # ordinary autograd records nothing; functorch's transform carries its own autograd level.
    h, vjp = torch.func.vjp(lambda *xs: chunkwise(*xs, chunk_size=chunk_size, eps=eps), q, k, v, i, f)
    return tuple(g.contiguous() for g in vjp(dh.to(h.dtype)))


@mlstm_chunkwise_bwd.register_fake
def _(dh, q, k, v, i, f, chunk_size, eps):
    return tuple(t.new_empty(t.shape) for t in (q, k, v, i, f))


def _setup(ctx, inputs, output):
    q, k, v, i, f, chunk_size, eps = inputs
    ctx.chunk_size, ctx.eps = chunk_size, eps
    ctx.save_for_backward(q, k, v, i, f)


def _backward(ctx, dh):
    q, k, v, i, f = ctx.saved_tensors
    grads = mlstm_chunkwise_bwd(dh, q, k, v, i, f, ctx.chunk_size, ctx.eps)
    return (*grads, None, None)


torch.library.register_autograd("lstmvision::mlstm_chunkwise_fwd", _backward, setup_context=_setup)
