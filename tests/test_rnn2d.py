"""rnn2d backends against nn.LSTM/GRU/RNN (outputs and gradients), backend selection, Triton kernels
under TRITON_INTERPRET=1 (in a subprocess, so the variable does not leak)."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lstmvision.layers import RNN2DMixer
from lstmvision.models import create_model
from lstmvision.ops.dispatch import get_backend, reload_environment, set_backend, use_backend
from lstmvision.ops.rnn2d import module_weights, resolve_rnn2d_backend, rnn2d, rnn2d_reference

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _grads(mixer, x, backend):
    x = x.clone().requires_grad_(True)
    with use_backend(rnn2d=backend):
        y = mixer(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(y, [x, *mixer.parameters()], g)
    return y.detach(), grads


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("hw", [(5, 5), (3, 6)])
def test_fused_matches_modules_outputs_and_grads(cell, hw):
    mixer = RNN2DMixer(12, 7, rnn_type=cell)
    x = torch.randn(2, *hw, 12)
    y_ref, g_ref = _grads(mixer, x, "module")
    y, g = _grads(mixer, x, "fused")
    assert (y - y_ref).abs().max() < 1e-5
    for a, b in zip(g, g_ref):
        assert (a - b).abs().max() < 1e-5


@pytest.mark.parametrize("kw", [dict(bidirectional=False), dict(union="add"),
                                dict(union="vertical", with_fc=False, hidden_size=8),
                                dict(union="horizontal", with_fc=False, hidden_size=8)])
def test_fused_mixer_variants(kw):
    kw = {"hidden_size": 5, **kw}
    mixer = RNN2DMixer(16, kw.pop("hidden_size"), **kw)
    x = torch.randn(1, 4, 3, 16)
    y_ref, g_ref = _grads(mixer, x, "module")
    y, g = _grads(mixer, x, "fused")
    assert (y - y_ref).abs().max() < 1e-5
    assert max((a - b).abs().max() for a, b in zip(g, g_ref)) < 1e-5


def test_reference_function_matches_fused_in_float64():
    mixer = RNN2DMixer(6, 3).double()
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    wv, wh = module_weights(mixer.rnn_v), module_weights(mixer.rnn_h)
    assert torch.allclose(rnn2d_reference(x, wv, wh), rnn2d(x, wv, wh, backend="fused"), atol=1e-12)


def test_backend_selection(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with use_backend():  # undoes the reloads below
        reload_environment({})
        assert resolve_rnn2d_backend(x) == "module"  # auto: nn.LSTM on every device (see benchmarks/results)
        assert resolve_rnn2d_backend(x, backend="triton") == "fused"  # no CUDA, no interpreter: fallback
        reload_environment({"LSTMVISION_KERNELS": "fused"})  # the variable, as read at import
        assert resolve_rnn2d_backend(x) == "fused"
        assert resolve_rnn2d_backend(x, "gru") == "fused"
        with use_backend(rnn2d="module"):
            assert resolve_rnn2d_backend(x) == "module"  # the context wins over the variable
        assert resolve_rnn2d_backend(x, backend="reference") == "reference"  # and the argument over both
        reload_environment({"LSTMVISION_KERNELS": "bogus"})
        with pytest.raises(ValueError, match="LSTMVISION_KERNELS"):
            resolve_rnn2d_backend(x)


def test_set_backend_is_process_wide_validated_and_undone_by_use_backend():
    before = get_backend()
    with use_backend():
        previous = set_backend(rnn2d="fused", mlstm="chunkwise")
        assert previous == before and get_backend() == ("fused", "chunkwise")
        assert resolve_rnn2d_backend(torch.zeros(1)) == "fused"
        with pytest.raises(ValueError, match="unknown rnn2d backend 'cudnn'"):
            set_backend(rnn2d="cudnn")
        with pytest.raises(ValueError, match="unknown mLSTM backend 'module'"):
            set_backend(rnn2d="module", mlstm="module")
        assert get_backend() == ("fused", "chunkwise")  # a rejected call changes nothing
    assert get_backend() == before


def test_no_module_writes_the_environment():
    """Backend choices go through lstmvision.ops.dispatch; nothing in the package sets environment variables."""

    pattern = re.compile(r"os\.environ\[[^]]+\]\s*=|os\.environ\.(pop|setdefault|update)\(|os\.putenv")
    offenders = [str(p) for p in Path(SRC, "lstmvision").rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders


def test_env_var_forces_module_path(monkeypatch):
    """LSTMVISION_KERNELS=module: the mixer calls its nn.LSTM modules (their hooks fire)."""
    mixer = RNN2DMixer(8, 4)
    calls = []
    mixer.rnn_v.register_forward_hook(lambda *a: calls.append(1))
    with use_backend():
        monkeypatch.setenv("LSTMVISION_KERNELS", "module")
        reload_environment()
        mixer(torch.randn(1, 3, 3, 8))
        assert calls == [1]
        monkeypatch.setenv("LSTMVISION_KERNELS", "fused")
        reload_environment()
        mixer(torch.randn(1, 3, 3, 8))
        assert calls == [1]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_every_backend_of_the_function_matches_the_reference_loop(cell):
    mixer = RNN2DMixer(6, 3, rnn_type=cell).double()
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    wv, wh = module_weights(mixer.rnn_v), module_weights(mixer.rnn_h)
    ref = rnn2d_reference(x, wv, wh, cell)
    for backend in ("auto", "module", "fused", "reference"):
        torch.testing.assert_close(rnn2d(x, wv, wh, cell, backend=backend), ref, rtol=0, atol=1e-12)


def test_model_kwarg_picks_the_mixer_backend():
    """Sequencer(rnn_backend=...) reaches every 2-D mixer and wins over the active choice."""

    model = create_model("sequencer2d_tiny", rnn_backend="fused").eval()
    mixers = [m for m in model.modules() if isinstance(m, RNN2DMixer)]
    assert mixers and all(m.backend == "fused" for m in mixers)
    calls = []
    for m in mixers:
        m.rnn_v.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(1, 3, 32, 32)
    with use_backend(rnn2d="module"), torch.no_grad():
        y = model(x)
    assert calls == []  # fused: the modules were not called
    ref = create_model("sequencer2d_tiny", rnn_backend="module").eval()
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown rnn2d backend 'cudnn'"):
        create_model("sequencer2d_tiny", rnn_backend="cudnn")


TRITON_CHECK = textwrap.dedent("""
    import torch
    from lstmvision.layers import RNN2DMixer
    from lstmvision.ops.dispatch import use_backend
    from lstmvision.ops.rnn2d import lstm_scan, resolve_rnn2d_backend
    torch.manual_seed(0)
    assert resolve_rnn2d_backend(torch.zeros(1), backend="triton") == "triton"
    worst = 0.0
    for (B, H, W, C, D, bidir) in [(2, 4, 4, 8, 6, True), (1, 3, 5, 8, 20, True), (1, 2, 3, 4, 5, False)]:
        m = RNN2DMixer(C, D, bidirectional=bidir)
        x = torch.randn(B, H, W, C)
        outs = {}
        for be in ("module", "triton"):
            xx = x.clone().requires_grad_(True)
            with use_backend(rnn2d=be):
                y = m(xx)
            g = torch.autograd.grad(y, [xx, *m.parameters()], torch.ones_like(y))
            outs[be] = (y.detach(), g)
        (y0, g0), (y1, g1) = outs["module"], outs["triton"]
        worst = max(worst, float((y0 - y1).abs().max()), *[float((a - b).abs().max()) for a, b in zip(g0, g1)])
    # half inputs, fp32 state: close to the fp32 result. fp16 only: the interpreter mishandles bf16 dots
    # (numpy has no bf16), the same kernel code path in bf16 must be checked on a GPU.
    xs, w = torch.randn(3, 2, 5, 24), torch.randn(2, 24, 6) * 0.3
    h32 = lstm_scan(xs, w, [False, True])
    h16 = lstm_scan(xs.half(), w, [False, True]).float()
    assert float((h32 - h16).abs().max()) < 5e-3
    print("WORST", worst)
""")


@pytest.mark.slow
def test_triton_kernels_under_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("LSTMVISION_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    worst = float(proc.stdout.split("WORST")[1])
    assert worst < 1e-5
