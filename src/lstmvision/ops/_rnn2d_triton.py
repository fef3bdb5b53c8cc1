"""Triton kernels of the LSTM recurrence (imported on first use by `lstmvision.ops.rnn2d`).

Forward: one program per (block of BLOCK_N sequences, direction r); it loads the four (D x D) recurrent
weight tiles once, keeps h and c in fp32 registers and loops over all T steps (persistent over time), reading
the precomputed input gates and writing h (and c when a backward will follow).
Backward: the same grid walks the run order backwards, recomputes the gates from x-gates, h_prev and the
weights (nothing but c is stored), and writes the pre-activation gate gradients; dh is carried on chip.
"""
import triton
import triton.language as tl

from lstmvision.ops._triton_jit import dot as _dot


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _load_w(w_ptr, r, k, D, offs_in, offs_out, mask_w):
    # (DP_in, DP_out) tile: [j, i] = w_hh[r, k*D + i, j]
    ptr = w_ptr + r * (4 * D * D) + (k * D + offs_out[None, :]) * D + offs_in[:, None]
    return tl.load(ptr, mask=mask_w, other=0.0)


@triton.jit
def _preactivation(xb, k, D, mask, hq, w, IEEE: tl.constexpr):
    # gate k: the precomputed input projection plus h_{t-1} @ W_hh[k]
    return tl.load(xb + k * D, mask=mask, other=0.0).to(tl.float32) + _dot(hq, w, IEEE)


@triton.jit
def lstm_fwd_kernel(xs_ptr, w_ptr, hs_ptr, cs_ptr, T, R, N, D, NF,
                    SAVE: tl.constexpr, IEEE: tl.constexpr,
                    BLOCK_N: tl.constexpr, DP: tl.constexpr):
    pid_n = tl.program_id(0)
    r = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, DP)
    mask_n = offs_n < N
    mask_d = offs_d < D
    mask = mask_n[:, None] & mask_d[None, :]
    mask_w = mask_d[:, None] & mask_d[None, :]
    # recurrent weights stay on chip for the whole sequence (loaded once, reused every step)
    w_i = _load_w(w_ptr, r, 0, D, offs_d, offs_d, mask_w)
    w_f = _load_w(w_ptr, r, 1, D, offs_d, offs_d, mask_w)
    w_g = _load_w(w_ptr, r, 2, D, offs_d, offs_d, mask_w)
    w_o = _load_w(w_ptr, r, 3, D, offs_d, offs_d, mask_w)
    h = tl.zeros((BLOCK_N, DP), dtype=tl.float32)
    c = tl.zeros((BLOCK_N, DP), dtype=tl.float32)
    flip = (r >= NF).to(tl.int32)  # 1: this direction runs from T-1 down to 0
    for s in range(T):
        t = s + (T - 1 - 2 * s) * flip
        row = ((t * R + r) * N + offs_n)[:, None]
        xb = xs_ptr + row * (4 * D) + offs_d[None, :]
        hq = h.to(w_i.dtype)
        a_i = _preactivation(xb, 0, D, mask, hq, w_i, IEEE)
        a_f = _preactivation(xb, 1, D, mask, hq, w_f, IEEE)
        a_g = _preactivation(xb, 2, D, mask, hq, w_g, IEEE)
        a_o = _preactivation(xb, 3, D, mask, hq, w_o, IEEE)
        c = tl.sigmoid(a_f) * c + tl.sigmoid(a_i) * _tanh(a_g)
        h = tl.sigmoid(a_o) * _tanh(c)
        h = tl.where(mask, h, 0.0)
        c = tl.where(mask, c, 0.0)
        hrow = row * D + offs_d[None, :]
        tl.store(hs_ptr + hrow, h.to(hs_ptr.dtype.element_ty), mask=mask)
        if SAVE:
            tl.store(cs_ptr + hrow, c, mask=mask)


@triton.jit
def lstm_bwd_kernel(dhs_ptr, xs_ptr, w_ptr, hs_ptr, cs_ptr, dxs_ptr, T, R, N, D, NF,
                    IEEE: tl.constexpr, BLOCK_N: tl.constexpr, DP: tl.constexpr):
    pid_n = tl.program_id(0)
    r = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, DP)
    mask_n = offs_n < N
    mask_d = offs_d < D
    mask = mask_n[:, None] & mask_d[None, :]
    mask_w = mask_d[:, None] & mask_d[None, :]
    w_i = _load_w(w_ptr, r, 0, D, offs_d, offs_d, mask_w)
    w_f = _load_w(w_ptr, r, 1, D, offs_d, offs_d, mask_w)
    w_g = _load_w(w_ptr, r, 2, D, offs_d, offs_d, mask_w)
    w_o = _load_w(w_ptr, r, 3, D, offs_d, offs_d, mask_w)
    dh = tl.zeros((BLOCK_N, DP), dtype=tl.float32)
    dc = tl.zeros((BLOCK_N, DP), dtype=tl.float32)
    flip = (r >= NF).to(tl.int32)
    for s in range(T):
        # walk the run order backwards: step index q = T-1-s of this direction
        q = T - 1 - s
        t = q + (T - 1 - 2 * q) * flip
        tp = t - 1 + 2 * flip  # time index of the previous step in run order
        has_prev = (offs_n[:, None] * 0 + q) > 0  # as a tensor: first run step has no predecessor
        row = ((t * R + r) * N + offs_n)[:, None]
        prow = ((tp * R + r) * N + offs_n)[:, None]
        pmask = mask & has_prev
        h_prev = tl.load(hs_ptr + prow * D + offs_d[None, :], mask=pmask, other=0.0)
        c_prev = tl.load(cs_ptr + prow * D + offs_d[None, :], mask=pmask, other=0.0)
        c = tl.load(cs_ptr + row * D + offs_d[None, :], mask=mask, other=0.0)
        xb = xs_ptr + row * (4 * D) + offs_d[None, :]
        hq = h_prev.to(w_i.dtype)
        a_i = _preactivation(xb, 0, D, mask, hq, w_i, IEEE)
        a_f = _preactivation(xb, 1, D, mask, hq, w_f, IEEE)
        a_g = _preactivation(xb, 2, D, mask, hq, w_g, IEEE)
        a_o = _preactivation(xb, 3, D, mask, hq, w_o, IEEE)
        i = tl.sigmoid(a_i)
        f = tl.sigmoid(a_f)
        g = _tanh(a_g)
        o = tl.sigmoid(a_o)
        tc = _tanh(c)
        dh = dh + tl.load(dhs_ptr + row * D + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        dc = dc + dh * o * (1.0 - tc * tc)
        d_i = tl.where(mask, dc * g * i * (1.0 - i), 0.0)
        d_f = tl.where(mask, dc * c_prev * f * (1.0 - f), 0.0)
        d_g = tl.where(mask, dc * i * (1.0 - g * g), 0.0)
        d_o = tl.where(mask, dh * tc * o * (1.0 - o), 0.0)
        dc = dc * f
        db = dxs_ptr + row * (4 * D) + offs_d[None, :]
        tl.store(db, d_i.to(dxs_ptr.dtype.element_ty), mask=mask)
        tl.store(db + D, d_f.to(dxs_ptr.dtype.element_ty), mask=mask)
        tl.store(db + 2 * D, d_g.to(dxs_ptr.dtype.element_ty), mask=mask)
        tl.store(db + 3 * D, d_o.to(dxs_ptr.dtype.element_ty), mask=mask)
        # dh_prev = sum_k d_k @ W_k  (W_k = tile^T)
        dh = (_dot(d_i.to(w_i.dtype), tl.trans(w_i), IEEE) + _dot(d_f.to(w_i.dtype), tl.trans(w_f), IEEE)
              + _dot(d_g.to(w_i.dtype), tl.trans(w_g), IEEE) + _dot(d_o.to(w_i.dtype), tl.trans(w_o), IEEE))

