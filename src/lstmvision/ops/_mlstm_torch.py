"""The PyTorch forms of the mLSTM (`parallel`, `fused`, `factored`, `chunkwise`, `recurrent`); see
`lstmvision.ops.mlstm` for the math, the shapes and the precision policy. Shared by the public op and the Triton op's backward."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gate_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    """Cumulative log gates in fp64, so that their differences do not cancel for long sequences (mps has none)."""
    return torch.float32 if x.device.type == "mps" else torch.float64


def _cumsum(x: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Inclusive cumulative sum along the sequence, from the end when `reverse` (on (B, NH, S) vectors only)."""
    return torch.cumsum(x.flip(-1), dim=-1).flip(-1) if reverse else torch.cumsum(x, dim=-1)


def _causal(S: int, device: torch.device, reverse: bool) -> torch.Tensor:
    """(S, S) bool: which key j each query t sees (j <= t; j >= t when the sequence is read backwards)."""
    ones = torch.ones(S, S, dtype=torch.bool, device=device)
    return ones.triu_() if reverse else ones.tril_()


def parallel(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6, reverse: bool = False) -> torch.Tensor:
    S, dqk = q.shape[-2], q.shape[-1]
    gdt = gate_dtype(q)
    logf = F.logsigmoid(f.to(gdt))
    # F[t, j] = sum_{r=j+1..t} log sigmoid(f_r) (read backwards: sum_{r=t..j-1}), from fp64 cumulative sums
    cum = _cumsum(logf.to(_acc_dtype(q)), reverse)
    log_d = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).to(gdt) + i.to(gdt).unsqueeze(-2)
    log_d = log_d.masked_fill(~_causal(S, q.device, reverse), float("-inf"))
    m = log_d.amax(dim=-1, keepdim=True)  # (B, NH, S, 1); the diagonal is always finite
    # k (B, NH, S, dqk) -> (B, NH, dqk, S); scores (B, NH, S, S)
    scores = (q @ k.transpose(-1, -2)).to(gdt) * (dqk**-0.5)
    c = scores * torch.exp(log_d - m)
    normaliser = torch.maximum(c.sum(dim=-1, keepdim=True).abs(), torch.exp(-m)) + eps
    return ((c / normaliser).to(v.dtype) @ v).to(q.dtype)


def fused(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6, reverse: bool = False) -> torch.Tensor:
    """`parallel` with less work on the (S, S) matrices, same function: the row stabiliser comes from a running
    maximum, m_t = cum_t + max_{j<=t}(i_j - cum_j), so the decay matrix is built once as exp(a_j - M_t) from two
    vectors (no (S, S) log-decay, no row max); the masked half is written as zeros, never computed then masked;
    the q·k scale rides in the decay's exponent and the normaliser is applied to the output (S x DV), not to (S, S)
    matrices."""
    S, dqk = q.shape[-2], q.shape[-1]
    gdt = gate_dtype(q)
    causal = _causal(S, q.device, reverse)
    cum, a, run_max = _log_weights(i, f, causal, reverse)
    scaled = a + math.log(dqk**-0.5)  # the q·k scale, folded into the exponent (not rounded into q)
    # (B, NH, 1, S) - (B, NH, S, 1) -> (B, NH, S, S): log decay (+ log scale) minus the row stabiliser
    decay = torch.where(causal, (scaled.unsqueeze(-2) - run_max.unsqueeze(-1)).to(gdt), float("-inf")).exp()
    m = (cum + run_max).to(gdt)  # (B, NH, S)
    # k (B, NH, S, dqk) -> (B, NH, dqk, S); c (B, NH, S, S)
    c = (q @ k.transpose(-1, -2)).to(gdt) * decay
    normaliser = torch.maximum(c.sum(dim=-1).abs(), torch.exp(-m)) + eps  # (B, NH, S)
    return ((c.to(v.dtype) @ v).to(gdt) / normaliser.unsqueeze(-1)).to(q.dtype)


def _log_weights(i: torch.Tensor, f: torch.Tensor, causal: torch.Tensor | None, reverse: bool):
    """The gate terms of the quadratic form, (B, NH, S) each, in fp64: cum_t (cumulative log forget gates),
    a_j = i_j - cum_j (the log weight of key j relative to the row's cum_t) and run_max_t = max of a_j over the
    keys query t sees, so that log D_tj - m_t = a_j - run_max_t."""
    acc = _acc_dtype(i)
    cum = _cumsum(F.logsigmoid(f.to(gate_dtype(i))).to(acc), reverse)
    a = i.to(acc) - cum
    if torch.jit.is_tracing():  # ONNX has no cummax: the same maximum over the causal (S, S) mask
        run_max = torch.where(causal, a.unsqueeze(-2), float("-inf")).amax(dim=-1)
    else:
        run_max = torch.cummax(a.flip(-1), dim=-1).values.flip(-1) if reverse else torch.cummax(a, dim=-1).values
    return cum, a, run_max


FACTORED_DTYPES = (torch.float32, torch.float64)


def factor_range_limit(dtype: torch.dtype) -> float:
    """The largest spread of the key log weights `factored` takes in `dtype`: two thirds of the exponent range,
    so that neither factor overflows and the factor of any key that matters stays a normal number. 0 (never) for
    bf16 and fp16: q and k scaled and rounded to the input dtype element by element, then their product rounded,
    carry a q·k error relative to sum_d |q_d k_d| where the other forms round q·k once; on check-kernels' mLSTM
    problem in bf16 that was 8x `parallel`'s forward error (4.5x with the factors applied in fp32). Products in
    fp32 would be accurate but break the precision policy (q·k and value products in the input dtype)."""
    return 2 / 3 * math.log(torch.finfo(dtype).max) if dtype in FACTORED_DTYPES else 0.0


def factored(q, k, v, i, f, chunk_size: int = 64, eps: float = 1e-6, reverse: bool = False) -> torch.Tensor:
    """`fused` with no elementwise (S, S) work besides zeroing the masked entries: the decay exp(a_j - run_max_t)
    is the product of a key factor exp(a_j - top) <= 1 and a query factor exp(top - run_max_t) >= 1 (top: the
    largest a_j of the sequence), so it rides on k and q and the masked q·k product is all the (S, S) work; the
    row sums the normaliser needs come from the same product with a column of ones appended to v. Exact in exact
    arithmetic; in floating point the factors are safe while the spread of a_j stays within `factor_range_limit`
    (59 in fp32; ViL-T as initialised: 9.5 at 224 px, 38 at 448 px). Beyond it, for bf16 and fp16 inputs (not
    accurate there: see `factor_range_limit`) and under ONNX tracing (which takes no data-dependent branch) it runs
    `fused`; under torch.compile, `parallel` (inductor fuses its (S, S) work: compiled, the two forms measured
    equal on ViL-T, and the official form needs no branch). The queries go in blocks of about `chunk_size`, each
    multiplied with the keys it can see only, which skips most of the masked half of the product."""
    gdt = gate_dtype(q)
    if torch.compiler.is_compiling():  # compiled, `parallel` fuses its (S, S) work as well as this (measured)
        return parallel(q, k, v, i, f, chunk_size, eps, reverse)
    limit = factor_range_limit(q.dtype)
    if limit == 0.0 or torch.jit.is_tracing():
        return fused(q, k, v, i, f, chunk_size, eps, reverse)
    dqk = q.shape[-1]
    cum, a, run_max = _log_weights(i, f, None, reverse)
    top = a.amax(dim=-1, keepdim=True)  # (B, NH, 1)
    if (top - a.amin(dim=-1, keepdim=True)).max().item() > limit:
        return fused(q, k, v, i, f, chunk_size, eps, reverse)
    key_w = torch.exp(a - top).to(q.dtype)  # (B, NH, S), <= 1
    query_w = torch.exp(top - run_max + math.log(dqk**-0.5)).to(q.dtype)  # (B, NH, S), the q·k scale folded in
    qs, ks = q * query_w.unsqueeze(-1), k * key_w.unsqueeze(-1)
    vs = torch.cat([v, v.new_ones(v.shape[:-1] + (1,))], dim=-1)  # [v | 1] (B, NH, S, dv + 1): row sums too
    out = torch.cat([_visible_product(qs_r, ks, vs, lo, reverse) for lo, qs_r in _row_blocks(qs, chunk_size)], dim=2)
    stab = torch.exp(-(cum + run_max)).to(gdt)  # exp(-m_t), the normaliser's floor
    normaliser = torch.maximum(out[..., -1].to(gdt).abs(), stab) + eps  # (B, NH, S)
    return (out[..., :-1].to(gdt) / normaliser.unsqueeze(-1)).to(q.dtype)


def _row_blocks(x: torch.Tensor, rows: int):
    """(start, block) pairs: x (B, NH, S, d) in about S / rows blocks of consecutive queries."""
    S = x.shape[2]
    n = max(1, round(S / max(1, rows)))
    size = -(-S // n)
    return zip(range(0, S, size), x.split(size, dim=2))


def _visible_product(qs: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor, lo: int, reverse: bool) -> torch.Tensor:
    """masked(qs ksᵀ) vs for the queries lo .. lo + L - 1 against only the keys they can see (0 .. lo + L - 1, or
    lo .. S - 1 read backwards), so that the half of the (S, S) product the mask would zero is mostly not computed."""
    if reverse:
        ks, vs = ks[:, :, lo:], vs[:, :, lo:]
        # (B, NH, L, dqk) x (B, NH, dqk, S - lo) -> (B, NH, L, S - lo): key j >= query t
        return (qs @ ks.transpose(-1, -2)).triu_() @ vs
    hi = lo + qs.shape[2]
    ks, vs = ks[:, :, :hi], vs[:, :, :hi]
    # (B, NH, L, dqk) x (B, NH, dqk, hi) -> (B, NH, L, hi): key j <= query t = lo + row
    return (qs @ ks.transpose(-1, -2)).tril_(lo) @ vs


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
