"""The mLSTM (xLSTM's matrix-memory LSTM) as one function with interchangeable backends.

    h = mlstm(q, k, v, i, f)      q, k: (B, NH, S, DQK)   v: (B, NH, S, DV)   i, f: (B, NH, S)   h: (B, NH, S, DV)

`i` and `f` are raw pre-activations: the input gate is exp(i), the forget gate sigmoid(f) (taken in log space
with logsigmoid), and q·k is scaled by DQK^-1/2. Per head and step t the recurrence is

    C_t = f_t C_{t-1} + i_t k_t v_tᵀ,   n_t = f_t n_{t-1} + i_t k_t,   h_t = C_tᵀ q_t / max(|n_tᵀ q_t|, 1)

stabilised by a log-space max state m (C and n are kept multiplied by exp(-m)), with eps added to the
normaliser. Backends:

- ``parallel``: the stabilised quadratic form (O(S²) per head), as the official Vision-LSTM code writes it.
- ``fused``: the same quadratic form with less (S, S) work (the stabiliser from a running maximum, the masked
  half never computed, scale and normaliser applied to S x D tensors).
- ``factored``: the quadratic form with no elementwise (S, S) work: the stabilised decay is a key factor times
  a query factor, carried by k and q, and the row sums come with the value product; what ``auto`` runs for
  short sequences on the CPU. fp32 and fp64 only: for bf16 and fp16 inputs it runs ``fused`` (q and k scaled by
  the factors and rounded to the input dtype lose several times the other forms' accuracy; see
  `_mlstm_torch.factor_range_limit`), as it does when the gates' spread would put the factors outside the
  dtype's range or while tracing for ONNX; under torch.compile it runs ``parallel``.
- ``chunkwise``: chunks of ``chunk_size`` tokens; the intra-chunk part is one batched quadratic form over all
  chunks, the inter-chunk (C, n, m) states are carried by a loop over chunks only. Memory is linear in S. Any S
  works: the sequence is zero-padded at the end, which cannot change causal outputs of the real tokens.
- ``recurrent``: step by step (a Python loop over tokens; the reference, and the inference form).
- ``triton``: the chunkwise form as Triton kernels (chunk states, then chunk outputs; fp32 states and gate
  math), exposed as the custom op ``lstmvision::mlstm_chunkwise_fwd`` (see `_mlstm_op`). Its backward
  recomputes through the PyTorch chunkwise form (no Triton backward kernel yet). CUDA tensors, or CPU tensors
  under ``TRITON_INTERPRET=1``; asked for anywhere else it raises. fp64 inputs run the PyTorch chunkwise.

``reverse=True`` reads the sequence backwards (token S-1 first), as if the inputs were flipped along S and the
output flipped back; ``parallel``, ``fused`` and ``factored`` do it without moving any data (upper-triangular
masks, cumulative sums from the end), the others flip.

All of them compute the same function; they differ only in where eps meets the stabiliser (≈1e-7 relative).
Precision policy, per input dtype (autocast is switched off inside, so it holds under `torch.autocast` too):

- fp64: everything in fp64.
- fp32: everything in fp32, but ``parallel``, ``fused`` and ``factored`` take the cumulative log forget gates
  and the log weights built from them in fp64 (except on mps), so that their differences do not cancel.
- bf16, fp16: q·k and the value products of the quadratic forms (``parallel``, ``fused``, the intra-chunk part
  of ``chunkwise``) run in the input dtype; the gate math (logsigmoid, cumulative sums, maxima, exponentials,
  the decay matrix), the normaliser and the recurrent states, with the products that build or read them
  (``recurrent`` throughout, ``chunkwise``'s inter-chunk part), are fp32 (the fp64 terms above stay fp64).
  ``factored`` runs ``fused``.

The output has the input dtype.

Backend choice: the ``backend`` argument, else the active choice of `lstmvision.ops.dispatch` (`set_backend`,
`use_backend`; initially ``LSTMVISION_MLSTM_BACKEND``), else ``auto``: up to ``PARALLEL_MAX_LEN`` tokens
factored on the CPU (which is fused for bf16/fp16 inputs) and fused on other devices (no GPU measurement yet;
factored syncs with the host once per call for its range check), chunkwise above. Triton is opt-in only (no
committed GPU measurement yet).
"""
from __future__ import annotations

from typing import Callable

import torch

from lstmvision.ops import _mlstm_kernels, _mlstm_op, dispatch
from lstmvision.ops._mlstm_torch import chunkwise, factored, fused, parallel, recurrent
from lstmvision.ops._triton_common import can_run, triton_available

ENV_VAR = dispatch.ENV_VARS["mlstm"]
PARALLEL_MAX_LEN = 256


def _triton(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    if q.dtype == torch.float64:  # the kernels are fp32/fp16/bf16
        return chunkwise(q, k, v, i, f, chunk_size=chunk_size, eps=eps)
    return _mlstm_op.mlstm_chunkwise_fwd(q, k, v, i, f, int(chunk_size), float(eps))


BACKENDS: dict[str, Callable[..., torch.Tensor]] = {
    "parallel": parallel,
    "fused": fused,
    "factored": factored,
    "chunkwise": chunkwise,
    "recurrent": recurrent,
    "triton": _triton,
    **_mlstm_kernels.BACKENDS,  # opt-in NXAI mlstm_kernels (lstmvision.ops._mlstm_kernels; never chosen by auto)
}
PYTORCH_BACKENDS = ("parallel", "fused", "factored", "chunkwise", "recurrent")
NATIVE_REVERSE = ("parallel", "fused", "factored")  # take reverse=True; the others get flipped inputs


def resolve_mlstm_backend(backend: str | None, seq_len: int, device: torch.device | str | None = None) -> str:
    """The backend a call uses: `backend`, else the active choice (`dispatch`), with 'auto' resolved by length
    and device: the quadratic form up to PARALLEL_MAX_LEN tokens, `factored` on the CPU (measured fastest there
    in fp32; it runs `fused` for bf16/fp16 inputs) and `fused` elsewhere (no GPU measurement yet, and `factored`
    syncs with the host once per call to check its range).

    With `device` given, 'triton' is checked to be runnable there (RuntimeError otherwise).
    """
    name = dispatch.requested("mlstm", backend)
    if name == "auto":
        if seq_len > PARALLEL_MAX_LEN:
            return "chunkwise"
        return "factored" if device is None or torch.device(device).type == "cpu" else "fused"
    if name == "triton" and device is not None and not can_run(device):
        raise RuntimeError(f"mLSTM backend 'triton' needs CUDA tensors (or CPU ones under TRITON_INTERPRET=1) and "
                           f"Triton installed; got {torch.device(device).type} tensors (triton importable: "
                           f"{triton_available()}). Use backend='auto' or 'chunkwise'.")
    if name in _mlstm_kernels.BACKENDS:  # ImportError naming the extra when missing; RuntimeError on a wrong device
        _mlstm_kernels.library() if device is None else _mlstm_kernels.require(name, device)
    return name


def mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    backend: str | None = None,
    chunk_size: int = 64,
    eps: float = 1e-6,
    reverse: bool = False,
) -> torch.Tensor:
    """Run the mLSTM over a whole sequence (backwards with `reverse`; see the module docstring); returns h,
    (B, NH, S, DV)."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"mlstm expects q, k (B, NH, S, DQK) and v (B, NH, S, DV); got {q.shape}, {k.shape}, {v.shape}")
    if i.shape != q.shape[:3] or f.shape != q.shape[:3]:
        raise ValueError(f"mlstm expects gate pre-activations i, f of shape {tuple(q.shape[:3])}; got {i.shape}, {f.shape}")
    name = resolve_mlstm_backend(backend, q.shape[2], q.device)
    if q.device.type in ("cuda", "cpu", "xpu", "mps") and torch.is_autocast_enabled(q.device.type):
        with torch.autocast(q.device.type, enabled=False):
            return _run(name, q, k, v, i, f, chunk_size, eps, reverse)
    return _run(name, q, k, v, i, f, chunk_size, eps, reverse)


def _run(name: str, q, k, v, i, f, chunk_size: int, eps: float, reverse: bool) -> torch.Tensor:
    fn = BACKENDS[name]
    if name in NATIVE_REVERSE:
        return fn(q, k, v, i, f, chunk_size=chunk_size, eps=eps, reverse=reverse)
    if not reverse:
        return fn(q, k, v, i, f, chunk_size=chunk_size, eps=eps)
    # (B, NH, S, ...) -> the same, sequence reversed
    q, k, v, i, f = (t.flip(2) for t in (q, k, v, i, f))
    return fn(q, k, v, i, f, chunk_size=chunk_size, eps=eps).flip(2)

__all__ = ["BACKENDS", "ENV_VAR", "NATIVE_REVERSE", "PARALLEL_MAX_LEN", "PYTORCH_BACKENDS", "mlstm", "resolve_mlstm_backend"]
