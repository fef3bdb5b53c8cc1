"""Every backend of both recurrences on one device against the math reference: forward and gradients.

`check_kernels(device)` runs small representative problems (rnn2d: LSTM/GRU/RNN, bidirectional and a
unidirectional LSTM; mLSTM: a sequence that is not a whole number of chunks) through each backend in fp32
and the device's half types (CPU: bf16; CUDA: bf16, fp16). The reference is the step-by-step math
(`rnn2d_reference`, the mLSTM `recurrent` form) in fp64 on the same device, from the same inputs rounded to
the checked dtype (so a row measures the backend's arithmetic, not the rounding of its inputs).

Per row: `fwd_abs_err` = max |y - y_ref|, `grad_rel_err` = max over the input and weight gradients of
max |g - g_ref| / max |g_ref|. A row passes when both are within its tolerance: fp32 1e-5 (the forward error
relative to max(1, max |y_ref|)); bf16 5e-2 and fp16 1e-2 (8 and 11 mantissa bits through a recurrence with
inputs, weights and outputs in that type). The plain forms run in bf16 stay well inside that on the CPU
(mLSTM `parallel`, the official formulation, and `recurrent`: gradients within 7e-3, forward within 3e-3 of the
scale; rnn2d `module`, PyTorch's own cells: within 2.3e-2), so a failing row is several times their rounding
error, not noise. `ms` is the median time of
one forward call. `factored` runs `fused` in bf16 and fp16 (its row says so).

Triton rows need CUDA, or CPU under TRITON_INTERPRET=1 (otherwise "unavailable", not failed); under the
interpreter bf16 is unavailable (its numpy backend has no bf16 dot) and `ms` is not measured (meaningless).
Triton rnn2d is LSTM only.

The opt-in libraries (`pip install "lstmvision[kernels]"`) have rows too; a library that is not installed gives
"unavailable" rows, not failures. flashrnn-* (LSTM only): vanilla and vanilla_fwbw on any device, triton under the
same rule as ours, cuda on CUDA. mlstm_kernels-*: the native ones on any device (forward and exact gradients
against the reference); the Triton one as ours, but its custom backward treats the stabiliser and the normaliser
as constants by design, so its gradients are compared with `_mlstm_kernels.detached_reference` (same forward,
normaliser detached), and on CUDA its fp32 tolerance is 1e-2 (its tl.dot runs TF32).
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from lstmvision.device import time_steps
from lstmvision.ops import _flashrnn, _mlstm_kernels
from lstmvision.ops._mlstm_torch import FACTORED_DTYPES
from lstmvision.ops._triton_common import can_run, interpret
from lstmvision.ops.mlstm import mlstm
from lstmvision.ops.rnn2d import rnn2d, rnn2d_reference

TOLERANCES = {torch.float32: 1e-5, torch.bfloat16: 5e-2, torch.float16: 1e-2}
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
RNN2D_CHECKED = ("module", "fused", "triton")  # "reference" is the ground truth itself
RNN2D_LIBRARY = tuple(_flashrnn.BACKENDS)  # opt-in FlashRNN
MLSTM_LIBRARY = tuple(_mlstm_kernels.BACKENDS)  # opt-in mlstm_kernels (NXAI)
TRITON_BACKENDS = ("triton", "flashrnn-triton", *_mlstm_kernels.TRITON)
DETACHED = "detached-normaliser"  # the mLSTM reference whose gradient mlstm_kernels' custom backward computes
TF32_TOLERANCE = 1e-2  # fp32 through Triton's default tl.dot on CUDA (TF32: 10 mantissa bits, as fp16)
MLSTM_CHECKED = ("parallel", "fused", "factored", "chunkwise", "recurrent", "triton")


@dataclass
class Row:
    op: str
    backend: str
    dtype: str
    status: str  # pass | fail | unavailable
    fwd_abs_err: float | None = None
    grad_rel_err: float | None = None
    tol: float | None = None
    ms: float | None = None
    note: str = ""


@dataclass
class _Case:
    op: str  # e.g. "rnn2d lstm bidir"
    inputs: list[torch.Tensor]  # fp64, the tensors gradients are taken for
    run: Callable[[list[torch.Tensor], str], torch.Tensor]  # (inputs, backend) -> output
    reference: str
    grad_reference: dict[str, str] = field(default_factory=dict)  # backend -> reference of its gradients


def half_dtypes(device: torch.device) -> list[torch.dtype]:
    return [torch.bfloat16, torch.float16] if device.type == "cuda" else [torch.bfloat16]


def dtype_names(device: torch.device | str) -> list[str]:
    return ["fp32", *(DTYPE_NAMES[d] for d in half_dtypes(torch.device(device)))]


def _rnn2d_case(cell: str, bidirectional: bool, device: torch.device) -> _Case:
    g = torch.Generator().manual_seed(0)
    B, H, W, C, D = 2, 4, 5, 8, 6
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    ndir = 2 if bidirectional else 1
    # (w_ih, w_hh, b_ih, b_hh) per direction, vertical then horizontal, nn.LSTM's init range
    k = D ** -0.5
    shapes = [(G * D, C), (G * D, D), (G * D,), (G * D,)] * (2 * ndir)
    weights = [(torch.rand(s, generator=g, dtype=torch.float64) * 2 - 1) * k for s in shapes]
    x = torch.randn(B, H, W, C, generator=g, dtype=torch.float64)
    inputs = [t.to(device) for t in [x, *weights]]

    def run(ts: list[torch.Tensor], backend: str) -> torch.Tensor:
        dirs = [tuple(ts[1 + 4 * j: 5 + 4 * j]) for j in range(2 * ndir)]
        wv, wh = dirs[:ndir], dirs[ndir:]
        if backend == "reference":
            return rnn2d_reference(ts[0], wv, wh, cell)
        return rnn2d(ts[0], wv, wh, cell, backend=backend)

    return _Case(f"rnn2d {cell} {'bidir' if bidirectional else 'unidir'}", inputs, run, "reference")


def _mlstm_case(device: torch.device) -> _Case:
    g = torch.Generator().manual_seed(0)
    B, NH, S, d = 1, 2, 37, 12
    qkv = [torch.randn(B, NH, S, d, generator=g, dtype=torch.float64) for _ in range(3)]
    i = torch.randn(B, NH, S, generator=g, dtype=torch.float64) * 2
    f = torch.randn(B, NH, S, generator=g, dtype=torch.float64) + 1
    inputs = [t.to(device) for t in [*qkv, i, f]]

    def run(ts: list[torch.Tensor], backend: str) -> torch.Tensor:
        if backend == DETACHED:
            return _mlstm_kernels.detached_reference(*ts)
        return mlstm(*ts, backend=backend, chunk_size=16)

    detached = {b: DETACHED for b in MLSTM_LIBRARY if b not in _mlstm_kernels.EXACT_GRADIENTS}
    return _Case("mlstm", inputs, run, "recurrent", detached)


def cases(device: torch.device) -> list[tuple[_Case, tuple[str, ...]]]:
    out = [(_rnn2d_case(c, True, device), RNN2D_CHECKED + RNN2D_LIBRARY) for c in ("lstm", "gru", "rnn")]
    out.append((_rnn2d_case("lstm", False, device), RNN2D_CHECKED + RNN2D_LIBRARY))
    out.append((_mlstm_case(device), MLSTM_CHECKED + MLSTM_LIBRARY))
    return out


def _unavailable(case: _Case, backend: str, dtype: torch.dtype, device: torch.device) -> str:
    """Why `backend` cannot run this case here ('' when it can)."""
    if device.type == "cpu" and dtype == torch.bfloat16 and backend in TRITON_BACKENDS and interpret():
        return "the Triton interpreter has no bf16 dot"
    if backend in _flashrnn.BACKENDS:
        if case.op.startswith("rnn2d") and "lstm" not in case.op:
            return "FlashRNN backends are LSTM only here (GRU/RNN fall back to fused)"
        return _flashrnn.unavailable_reason(backend, device, dtype)
    if backend in _mlstm_kernels.BACKENDS:
        return _mlstm_kernels.unavailable_reason(backend, device, dtype)
    if backend != "triton":
        return ""
    if case.op.startswith("rnn2d") and "lstm" not in case.op:
        return "Triton rnn2d is LSTM only (GRU/RNN fall back to fused)"
    if not can_run(device):
        return "needs CUDA, or TRITON_INTERPRET=1 on CPU, and Triton installed"
    if device.type == "cpu" and dtype == torch.bfloat16:
        return "the Triton interpreter has no bf16 dot"
    return ""


def _forward_ms(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int = 3) -> float:
    with torch.no_grad():  # the first call warms up (kernel compilation, allocator)
        times = [time_steps(fn, 1, device, warmup=int(r == 0)) for r in range(repeats)]
    return statistics.median(times) * 1e3


def _fwd_bwd(case: _Case, backend: str, dtype: torch.dtype, cotangent: torch.Tensor,
             rounded_to: torch.dtype | None = None):
    """Output and input gradients in fp64; inputs cast to `dtype` (after rounding them to `rounded_to`)."""
    ts = [t.detach().to(rounded_to or dtype).to(dtype).requires_grad_() for t in case.inputs]
    y = case.run(ts, backend)
    grads = torch.autograd.grad(y, ts, cotangent.to(y.dtype))
    return y.detach().double(), [g.double() for g in grads], ts


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-30)


def check_case(case: _Case, backend: str, dtype: torch.dtype, cotangent: torch.Tensor) -> Row:
    device = case.inputs[0].device
    name = DTYPE_NAMES[dtype]
    why = _unavailable(case, backend, dtype, device)
    if why:
        return Row(case.op, backend, name, "unavailable", note=why)
    y_ref, g_ref = _fwd_bwd(case, case.reference, torch.float64, cotangent, rounded_to=dtype)[:2]
    notes = []
    grad_reference = case.grad_reference.get(backend, case.reference)
    if grad_reference != case.reference:
        g_ref = _fwd_bwd(case, grad_reference, torch.float64, cotangent, rounded_to=dtype)[1]
        notes.append(f"gradients vs {grad_reference} reference (custom backward)")
    tol = TOLERANCES[dtype]
    if device.type == "cuda" and dtype == torch.float32 and backend in _mlstm_kernels.TRITON:
        tol = TF32_TOLERANCE
        notes.append("TF32 tl.dot")
    if backend == "factored" and dtype not in FACTORED_DTYPES:
        notes.append("runs fused in this dtype")
    y, grads, ts = _fwd_bwd(case, backend, dtype, cotangent)
    fwd = float((y - y_ref).abs().max())
    grad = max(_max_rel(a, b) for a, b in zip(grads, g_ref))
    ok = fwd <= tol * max(1.0, float(y_ref.abs().max())) and grad <= tol
    ms = None
    if device.type == "cpu" and backend in TRITON_BACKENDS:
        notes.append("not timed under the interpreter")
    else:
        ms = round(_forward_ms(lambda: case.run(ts, backend), device), 3)
    return Row(case.op, backend, name, "pass" if ok else "fail", fwd, grad, tol, ms, "; ".join(notes))


def backend_names() -> list[str]:
    """Every backend check-kernels has rows for (rnn2d and mLSTM)."""
    return list(dict.fromkeys(RNN2D_CHECKED + RNN2D_LIBRARY + MLSTM_CHECKED + MLSTM_LIBRARY))


def check_kernels(device: torch.device | str = "cpu", dtypes: list[str] | None = None,
                  backends: list[str] | None = None) -> list[Row]:
    """One row per (problem, backend, dtype) on `device`; see the module docstring. `dtypes`: names out of
    `dtype_names(device)` (default: all of them); `backends`: names out of `backend_names()` (default: all)."""
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"check-kernels runs on cpu or cuda, not {device.type}")
    available = dtype_names(device)
    for name in dtypes or []:
        if name not in available:
            raise ValueError(f"dtype {name!r} is not checked on {device.type}; choose from {', '.join(available)}")
    for name in backends or []:
        if name not in backend_names():
            raise ValueError(f"backend {name!r} has no check-kernels rows; choose from {', '.join(backend_names())}")
    wanted = [d for d in [torch.float32, *half_dtypes(device)] if dtypes is None or DTYPE_NAMES[d] in dtypes]
    rows = []
    for case, case_backends in cases(device):
        case_backends = tuple(b for b in case_backends if backends is None or b in backends)
        if not case_backends:
            continue
        g = torch.Generator().manual_seed(1)
        shape = case.run(case.inputs, case.reference).shape
        cotangent = torch.randn(shape, generator=g, dtype=torch.float64).to(device)
        for dtype in wanted:
            rows.extend(check_case(case, b, dtype, cotangent) for b in case_backends)
    return rows


def format_table(rows: list[Row]) -> str:
    def num(v: float | None, fmt: str) -> str:
        return format(v, fmt) if v is not None else format("-", ">" + fmt.split(".")[0])

    width = max([10, *(len(r.backend) for r in rows)])
    lines = [f"{'op':18} {'backend':{width}} {'dtype':5} {'fwd abs err':>11} {'grad rel err':>12} {'tol':>7} "
             f"{'ms/call':>9}  result"]
    for r in rows:
        lines.append(f"{r.op:18} {r.backend:{width}} {r.dtype:5} {num(r.fwd_abs_err, '11.2e')} "
                     f"{num(r.grad_rel_err, '12.2e')} {num(r.tol, '7.0e')} {num(r.ms, '9.3f')}  "
                     f"{r.status}{' (' + r.note + ')' if r.note else ''}")
    return "\n".join(lines)


def as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


__all__ = ["Row", "TOLERANCES", "as_dicts", "backend_names", "check_kernels", "dtype_names", "format_table",
           "half_dtypes"]
