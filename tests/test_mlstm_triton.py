"""The Triton mLSTM backend: kernels under TRITON_INTERPRET=1 (in a subprocess, so the variable does not leak)
against the PyTorch parallel form, and the backend selection on CPU. No GPU numbers here: on a GPU run this
file again (benchmarks/gpu_suite.sh does) to check the compiled kernels."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from lstmvision.ops.dispatch import reload_environment, use_backend
from lstmvision.ops.mlstm import ENV_VAR, PARALLEL_MAX_LEN, mlstm, resolve_mlstm_backend

SRC = str(Path(__file__).resolve().parents[1] / "src")

TRITON_CHECK = textwrap.dedent("""
    import torch
    from lstmvision.ops.mlstm import mlstm, resolve_mlstm_backend

    def inputs(B, NH, S, d, dtype=torch.float32, seed=0):
        g = torch.Generator().manual_seed(seed)
        q, k, v = (torch.randn(B, NH, S, d, generator=g) for _ in range(3))
        i = torch.randn(B, NH, S, generator=g) * 2.0
        f = torch.randn(B, NH, S, generator=g) + 1.0
        return [t.to(dtype).requires_grad_() for t in (q, k, v, i, f)]

    def fwd_bwd(xs, backend, chunk):
        h = mlstm(*xs, backend=backend, chunk_size=chunk)
        w = torch.linspace(-1, 1, h.numel()).reshape(h.shape).to(h.dtype)
        return h.detach(), torch.autograd.grad((h * w).sum(), xs)

    def rel(a, b):  # |a - b| / max(1, max|b|)
        return float((a.float() - b.float()).abs().max()) / max(1.0, float(b.abs().max()))

    assert resolve_mlstm_backend("triton", 10, "cpu") == "triton"  # runnable on CPU under the interpreter
    assert resolve_mlstm_backend(None, 10, "cpu") == "factored"  # but auto never picks it
    worst_h = worst_g = 0.0
    # chunk 16/32 -> kernel chunk 16/32 (>= 16 for tl.dot); d 72: two masked DQK/DV tiles of 64
    for S, d, chunk in [(5, 8, 16), (16, 8, 16), (37, 8, 16), (5, 12, 32), (16, 12, 16), (37, 12, 32), (20, 72, 16)]:
        xs = inputs(1, 2, S, d, seed=S + d)
        h0, g0 = fwd_bwd(xs, "parallel", chunk)
        h1, g1 = fwd_bwd(xs, "triton", chunk)
        assert h1.dtype == torch.float32 and h1.shape == h0.shape
        worst_h = max(worst_h, rel(h1, h0))
        worst_g = max(worst_g, *[rel(a, b) for a, b in zip(g1, g0)])
    # fp16 inputs (fp32 state and gates). fp16 only: the interpreter mishandles bf16 dots (numpy has no bf16),
    # the bf16 path of the same kernels must be checked on a GPU.
    xs = inputs(1, 2, 37, 12, seed=3)
    h32 = mlstm(*xs, backend="parallel").detach()
    x16 = [t.detach().half().requires_grad_() for t in xs]
    h16, g16 = fwd_bwd(x16, "triton", 16)
    hc16 = mlstm(*[t.detach() for t in x16], backend="chunkwise", chunk_size=16)
    assert h16.dtype == torch.float16 and all(g.dtype == torch.float16 for g in g16)
    assert all(bool(torch.isfinite(g).all()) for g in g16)
    err16 = rel(h16, h32)
    assert err16 < 2e-2 and err16 <= 2 * rel(hc16, h32) + 1e-3, (err16, rel(hc16, h32))  # as PyTorch fp16
    # fp64 asks for triton: runs the PyTorch chunkwise (no fp64 kernels)
    x64 = [t.detach().double() for t in xs]
    assert torch.allclose(mlstm(*x64, backend="triton"), mlstm(*x64, backend="parallel"), atol=1e-6)
    # torch.compile sees one opaque custom op (fullgraph: no graph break), forward and backward
    xs = inputs(1, 2, 20, 8, seed=5)
    fn = torch.compile(lambda *a: mlstm(*a, backend="triton", chunk_size=16), backend="aot_eager", fullgraph=True)
    h = fn(*xs)
    gc = torch.autograd.grad(h.sum(), xs)
    h0 = mlstm(*xs, backend="parallel")
    g0 = torch.autograd.grad(h0.sum(), xs)
    worst_h = max(worst_h, rel(h, h0))
    worst_g = max(worst_g, *[rel(a, b) for a, b in zip(gc, g0)])
    print("WORST", worst_h, worst_g, err16, rel(hc16, h32))
""")


@pytest.mark.slow
def test_triton_kernels_under_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for var in ("LSTMVISION_KERNELS", ENV_VAR):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    worst_h, worst_g, err16, torch16 = (float(x) for x in proc.stdout.split("WORST")[1].split())
    print(f"interpreter (relative to fp32 parallel): fp32 output {worst_h:.2e}, grads {worst_g:.2e}; "
          f"fp16 output {err16:.2e} (PyTorch chunkwise fp16: {torch16:.2e})")
    assert worst_h < 1e-5 and worst_g < 1e-5


def _xs(S=6, d=4):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 2, S, d, generator=g) for _ in range(3)] + [torch.randn(1, 2, S, generator=g) for _ in range(2)]


def test_selection_on_cpu(monkeypatch):
    for var in ("TRITON_INTERPRET", "LSTMVISION_KERNELS", ENV_VAR):
        monkeypatch.delenv(var, raising=False)
    with use_backend():  # undoes the reload below
        reload_environment()
        # auto never picks triton on CPU, with or without the interpreter variable
        assert resolve_mlstm_backend(None, 10, "cpu") == "factored"
        assert resolve_mlstm_backend("auto", PARALLEL_MAX_LEN + 1, "cpu") == "chunkwise"
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert resolve_mlstm_backend("auto", 10, "cpu") == "factored"
        monkeypatch.delenv("TRITON_INTERPRET")
        # explicit triton on CPU without the interpreter: one clear error, from the argument or the environment
        with pytest.raises(RuntimeError, match="needs CUDA tensors"):
            mlstm(*_xs(), backend="triton")
        monkeypatch.setenv(ENV_VAR, "triton")
        reload_environment()  # as if set before import (the variable is read once)
        with pytest.raises(RuntimeError, match="needs CUDA tensors"):
            mlstm(*_xs())
        # without a device (model construction validates names only) it resolves by name
        assert resolve_mlstm_backend("triton", 10) == "triton"


def test_selection_on_cuda_is_pytorch_unless_triton_is_asked_for(monkeypatch):
    """No committed GPU measurement shows Triton correct and faster: auto on CUDA stays with PyTorch."""
    pytest.importorskip("triton")
    for var in ("LSTMVISION_KERNELS", ENV_VAR):
        monkeypatch.delenv(var, raising=False)
    with use_backend():
        reload_environment()
        assert resolve_mlstm_backend(None, 10, "cuda") == "fused"  # factored is CPU-only until measured on a GPU
        assert resolve_mlstm_backend(None, 10_000, torch.device("cuda", 0)) == "chunkwise"
        assert resolve_mlstm_backend("chunkwise", 10, "cuda") == "chunkwise"
        assert resolve_mlstm_backend("triton", 10, "cuda") == "triton"  # opt-in
        with use_backend(mlstm="triton"):
            assert resolve_mlstm_backend(None, 10, "cuda") == "triton"
            assert resolve_mlstm_backend("recurrent", 10, "cuda") == "recurrent"  # the argument wins
        # the rnn2d choice does not touch the mLSTM one (names mean one thing per op)
        with use_backend(rnn2d="reference"):
            assert resolve_mlstm_backend(None, PARALLEL_MAX_LEN + 1, "cuda") == "chunkwise"


def test_custom_op_fake_shapes():
    with FakeTensorMode():
        q, k = torch.empty(2, 3, 37, 12), torch.empty(2, 3, 37, 12)
        v, i, f = torch.empty(2, 3, 37, 20, dtype=torch.bfloat16), torch.empty(2, 3, 37), torch.empty(2, 3, 37)
        h = torch.ops.lstmvision.mlstm_chunkwise_fwd(q, k, v, i, f, 64, 1e-6)
        assert h.shape == (2, 3, 37, 20) and h.dtype == torch.bfloat16
        grads = torch.ops.lstmvision.mlstm_chunkwise_bwd(h, q, k, v, i, f, 64, 1e-6)
        assert [g.shape for g in grads] == [t.shape for t in (q, k, v, i, f)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by benchmarks/gpu_suite.sh)")
@pytest.mark.parametrize("S,d", [(196, 96), (197, 192), (1000, 384), (300, 512)])
def test_triton_on_cuda_vil_head_dims(S, d):
    """The compiled kernels on a GPU: ViL head dims (not powers of 2), S not a multiple of the chunk."""
    pytest.importorskip("triton")
    g = torch.Generator(device="cuda").manual_seed(0)
    xs = [torch.randn(2, 4, S, d, device="cuda", generator=g) for _ in range(3)]
    xs += [torch.randn(2, 4, S, device="cuda", generator=g) * 2, torch.randn(2, 4, S, device="cuda", generator=g) + 2]
    xs = [t.requires_grad_() for t in xs]
    ref = mlstm(*xs, backend="chunkwise")
    h = mlstm(*xs, backend="triton")
    scale = max(1.0, float(ref.abs().max()))
    assert float((h - ref).abs().max()) < 1e-4 * scale
    h.sum().backward()  # backward by recomputation: finite and present
    assert all(torch.isfinite(t.grad).all() for t in xs)
    for dt in (torch.bfloat16, torch.float16):
        hl = mlstm(*[t.detach().to(dt) for t in xs], backend="triton")
        assert hl.dtype == dt
        assert float((hl.float() - ref).abs().max()) < 5e-2 * scale
