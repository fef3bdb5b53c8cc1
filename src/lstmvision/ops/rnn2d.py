"""BiLSTM2D (and GRU/RNN 2-D) recurrences: one function, `rnn2d`, with interchangeable backends.

A 2-D RNN mixer runs up to four recurrences over an NHWC map x (B, H, W, C): vertical forward/backward (one
sequence per column, length H) and horizontal forward/backward (one sequence per row, length W). Each
direction has the weights of one direction of an `nn.LSTM`/`nn.GRU`/`nn.RNN` (`w_ih`, `w_hh`, `b_ih`,
`b_hh`; LSTM gate order i, f, g, o; zero initial state).

Backends (`rnn2d(..., backend=...)`, else the active choice of `lstmvision.ops.dispatch`, else "auto"):

- ``module``: torch's fused RNN kernels (cuDNN on CUDA, oneDNN on CPU), one call per axis: what the official
  code's nn.LSTM modules run. The model's mixer calls its modules themselves for this backend.
- ``reference``: `rnn2d_reference`, the exact recurrence written step by step (readable ground truth).
- ``fused``: one GEMM for the input projections of all directions, then one time loop for all directions
  at once (batched matmul over stacked per-direction recurrent weights) when H == W, else one loop per
  axis. Plain PyTorch, any device, autograd through the loop. LSTM, GRU and RNN.
- ``triton``: the same GEMM, then a persistent Triton kernel per (direction, block of sequences) that loops
  over time with the recurrent weights and the fp32 state on chip; a second kernel runs the backward in
  reverse time (gates recomputed, not stored). LSTM only; CUDA (or CPU under ``TRITON_INTERPRET=1``);
  requested elsewhere (or for GRU/RNN) it falls back to ``fused``. Exposed as the custom ops
  ``lstmvision::lstm_scan_fwd`` / ``lstmvision::lstm_scan_bwd`` tied by an autograd registration, so
  `torch.compile` sees one opaque node per mixer.
- ``flashrnn-vanilla``, ``flashrnn-vanilla_fwbw``, ``flashrnn-triton``, ``flashrnn-cuda``: the opt-in FlashRNN
  library (`pip install "lstmvision[kernels]"`; LSTM only, GRU/RNN fall back to ``fused``), mapped in
  `lstmvision.ops._flashrnn`.
- ``auto``: ``module`` on every device. The fused loop measured slower than oneDNN's nn.LSTM on CPU
  (benchmarks/results/cpu-README.md) and no GPU measurement is committed, so Triton is opt-in only.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from lstmvision.ops import _flashrnn, dispatch
from lstmvision.ops._triton_common import can_run, interpret, kernel_loader, triton_available

__all__ = [
    "BACKENDS", "DirWeights", "rnn2d", "rnn2d_reference", "resolve_rnn2d_backend", "module_weights", "lstm_scan",
    "triton_available",
]

BACKENDS = dispatch.RNN2D_BACKENDS
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# (w_ih, w_hh, b_ih, b_hh) of one direction, shapes (G*D, C), (G*D, D), (G*D,), (G*D,)
DirWeights = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def resolve_rnn2d_backend(x: torch.Tensor, cell: str = "lstm", backend: str | None = None) -> str:
    """The backend that actually runs for this input: the request, downgraded where it cannot run."""
    want = dispatch.requested("rnn2d", backend)
    if want == "auto":
        return "module"
    if want == "triton" and not (cell == "lstm" and can_run(x.device)):
        return "fused"  # fallback: GRU/RNN, no Triton, or CPU without the interpreter
    if want in _flashrnn.BACKENDS:  # the opt-in FlashRNN library (lstmvision.ops._flashrnn)
        if cell != "lstm":
            return "fused"  # fallback: FlashRNN runs LSTM only here
        _flashrnn.require(want, x.device)  # ImportError naming the extra; RuntimeError on a device it cannot use
    return want


def module_weights(rnn: torch.nn.RNNBase) -> list[DirWeights]:
    """Per-direction weights of a 1-layer nn.LSTM/GRU/RNN: [forward] or [forward, backward]."""
    if rnn.num_layers != 1 or not rnn.bias or getattr(rnn, "proj_size", 0):
        raise ValueError("rnn2d needs 1-layer RNNs with biases and no projection")
    out = []
    for sfx in ("", "_reverse")[: 2 if rnn.bidirectional else 1]:
        out.append(tuple(getattr(rnn, f"{n}_l0{sfx}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    return out


# ------------------------------------------------------------------------------------------- reference
def _cell_step(cell: str, xg: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, w: DirWeights,
               nonlinearity: str = "tanh"):
    """One step of PyTorch's cell math; xg = x_t @ w_ih^T (no bias)."""
    w_ih, w_hh, b_ih, b_hh = w
    gi = xg + b_ih
    gh = h @ w_hh.t() + b_hh  # w_hh (G*D, D) -> (D, G*D); gh (N, G*D)
    if cell == "lstm":
        i, f, g, o = (gi + gh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if cell == "gru":
        ir, iz, in_ = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1 - z) * n + z * h, None
    a = gi + gh
    return (torch.tanh(a) if nonlinearity == "tanh" else torch.relu(a)), None


def _run_1d(seq: torch.Tensor, w: DirWeights, cell: str, reverse: bool, nonlinearity: str) -> torch.Tensor:
    """seq (N, T, C) -> (N, T, D): one direction, step by step."""
    n, t_len, _ = seq.shape
    d = w[1].shape[1]
    h = seq.new_zeros(n, d)
    c = seq.new_zeros(n, d) if cell == "lstm" else None
    xg = seq @ w[0].t()  # w_ih (G*D, C) -> (C, G*D); xg (N, T, G*D)
    outs: list[torch.Tensor] = [None] * t_len  # type: ignore[list-item]
    for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
        h, c = _cell_step(cell, xg[:, t], h, c, w, nonlinearity)
        outs[t] = h
    return torch.stack(outs, 1)


def rnn2d_reference(
    x: torch.Tensor,
    weights_v: Sequence[DirWeights] | None,
    weights_h: Sequence[DirWeights] | None,
    cell: str = "lstm",
    nonlinearity: str = "tanh",
) -> torch.Tensor:
    """Exact 2-D recurrence, step by step: (B, H, W, (dirs_v + dirs_h) * D), channels ordered
    [vertical fwd | vertical bwd | horizontal fwd | horizontal bwd] (the directions present).

    Vertical: one sequence per column read top to bottom (and bottom to top); horizontal: one per row, left
    to right (and right to left). Each direction is one direction of nn.LSTM/GRU/RNN with zero initial state.
    """
    B, H, W, C = x.shape
    v = h = None
    if weights_v:
        cols = x.permute(0, 2, 1, 3).reshape(B * W, H, C)  # (B, H, W, C) -> (B*W, H, C): columns as sequences
        outs = [_run_1d(cols, w, cell, k == 1, nonlinearity) for k, w in enumerate(weights_v)]
        v = torch.cat(outs, -1).reshape(B, W, H, -1).permute(0, 2, 1, 3)  # (B*W, H, dirs*D) -> (B, H, W, dirs*D)
    if weights_h:
        rows = x.reshape(B * H, W, C)  # (B, H, W, C) -> (B*H, W, C): rows as sequences
        outs = [_run_1d(rows, w, cell, k == 1, nonlinearity) for k, w in enumerate(weights_h)]
        h = torch.cat(outs, -1).reshape(B, H, W, -1)  # (B*H, W, dirs*D) -> (B, H, W, dirs*D)
    return torch.cat([p for p in (v, h) if p is not None], -1)


# ----------------------------------------------------------------------------------- fused (PyTorch)
def _scan_torch(cell: str, xs: torch.Tensor, w_hh: torch.Tensor, b_hn: torch.Tensor | None,
                nonlinearity: str, n_fwd: int) -> torch.Tensor:
    """xs (T, R, N, G*D) in natural time order, w_hh (R, G*D, D) -> hs (T, R, N, D) in natural order.
    Directions r >= n_fwd run from T-1 down to 0. All R directions advance together: one bmm per step."""
    hs = _scan_steps(cell, _RunOrder(xs, n_fwd), w_hh, b_hn, nonlinearity)
    T, R = xs.shape[:2]
    if n_fwd == R:
        return torch.stack(hs)
    fwd = torch.stack([h[:n_fwd] for h in hs]) if n_fwd else None
    bwd = torch.stack([h[n_fwd:] for h in reversed(hs)])
    return bwd if fwd is None else torch.cat([fwd, bwd], 1)


class _RunOrder:
    """xs[t] in run order: forward directions at time t, reversed ones at time T-1-t."""

    def __init__(self, xs: torch.Tensor, n_fwd: int):
        self.xs, self.n_fwd, self.T = xs, n_fwd, xs.shape[0]

    def __len__(self) -> int:
        return self.T

    def __getitem__(self, t: int) -> torch.Tensor:
        k, xs = self.n_fwd, self.xs
        if k == xs.shape[1]:
            return xs[t]
        if k == 0:
            return xs[self.T - 1 - t]
        return torch.cat([xs[t, :k], xs[self.T - 1 - t, k:]])


def _scan_steps(cell: str, xs, w_hh: torch.Tensor, b_hn: torch.Tensor | None, nonlinearity: str) -> list:
    T = len(xs)
    D = w_hh.shape[-1]
    w_t = w_hh.transpose(1, 2)  # (R, G*D, D) -> (R, D, G*D)
    hs: list[torch.Tensor] = []
    if cell == "lstm":
        h = c = None
        for t in range(T):
            g = xs[t] if h is None else torch.baddbmm(xs[t], h, w_t)
            if_, gg, o = g[..., : 2 * D].sigmoid(), g[..., 2 * D: 3 * D].tanh(), g[..., 3 * D:].sigmoid()
            i, f = if_[..., :D], if_[..., D:]
            c = i * gg if c is None else torch.addcmul(i * gg, f, c)
            h = o * c.tanh()
            hs.append(h)
    elif cell == "gru":
        h = None
        bn = b_hn[:, None, :]  # (R, 1, D)
        for t in range(T):
            x = xs[t]
            if h is None:
                rz = x[..., : 2 * D].sigmoid()
                n = torch.tanh(x[..., 2 * D:] + rz[..., :D] * bn)
                h = n - rz[..., D:] * n
            else:
                gh = torch.bmm(h, w_t)
                rz = (x[..., : 2 * D] + gh[..., : 2 * D]).sigmoid()
                n = torch.tanh(x[..., 2 * D:] + rz[..., :D] * (gh[..., 2 * D:] + bn))
                h = n + rz[..., D:] * (h - n)
            hs.append(h)
    else:
        act = torch.tanh if nonlinearity == "tanh" else torch.relu
        h = None
        for t in range(T):
            h = act(xs[t] if h is None else torch.baddbmm(xs[t], h, w_t))
            hs.append(h)
    return hs


# (B, H, W, K) -> (T, B, L, K): time along H (vertical) or W (horizontal); and back
_AXIS_PERM = {"v": (1, 0, 2, 3), "h": (2, 0, 1, 3)}
_AXIS_INV = {"v": (1, 0, 2, 3), "h": (1, 2, 0, 3)}


def _input_projection(x: torch.Tensor, dirs: list[DirWeights], cell: str, D: int):
    """One GEMM for every direction: (B, H, W, ndirs*G*D), plus GRU's per-direction b_hn (ndirs, D)."""
    w_all = torch.cat([w[0] for w in dirs])
    if cell == "gru":
        biases = [w[2] + torch.cat([w[3][: 2 * D], torch.zeros_like(w[3][2 * D:])]) for w in dirs]
        b_hn = torch.stack([w[3][2 * D:] for w in dirs])
    else:
        biases = [w[2] + w[3] for w in dirs]
        b_hn = None
    return F.linear(x, w_all, torch.cat(biases)), b_hn


def _rnn2d_fast(x, weights_v, weights_h, cell, nonlinearity, use_triton):
    B, H, W, C = x.shape
    G = GATES[cell]
    axes = [(a, list(ws)) for a, ws in (("v", weights_v), ("h", weights_h)) if ws]
    dirs = [(a, k, w) for a, ws in axes for k, w in enumerate(ws)]  # k == 1: reversed
    D = dirs[0][2][1].shape[1]
    # 1) input projections of every direction: one GEMM over the NHWC map
    xp, b_hn = _input_projection(x, [w for _, _, w in dirs], cell, D)
    xp = xp.unflatten(-1, (len(dirs), G * D))  # (B, H, W, ndirs*G*D) -> (B, H, W, ndirs, G*D)
    # 2) recurrences: one loop for all directions when both axes have the same length, else one per axis
    if len(axes) == 1 or H == W:
        groups = [[a for a, _ in axes]]
    else:
        groups = [[a] for a, _ in axes]
    out = x.new_empty(B, H, W, len(dirs), D, dtype=xp.dtype)
    for grp in groups:
        # forward directions first, then the reversed ones (run from T-1 down to 0)
        js = [j for k in (0, 1) for j, d in enumerate(dirs) if d[0] in grp and d[1] == k]
        n_fwd = sum(dirs[j][1] == 0 for j in js)
        T = H if grp[0] == "v" else W
        N = B * (W if grp[0] == "v" else H)
        xs = xp.new_empty(T, len(js), N, G * D)
        for r, j in enumerate(js):  # one strided copy per direction into the (T, R, N, G*D) scan layout
            a = dirs[j][0]
            # (B, H, W, G*D) -> (T, B, L, G*D), L = W or H, into xs[:, r] (T, N, G*D) viewed as (T, B, L, G*D)
            xs[:, r].view(T, B, W if a == "v" else H, G * D).copy_(xp[..., j, :].permute(_AXIS_PERM[a]))
        w_hh = torch.stack([dirs[j][2][1] for j in js])
        if use_triton:
            hs = lstm_scan(xs, w_hh, [r >= n_fwd for r in range(len(js))])  # natural time order in and out
        else:
            hs = _scan_torch(cell, xs, w_hh, None if b_hn is None else b_hn[js], nonlinearity, n_fwd)
        for r, j in enumerate(js):  # one strided copy per direction back into (B, H, W, dirs, D)
            a = dirs[j][0]
            # hs[:, r] (T, N, D) viewed as (T, B, L, D) -> (B, H, W, D) into out[..., j, :]
            out[..., j, :].copy_(hs[:, r].view(T, B, W if a == "v" else H, D).permute(_AXIS_INV[a]))
    return out.flatten(-2)  # (B, H, W, ndirs, D) -> (B, H, W, ndirs*D)


# ------------------------------------------------------------------------------ module (torch's kernels)
def _run_torch_rnn(seq: torch.Tensor, dirs: Sequence[DirWeights], cell: str, nonlinearity: str) -> torch.Tensor:
    """seq (N, T, C) -> (N, T, dirs * D) through torch's fused RNN op, the one nn.LSTM/GRU/RNN call."""
    n, d = seq.shape[0], dirs[0][1].shape[1]
    params = [t for w in dirs for t in w]
    h0 = seq.new_zeros(len(dirs), n, d)
    args = (params, True, 1, 0.0, torch.is_grad_enabled(), len(dirs) == 2, True)
    if cell == "lstm":
        return torch.lstm(seq, (h0, h0), *args)[0]
    if cell == "gru":
        return torch.gru(seq, h0, *args)[0]
    fn = torch.rnn_tanh if nonlinearity == "tanh" else torch.rnn_relu
    return fn(seq, h0, *args)[0]


def _rnn2d_module(x, weights_v, weights_h, cell, nonlinearity):
    B, H, W, C = x.shape
    parts = []
    if weights_v:
        # (B, H, W, C) -> (B*W, H, C)
        cols = x.permute(0, 2, 1, 3).reshape(B * W, H, C)  # one sequence per column, top to bottom
        # (B*W, H, dirs*D) -> (B, W, H, dirs*D) -> (B, H, W, dirs*D)
        parts.append(_run_torch_rnn(cols, weights_v, cell, nonlinearity).reshape(B, W, H, -1).permute(0, 2, 1, 3))
    if weights_h:
        rows = x.reshape(B * H, W, C)  # (B, H, W, C) -> (B*H, W, C); one sequence per row, left to right
        # (B*H, W, dirs*D) -> (B, H, W, dirs*D)
        parts.append(_run_torch_rnn(rows, weights_h, cell, nonlinearity).reshape(B, H, W, -1))
    return torch.cat(parts, -1)


def rnn2d(
    x: torch.Tensor,
    weights_v: Sequence[DirWeights] | None,
    weights_h: Sequence[DirWeights] | None,
    cell: str = "lstm",
    nonlinearity: str = "tanh",
    backend: str | None = None,
) -> torch.Tensor:
    """All directions of a 2-D RNN layer over x (B, H, W, C) -> (B, H, W, dirs * D) as `rnn2d_reference`.

    `backend`: one of BACKENDS (default: the active choice of `lstmvision.ops.dispatch`, else "auto");
    unsupported requests fall back (triton, flashrnn-* with GRU/RNN -> fused).
    """
    if cell not in GATES:
        raise ValueError(f"cell must be one of {sorted(GATES)}, got {cell!r}")
    if not weights_v and not weights_h:
        raise ValueError("rnn2d needs vertical or horizontal weights")
    which = resolve_rnn2d_backend(x, cell, backend)
    if which == "module":
        return _rnn2d_module(x, weights_v, weights_h, cell, nonlinearity)
    if which == "reference":
        return rnn2d_reference(x, weights_v, weights_h, cell, nonlinearity)
    if which in _flashrnn.BACKENDS:
        return _flashrnn.rnn2d_flashrnn(x, weights_v, weights_h, which)
    return _rnn2d_fast(x, weights_v, weights_h, cell, nonlinearity, use_triton=which == "triton")


# --------------------------------------------------------------------------------------------- triton
_kernels = kernel_loader("lstmvision.ops._rnn2d_triton", "lstm_fwd_kernel", "lstm_bwd_kernel")


def _launch_cfg(D: int) -> tuple[int, int, int]:
    """(padded hidden size, sequences per program, warps). Untuned: no GPU measurement is committed yet."""
    import triton  # noqa: PLC0415 (optional dependency: GPU kernels)

    DP = max(16, triton.next_power_of_2(D))
    block_n = 16 if interpret() else (64 if DP <= 64 else 32)
    return DP, block_n, (4 if DP <= 64 else 8)


def _check_scan_inputs(xs: torch.Tensor, w_hh: torch.Tensor) -> None:
    if not can_run(xs.device):
        raise RuntimeError("lstm_scan runs Triton kernels: CUDA tensors, or CPU tensors under TRITON_INTERPRET=1; "
                           "Triton installed")


@torch.library.custom_op("lstmvision::lstm_scan_fwd", mutates_args=())
def _lstm_scan_fwd(xs: torch.Tensor, w_hh: torch.Tensor, n_fwd: int, save: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_scan_inputs(xs, w_hh)
    triton, fwd, _ = _kernels()
    T, R, N, G4 = xs.shape
    D = G4 // 4
    xs = xs.contiguous()
    w = w_hh.to(xs.dtype).contiguous()
    hs = torch.empty(T, R, N, D, device=xs.device, dtype=xs.dtype)
    cs = torch.empty(T, R, N, D, device=xs.device, dtype=torch.float32) if save else xs.new_empty(0, dtype=torch.float32)
    DP, BN, warps = _launch_cfg(D)
    grid = (triton.cdiv(N, BN), R)
    fwd[grid](xs, w, hs, cs if save else hs, T, R, N, D, n_fwd, SAVE=save,
              IEEE=xs.dtype == torch.float32, BLOCK_N=BN, DP=DP, num_warps=warps)
    return hs, cs


@_lstm_scan_fwd.register_fake
def _(xs, w_hh, n_fwd, save):
    T, R, N, G4 = xs.shape
    hs = xs.new_empty(T, R, N, G4 // 4)
    cs = xs.new_empty(T, R, N, G4 // 4, dtype=torch.float32) if save else xs.new_empty(0, dtype=torch.float32)
    return hs, cs


@torch.library.custom_op("lstmvision::lstm_scan_bwd", mutates_args=())
def _lstm_scan_bwd(dhs: torch.Tensor, xs: torch.Tensor, w_hh: torch.Tensor, hs: torch.Tensor, cs: torch.Tensor,
                   n_fwd: int) -> tuple[torch.Tensor, torch.Tensor]:
    _check_scan_inputs(xs, w_hh)
    triton, _, bwd = _kernels()
    T, R, N, G4 = xs.shape
    D = G4 // 4
    w = w_hh.to(xs.dtype).contiguous()
    dxs = torch.empty(T, R, N, G4, device=xs.device, dtype=torch.float32)
    DP, BN, warps = _launch_cfg(D)
    grid = (triton.cdiv(N, BN), R)
    bwd[grid](dhs.contiguous(), xs.contiguous(), w, hs.contiguous(), cs, dxs, T, R, N, D, n_fwd,
              IEEE=xs.dtype == torch.float32, BLOCK_N=BN, DP=DP, num_warps=warps)
    # dW_hh[r] = sum over steps of dgates^T @ h_prev (h_prev = output of the previous step in run order)
    h_prev = torch.zeros_like(hs, dtype=torch.float32)
    if T > 1:
        hf = hs.float()
        h_prev[1:, :n_fwd] = hf[:-1, :n_fwd]  # forward directions: h_{t-1}
        h_prev[:-1, n_fwd:] = hf[1:, n_fwd:]  # reversed directions: h_{t+1}
    dw = torch.einsum("trng,trnd->rgd", dxs, h_prev).to(w_hh.dtype)  # (T, R, N, G4) x (T, R, N, D) -> (R, G4, D)
    return dxs.to(xs.dtype), dw


@_lstm_scan_bwd.register_fake
def _(dhs, xs, w_hh, hs, cs, n_fwd):
    return xs.new_empty(xs.shape), w_hh.new_empty(w_hh.shape)


def _scan_setup(ctx, inputs, output):
    xs, w_hh, n_fwd, save = inputs
    ctx.n_fwd = n_fwd
    ctx.save_for_backward(xs, w_hh, output[0], output[1])


def _scan_backward(ctx, dhs, dcs):
    xs, w_hh, hs, cs = ctx.saved_tensors
    if cs.numel() == 0:
        raise RuntimeError("lstm_scan was run with save=False; it cannot be differentiated")
    dxs, dw = _lstm_scan_bwd(dhs, xs, w_hh, hs, cs, ctx.n_fwd)
    return dxs, dw, None, None


torch.library.register_autograd("lstmvision::lstm_scan_fwd", _scan_backward, setup_context=_scan_setup)


def lstm_scan(xs: torch.Tensor, w_hh: torch.Tensor, reverse: Sequence[bool] | bool = False) -> torch.Tensor:
    """Triton LSTM recurrence over precomputed input gates.

    xs (T, R, N, 4D): x_t @ w_ih^T + b_ih + b_hh per direction r, in natural time order; w_hh (R, 4D, D).
    `reverse`: per-direction flags, all forward directions first: [False]*k + [True]*(R-k) (reversed
    directions run from T-1 down to 0). Returns hs (T, R, N, D) in natural time order.
    State and accumulation are fp32 whatever the input dtype.
    """
    R = xs.shape[1]
    flags = [bool(reverse)] * R if isinstance(reverse, bool) else [bool(f) for f in reverse]
    if len(flags) != R:
        raise ValueError(f"reverse needs {R} flags, got {len(flags)}")
    n_fwd = flags.count(False)
    if any(flags[:n_fwd]):
        raise ValueError("lstm_scan: forward directions must come before reversed ones")
    save = torch.is_grad_enabled() and (xs.requires_grad or w_hh.requires_grad)
    return _lstm_scan_fwd(xs, w_hh, n_fwd, save)[0]
