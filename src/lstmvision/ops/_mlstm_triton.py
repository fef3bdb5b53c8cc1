"""Triton kernels of the chunkwise mLSTM forward (imported on first use by `lstmvision.ops._mlstm_op`).

Written from the math of the xLSTM paper / TFLA chunkwise form (spec §2.3), not derived from mlstm_kernels.
The caller pads the sequence at the end to a whole number of chunks of L tokens (zeros: causal outputs of the
real tokens cannot change) and passes the gate pre-activations already prepared in fp32 (per (B*NH) row of Sp
tokens): `b`, the inclusive within-chunk cumsum of logsigmoid(f), and `ig`, the raw input pre-activation.

- `mlstm_states_kernel`, grid (B*NH, DQK tiles, DV tiles): one program walks the chunks in order and keeps its
  (BK, BV) tile of the fp32 matrix memory C, the n tile and the max state m on chip; it writes the state
  *before* each chunk (C_{k-1}, n_{k-1}, m_{k-1}), which is all the output kernel needs.
- `mlstm_outputs_kernel`, grid (B*NH*nc, DV tiles): one program per chunk and DV tile; it accumulates q·kᵀ,
  q·C_{k-1} and q·n_{k-1} over DQK tiles (masked: head dims need not be powers of 2), applies the common
  stabiliser m_τ = max(b_τ + m_{k-1}, max_σ log D_τσ) and the normaliser max(|den|, exp(-m_τ)) + eps.
"""
import triton
import triton.language as tl

from lstmvision.ops._triton_jit import dot


@triton.jit
def mlstm_states_kernel(k_ptr, v_ptr, b_ptr, i_ptr, c_ptr, n_ptr, m_ptr, Sp, NC, DQK, DV,
                        IEEE: tl.constexpr, L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    bh = tl.program_id(0)
    pk = tl.program_id(1)
    pv = tl.program_id(2)
    offs_l = tl.arange(0, L)
    offs_k = pk * BK + tl.arange(0, BK)
    offs_v = pv * BV + tl.arange(0, BV)
    mk = offs_k < DQK
    mv = offs_v < DV
    c = tl.zeros((BK, BV), dtype=tl.float32)
    n = tl.zeros((BK,), dtype=tl.float32)
    m = tl.zeros((1,), dtype=tl.float32)
    for ci in range(NC):
        # state before chunk ci
        sb = (bh * NC + ci)
        tl.store(c_ptr + sb * DQK * DV + offs_k[:, None] * DV + offs_v[None, :], c, mask=mk[:, None] & mv[None, :])
        if pv == 0:
            tl.store(n_ptr + sb * DQK + offs_k, n, mask=mk)
            if pk == 0:
                tl.store(m_ptr + sb + tl.arange(0, 1), m)
        if ci + 1 < NC:  # the last chunk's own contribution is never needed
            tok = ci * L + offs_l
            b = tl.load(b_ptr + bh * Sp + tok)
            ig = tl.load(i_ptr + bh * Sp + tok)
            g = tl.load(b_ptr + bh * Sp + ci * L + L - 1)
            a = g - b + ig
            m_new = tl.maximum(g + m, tl.max(a, axis=0))
            kt = tl.load(k_ptr + (bh * Sp + tok)[:, None] * DQK + offs_k[None, :], mask=mk[None, :], other=0.0)
            vt = tl.load(v_ptr + (bh * Sp + tok)[:, None] * DV + offs_v[None, :], mask=mv[None, :], other=0.0)
            kw = kt.to(tl.float32) * tl.exp(a - m_new)[:, None]  # (L, BK)
            upd = dot(tl.trans(kw), vt.to(tl.float32), IEEE)
            decay = tl.exp(g + m - m_new)
            c = decay * c + upd
            n = decay * n + tl.sum(kw, axis=0)
            m = m_new


@triton.jit
def mlstm_outputs_kernel(q_ptr, k_ptr, v_ptr, b_ptr, i_ptr, c_ptr, n_ptr, m_ptr, h_ptr, Sp, NC, DQK, DV,
                         scale, eps, IEEE: tl.constexpr, L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    pid = tl.program_id(0)  # (bh, chunk)
    pv = tl.program_id(1)
    bh = pid // NC
    ci = pid % NC
    offs_l = tl.arange(0, L)
    offs_v = pv * BV + tl.arange(0, BV)
    mv = offs_v < DV
    tok = ci * L + offs_l
    rows = bh * Sp + tok
    b = tl.load(b_ptr + rows)
    ig = tl.load(i_ptr + rows)
    m_prev = tl.load(m_ptr + pid)
    # within-chunk log decay matrix, causal
    causal = offs_l[:, None] >= offs_l[None, :]
    log_d = tl.where(causal, b[:, None] - b[None, :] + ig[None, :], float("-inf"))
    m_inter = b + m_prev
    m = tl.maximum(m_inter, tl.max(log_d, axis=1))
    s = tl.zeros((L, L), dtype=tl.float32)
    qc = tl.zeros((L, BV), dtype=tl.float32)
    qn = tl.zeros((L,), dtype=tl.float32)
    for k0 in range(0, DQK, BK):
        offs_k = k0 + tl.arange(0, BK)
        mk = offs_k < DQK
        qt = tl.load(q_ptr + rows[:, None] * DQK + offs_k[None, :], mask=mk[None, :], other=0.0)
        kt = tl.load(k_ptr + rows[:, None] * DQK + offs_k[None, :], mask=mk[None, :], other=0.0)
        ct = tl.load(c_ptr + pid * DQK * DV + offs_k[:, None] * DV + offs_v[None, :],
                     mask=mk[:, None] & mv[None, :], other=0.0)
        nt = tl.load(n_ptr + pid * DQK + offs_k, mask=mk, other=0.0)
        qf = qt.to(tl.float32)
        s += dot(qt, tl.trans(kt), IEEE)
        qc += dot(qf, ct, IEEE)
        qn += tl.sum(qf * nt[None, :], axis=1)
    w = s * scale * tl.exp(log_d - m[:, None])  # masked entries: exp(-inf) = 0
    inter = tl.exp(m_inter - m)
    vt = tl.load(v_ptr + rows[:, None] * DV + offs_v[None, :], mask=mv[None, :], other=0.0)
    num = dot(w.to(vt.dtype), vt, IEEE)  # fp32 inputs (IEEE): the cast is a no-op
    num += (inter * scale)[:, None] * qc
    den = tl.sum(w, axis=1) + inter * scale * qn
    den = tl.maximum(tl.abs(den), tl.exp(-m)) + eps
    h = num / den[:, None]
    tl.store(h_ptr + rows[:, None] * DV + offs_v[None, :], h.to(h_ptr.dtype.element_ty), mask=mv[None, :])
