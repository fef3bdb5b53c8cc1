"""The mLSTM (xLSTM's matrix-memory LSTM) as one function with interchangeable backends.

    h = mlstm(q, k, v, i, f)      q, k: (B, NH, S, DQK)   v: (B, NH, S, DV)   i, f: (B, NH, S)   h: (B, NH, S, DV)

`i` and `f` are raw pre-activations: the input gate is exp(i), the forget gate sigmoid(f) (taken in log space
with logsigmoid), and q·k is scaled by DQK^-1/2. Per head and step t the recurrence is

    C_t = f_t C_{t-1} + i_t k_t v_tᵀ,   n_t = f_t n_{t-1} + i_t k_t,   h_t = C_tᵀ q_t / max(|n_tᵀ q_t|, 1)

stabilised by a log-space max state m (C and n are kept multiplied by exp(-m)), with eps added to the
normaliser. Backends:

- ``parallel``: the stabilised quadratic form (O(S²) per head; what Vision-LSTM trains with).
- ``chunkwise``: chunks of ``chunk_size`` tokens; the intra-chunk part is one batched quadratic form over all
  chunks, the inter-chunk (C, n, m) states are carried by a loop over chunks only. Memory is linear in S. Any S
  works: the sequence is zero-padded at the end, which cannot change causal outputs of the real tokens.
- ``recurrent``: step by step (a Python loop over tokens; the reference, and the inference form).
- ``triton``: the chunkwise form as Triton kernels (chunk states, then chunk outputs; fp32 states and gate
  math), exposed as the custom op ``lstmvision::mlstm_chunkwise_fwd`` (see `_mlstm_op`). Its backward
  recomputes through the PyTorch chunkwise form (no Triton backward kernel yet). CUDA tensors, or CPU tensors
  under ``TRITON_INTERPRET=1``; asked for anywhere else it raises. fp64 inputs run the PyTorch chunkwise.

All three compute the same function; they differ only in where eps meets the stabiliser (≈1e-7 relative).
Precision policy: q·k and the value products run in the input dtype; the gate math (logsigmoid, cumulative
sums, maxima, exponentials), the normaliser and the recurrent states are fp32 (fp64 inputs stay fp64). Autocast
is switched off inside, so this holds under `torch.autocast` too.

Backend choice: the ``backend`` argument, else the environment variable ``LSTMVISION_MLSTM_BACKEND``, else
``auto``: triton on CUDA tensors when Triton imports, otherwise parallel up to ``PARALLEL_MAX_LEN`` tokens and
chunkwise above (the pure-PyTorch default). ``LSTMVISION_KERNELS=reference`` (or `rnn2d.use_kernels("reference")`)
turns ``auto`` and ``triton`` into that pure-PyTorch default.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F

ENV_VAR = "LSTMVISION_MLSTM_BACKEND"
PARALLEL_MAX_LEN = 256


def _gate_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _parallel(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    S, dqk = q.shape[-2], q.shape[-1]
    gdt = _gate_dtype(q)
    logf = F.logsigmoid(f.to(gdt))
    # cumulative log forget gates in fp64 so that the (S, S) differences do not cancel catastrophically for
    # long sequences; F[t, j] = sum_{r=j+1..t} log sigmoid(f_r)
    acc = torch.float32 if q.device.type == "mps" else torch.float64  # mps has no fp64
    cum = torch.cumsum(logf.to(acc), dim=-1)
    log_d = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).to(gdt) + i.to(gdt).unsqueeze(-2)
    causal = torch.ones(S, S, dtype=torch.bool, device=q.device).tril_()
    log_d = log_d.masked_fill(~causal, float("-inf"))
    m = log_d.amax(dim=-1, keepdim=True)  # (B, NH, S, 1); the diagonal is always finite
    scores = (q @ k.transpose(-1, -2)).to(gdt) * (dqk**-0.5)
    c = scores * torch.exp(log_d - m)
    normaliser = torch.maximum(c.sum(dim=-1, keepdim=True).abs(), torch.exp(-m)) + eps
    return ((c / normaliser).to(v.dtype) @ v).to(q.dtype)


def _chunkwise(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    B, NH, S, dqk = q.shape
    dv = v.shape[-1]
    gdt = _gate_dtype(q)
    L = max(1, min(int(chunk_size), S))
    nc = -(-S // L)
    pad = nc * L - S
    if pad:  # zeros at the end: later tokens never reach earlier (causal) outputs
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        i, f = (F.pad(t, (0, pad)) for t in (i, f))
    q = q.reshape(B, NH, nc, L, dqk) * (dqk**-0.5)
    k = k.reshape(B, NH, nc, L, dqk)
    v = v.reshape(B, NH, nc, L, dv)
    ig = i.to(gdt).reshape(B, NH, nc, L)
    b = torch.cumsum(F.logsigmoid(f.to(gdt)).reshape(B, NH, nc, L), dim=-1)  # inclusive, inside each chunk
    g = b[..., -1]  # (B, NH, nc): total log decay of each chunk

    # --- each chunk's own contribution to the state at its end, with a chunk-local stabiliser (vectorised)
    a = g.unsqueeze(-1) - b + ig
    a_max = a.amax(dim=-1)
    kw = k.to(gdt) * torch.exp(a - a_max.unsqueeze(-1)).unsqueeze(-1)  # (B, NH, nc, L, dqk)
    c_loc = kw.transpose(-1, -2) @ v.to(gdt)  # (B, NH, nc, dqk, dv)
    n_loc = kw.sum(dim=-2)  # (B, NH, nc, dqk)

    # --- inter-chunk recurrence: a loop over chunks only, on (dqk, dv) states
    c_state = q.new_zeros(B, NH, dqk, dv, dtype=gdt)
    n_state = q.new_zeros(B, NH, dqk, dtype=gdt)
    m_state = q.new_zeros(B, NH, dtype=gdt)
    cs, ns, ms = [c_state], [n_state], [m_state]
    for c in range(nc - 1):
        m_new = torch.maximum(g[..., c] + m_state, a_max[..., c])
        decay = torch.exp(g[..., c] + m_state - m_new)
        scale = torch.exp(a_max[..., c] - m_new)
        c_state = decay[..., None, None] * c_state + scale[..., None, None] * c_loc[:, :, c]
        n_state = decay[..., None] * n_state + scale[..., None] * n_loc[:, :, c]
        m_state = m_new
        cs.append(c_state), ns.append(n_state), ms.append(m_state)
    c_prev = torch.stack(cs, dim=2)  # (B, NH, nc, dqk, dv): state before each chunk
    n_prev = torch.stack(ns, dim=2)  # (B, NH, nc, dqk)
    m_prev = torch.stack(ms, dim=2)  # (B, NH, nc)

    # --- outputs: intra-chunk quadratic form + the carried state, under a common stabiliser
    log_d = b.unsqueeze(-1) - b.unsqueeze(-2) + ig.unsqueeze(-2)  # (B, NH, nc, L, L)
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril_()
    log_d = log_d.masked_fill(~causal, float("-inf"))
    m_inter = b + m_prev.unsqueeze(-1)  # (B, NH, nc, L)
    m = torch.maximum(m_inter, log_d.amax(dim=-1))
    w = (q @ k.transpose(-1, -2)).to(gdt) * torch.exp(log_d - m.unsqueeze(-1))
    inter = torch.exp(m_inter - m)
    qg = q.to(gdt)
    num = (w.to(v.dtype) @ v).to(gdt) + inter.unsqueeze(-1) * (qg @ c_prev)
    den = w.sum(dim=-1) + inter * (qg @ n_prev.unsqueeze(-1)).squeeze(-1)
    den = torch.maximum(den.abs(), torch.exp(-m)) + eps
    h = (num / den.unsqueeze(-1)).reshape(B, NH, nc * L, dv)
    return h[:, :, :S].to(v.dtype)


def _recurrent(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    B, NH, S, dqk = q.shape
    dv = v.shape[-1]
    gdt = _gate_dtype(q)
    qg, kg, vg = q.to(gdt), k.to(gdt) * (dqk**-0.5), v.to(gdt)
    logf = F.logsigmoid(f.to(gdt))
    ig = i.to(gdt)
    c_state = qg.new_zeros(B, NH, dqk, dv)
    n_state = qg.new_zeros(B, NH, dqk)
    m_state = qg.new_zeros(B, NH)
    out = []
    for t in range(S):
        m_new = torch.maximum(logf[..., t] + m_state, ig[..., t])
        fp = torch.exp(logf[..., t] + m_state - m_new)
        ip = torch.exp(ig[..., t] - m_new)
        kt, vt, qt = kg[:, :, t], vg[:, :, t], qg[:, :, t]
        c_state = fp[..., None, None] * c_state + ip[..., None, None] * (kt.unsqueeze(-1) * vt.unsqueeze(-2))
        n_state = fp[..., None] * n_state + ip[..., None] * kt
        m_state = m_new
        num = (qt.unsqueeze(-2) @ c_state).squeeze(-2)
        den = torch.maximum((qt * n_state).sum(-1).abs(), torch.exp(-m_state)) + eps
        out.append(num / den.unsqueeze(-1))
    return torch.stack(out, dim=2).to(v.dtype)


def _triton(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    if q.dtype == torch.float64:  # the kernels are fp32/fp16/bf16
        return _chunkwise(q, k, v, i, f, chunk_size=chunk_size, eps=eps)
    return _mlstm_op.mlstm_chunkwise_fwd(q, k, v, i, f, int(chunk_size), float(eps))


BACKENDS: dict[str, Callable[..., torch.Tensor]] = {
    "parallel": _parallel,
    "chunkwise": _chunkwise,
    "recurrent": _recurrent,
    "triton": _triton,
}
PYTORCH_BACKENDS = ("parallel", "chunkwise", "recurrent")


def resolve_backend(backend: str | None, seq_len: int, device: torch.device | str | None = None) -> str:
    """The backend a call uses: `backend`, else $LSTMVISION_MLSTM_BACKEND, else 'auto'.

    With `device` given, 'auto' picks triton on CUDA (Triton importable) and 'triton' is checked to be runnable
    there (RuntimeError otherwise). LSTMVISION_KERNELS=reference maps 'auto' and 'triton' to the PyTorch default.
    """
    name = backend or os.environ.get(ENV_VAR) or "auto"
    name = name.strip().lower()
    if name != "auto" and name not in BACKENDS:
        src = "backend argument" if backend else f"${ENV_VAR}"
        raise ValueError(f"unknown mLSTM backend {name!r} (from the {src}); choose one of auto, {', '.join(BACKENDS)}")
    if name in ("auto", "triton") and _kernels_request() == "reference":
        name = "auto-pytorch"
    dev = None if device is None else torch.device(device)
    if name == "auto" and dev is not None and dev.type == "cuda" and _mlstm_op.triton_available():
        return "triton"
    if name in ("auto", "auto-pytorch"):
        return "parallel" if seq_len <= PARALLEL_MAX_LEN else "chunkwise"
    if name == "triton" and dev is not None and not _mlstm_op.can_run(dev):
        raise RuntimeError(f"mLSTM backend 'triton' needs CUDA tensors (or CPU ones under TRITON_INTERPRET=1) and "
                           f"Triton installed; got {dev.type} tensors (triton importable: "
                           f"{_mlstm_op.triton_available()}). Use backend='auto' or 'chunkwise'.")
    return name


def _kernels_request() -> str:
    from lstmvision.ops.rnn2d import requested_backend  # LSTMVISION_KERNELS / use_kernels, shared by all ops

    return requested_backend()


def mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    backend: str | None = None,
    chunk_size: int = 64,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Run the mLSTM over a whole sequence (see the module docstring); returns h, (B, NH, S, DV)."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"mlstm expects q, k (B, NH, S, DQK) and v (B, NH, S, DV); got {q.shape}, {k.shape}, {v.shape}")
    if i.shape != q.shape[:3] or f.shape != q.shape[:3]:
        raise ValueError(f"mlstm expects gate pre-activations i, f of shape {tuple(q.shape[:3])}; got {i.shape}, {f.shape}")
    fn = BACKENDS[resolve_backend(backend, q.shape[2], q.device)]
    if q.device.type in ("cuda", "cpu", "xpu", "mps") and torch.is_autocast_enabled(q.device.type):
        with torch.autocast(q.device.type, enabled=False):
            return fn(q, k, v, i, f, chunk_size=chunk_size, eps=eps)
    return fn(q, k, v, i, f, chunk_size=chunk_size, eps=eps)


from lstmvision.ops import _mlstm_op  # noqa: E402  (registers the custom ops; imports no triton)

__all__ = ["BACKENDS", "ENV_VAR", "PARALLEL_MAX_LEN", "PYTORCH_BACKENDS", "mlstm", "resolve_backend"]
