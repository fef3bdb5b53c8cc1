"""The PyTorch forms of the mLSTM (`parallel`, `fused`, `chunkwise`, `recurrent`); see `lstmvision.ops.mlstm` for the
math, the shapes and the precision policy. Shared by the public op and the Triton op's backward."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gate_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def parallel(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    S, dqk = q.shape[-2], q.shape[-1]
    gdt = gate_dtype(q)
    logf = F.logsigmoid(f.to(gdt))
    # cumulative log forget gates in fp64 so that the (S, S) differences do not cancel catastrophically for
    # long sequences; F[t, j] = sum_{r=j+1..t} log sigmoid(f_r)
    acc = torch.float32 if q.device.type == "mps" else torch.float64  # mps has no fp64
    cum = torch.cumsum(logf.to(acc), dim=-1)
    log_d = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).to(gdt) + i.to(gdt).unsqueeze(-2)
    causal = torch.ones(S, S, dtype=torch.bool, device=q.device).tril_()
    log_d = log_d.masked_fill(~causal, float("-inf"))
    m = log_d.amax(dim=-1, keepdim=True)  # (B, NH, S, 1); the diagonal is always finite
    # k (B, NH, S, dqk) -> (B, NH, dqk, S); scores (B, NH, S, S)
    scores = (q @ k.transpose(-1, -2)).to(gdt) * (dqk**-0.5)
    c = scores * torch.exp(log_d - m)
    normaliser = torch.maximum(c.sum(dim=-1, keepdim=True).abs(), torch.exp(-m)) + eps
    return ((c / normaliser).to(v.dtype) @ v).to(q.dtype)


def fused(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    """`parallel` with less work on the (S, S) matrices, same function: the row stabiliser comes from a running
    maximum, m_t = cum_t + max_{j<=t}(i_j - cum_j), so the decay matrix is built once as exp(a_j - M_t) from two
    vectors (no (S, S) log-decay, no row max); the masked half is written as zeros, never computed then masked;
    the q·k scale rides in the decay's exponent and the normaliser is applied to the output (S x DV), not to (S, S)
    matrices."""
    S, dqk = q.shape[-2], q.shape[-1]
    gdt = gate_dtype(q)
    acc = torch.float32 if q.device.type == "mps" else torch.float64  # as in `parallel`: no cancellation
    cum = torch.cumsum(F.logsigmoid(f.to(gdt)).to(acc), dim=-1)  # (B, NH, S)
    a = i.to(acc) - cum  # (B, NH, S): log weight of key j, relative to the row's cum_t
    causal = torch.ones(S, S, dtype=torch.bool, device=q.device).tril_()
    if torch.jit.is_tracing():  # ONNX has no cummax: the same maximum over the causal (S, S) mask
        run_max = torch.where(causal, a.unsqueeze(-2), float("-inf")).amax(dim=-1)
    else:
        run_max = torch.cummax(a, dim=-1).values  # (B, NH, S): max_{j<=t} a_j
    scaled = a + math.log(dqk**-0.5)  # the q·k scale, folded into the exponent (not rounded into q)
    # (B, NH, 1, S) - (B, NH, S, 1) -> (B, NH, S, S): log decay (+ log scale) minus the row stabiliser
    decay = torch.where(causal, (scaled.unsqueeze(-2) - run_max.unsqueeze(-1)).to(gdt), float("-inf")).exp()
    m = (cum + run_max).to(gdt)  # (B, NH, S)
    # k (B, NH, S, dqk) -> (B, NH, dqk, S); c (B, NH, S, S)
    c = (q @ k.transpose(-1, -2)).to(gdt) * decay
    normaliser = torch.maximum(c.sum(dim=-1).abs(), torch.exp(-m)) + eps  # (B, NH, S)
    return ((c.to(v.dtype) @ v).to(gdt) / normaliser.unsqueeze(-1)).to(q.dtype)


def chunkwise(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    B, NH, S, dqk = q.shape
    dv = v.shape[-1]
    gdt = gate_dtype(q)
    L = max(1, min(int(chunk_size), S))
    nc = -(-S // L)
    pad = nc * L - S
    if pad:  # zeros at the end: later tokens never reach earlier (causal) outputs
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        i, f = (F.pad(t, (0, pad)) for t in (i, f))
    # (B, NH, nc*L, dqk) -> (B, NH, nc, L, dqk)
    q = q.reshape(B, NH, nc, L, dqk)  # scaled by dqk^-0.5 in the gate dtype below, not in bf16/fp16
    k = k.reshape(B, NH, nc, L, dqk)  # (B, NH, nc*L, dqk) -> (B, NH, nc, L, dqk)
    v = v.reshape(B, NH, nc, L, dv)  # (B, NH, nc*L, dv) -> (B, NH, nc, L, dv)
    ig = i.to(gdt).reshape(B, NH, nc, L)  # (B, NH, nc*L) -> (B, NH, nc, L)
    # (B, NH, nc*L) -> (B, NH, nc, L)
    b = torch.cumsum(F.logsigmoid(f.to(gdt)).reshape(B, NH, nc, L), dim=-1)  # inclusive, inside each chunk
    g = b[..., -1]  # (B, NH, nc): total log decay of each chunk

    # --- each chunk's own contribution to the state at its end, with a chunk-local stabiliser (vectorised)
    a = g.unsqueeze(-1) - b + ig
    a_max = a.amax(dim=-1)
    kw = k.to(gdt) * torch.exp(a - a_max.unsqueeze(-1)).unsqueeze(-1)  # (B, NH, nc, L, dqk)
    c_loc = kw.transpose(-1, -2) @ v.to(gdt)  # (B, NH, nc, L, dqk) -> (B, NH, nc, dqk, L); (B, NH, nc, dqk, dv)
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
    # k (B, NH, nc, L, dqk) -> (B, NH, nc, dqk, L); w (B, NH, nc, L, L)
    w = (q @ k.transpose(-1, -2)).to(gdt) * (dqk**-0.5) * torch.exp(log_d - m.unsqueeze(-1))
    inter = torch.exp(m_inter - m)
    qg = q.to(gdt) * (dqk**-0.5)
    num = (w.to(v.dtype) @ v).to(gdt) + inter.unsqueeze(-1) * (qg @ c_prev)
    den = w.sum(dim=-1) + inter * (qg @ n_prev.unsqueeze(-1)).squeeze(-1)
    den = torch.maximum(den.abs(), torch.exp(-m)) + eps
    h = (num / den.unsqueeze(-1)).reshape(B, NH, nc * L, dv)  # (B, NH, nc, L, dv) -> (B, NH, nc*L, dv)
    return h[:, :, :S].to(v.dtype)


def recurrent(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6) -> torch.Tensor:
    B, NH, S, dqk = q.shape
    dv = v.shape[-1]
    gdt = gate_dtype(q)
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
