"""The opt-in kernel libraries (`pip install "lstmvision[kernels]"`) behind the one ops dispatch: FlashRNN as rnn2d
backends (flashrnn-*) and NXAI's mlstm_kernels as mLSTM backends (mlstm_kernels-*).

Agreement with our math on CPU, the clear error when a library is missing, `auto` untouched, the check-kernels
rows, and the Triton kernels of both libraries under TRITON_INTERPRET=1 (in a subprocess, so the variable does
not leak into this process's Triton)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstmvision.layers import RNN2DMixer
from lstmvision.models import create_model
from lstmvision.ops import _flashrnn, _mlstm_kernels
from lstmvision.ops._mlstm_torch import parallel, recurrent
from lstmvision.ops.check import check_kernels
from lstmvision.ops.dispatch import set_backend, use_backend
from lstmvision.ops.mlstm import PARALLEL_MAX_LEN, mlstm, resolve_mlstm_backend
from lstmvision.ops.rnn2d import module_weights, resolve_rnn2d_backend, rnn2d, rnn2d_reference

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
EXTRA = 'pip install "lstmvision[kernels]"'
needs_flashrnn = pytest.mark.skipif(not _flashrnn.available(), reason="flashrnn not installed (lstmvision[kernels])")
needs_mlstm_kernels = pytest.mark.skipif(not _mlstm_kernels.available(),
                                         reason="mlstm_kernels not installed (lstmvision[kernels])")
FLASH_CPU = ("flashrnn-vanilla", "flashrnn-vanilla_fwbw")
MLSTM_NATIVE = ("mlstm_kernels-chunkwise-native", "mlstm_kernels-parallel-native")


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------------------------------------- flashrnn
@needs_flashrnn
@pytest.mark.parametrize("backend", FLASH_CPU)
def test_flashrnn_heads_match_a_bidirectional_nn_lstm(backend):
    """The mapping itself: nn.LSTM's two directions as two heads (the reversed one flipped in time)."""
    N, T, C, D = 6, 5, 8, 6
    lstm = torch.nn.LSTM(C, D, batch_first=True, bidirectional=True)
    x = torch.randn(N, T, C, requires_grad=True)
    y_ref = lstm(x)[0]
    g = torch.randn(y_ref.shape)
    g_ref = torch.autograd.grad(y_ref, [x, *lstm.parameters()], g)
    (wf, wb) = module_weights(lstm)
    wx = [(x @ w[0].t() + w[2] + w[3]).view(N, T, 4, D) for w in (wf, wb)]
    Wx = torch.stack([wx[0], wx[1].flip(1)], 3)  # (N, T, 4, 2, D)
    R = torch.stack([w[1].view(4, D, D) for w in (wf, wb)], 1)  # (4, 2, D, D)
    h = _flashrnn.lstm_heads(Wx, R, backend)  # (N, T, 2, D)
    y = torch.cat([h[:, :, 0], h[:, :, 1].flip(1)], -1)
    grads = torch.autograd.grad(y, [x, *lstm.parameters()], g)
    assert (y - y_ref).abs().max() < 1e-6
    assert max(_max_rel(a, b) for a, b in zip(grads, g_ref)) < 1e-5


@needs_flashrnn
@pytest.mark.parametrize("backend", FLASH_CPU)
@pytest.mark.parametrize("hw, bidirectional", [((4, 4), True), ((3, 5), True), ((4, 5), False)])
def test_flashrnn_rnn2d_matches_modules(backend, hw, bidirectional):
    mixer = RNN2DMixer(12, 7, bidirectional=bidirectional)
    x = torch.randn(2, *hw, 12)
    outs = {}
    for be in ("module", backend):
        xg = x.clone().requires_grad_(True)
        with use_backend(rnn2d=be):
            y = mixer(xg)
        grads = torch.autograd.grad(y, [xg, *mixer.parameters()], torch.ones_like(y))
        outs[be] = y.detach(), grads
    (y_ref, g_ref), (y, g) = outs["module"], outs[backend]
    assert (y - y_ref).abs().max() < 1e-5
    assert max(_max_rel(a, b) for a, b in zip(g, g_ref)) < 1e-5


@needs_flashrnn
def test_flashrnn_vanilla_float64_is_exact_and_fwbw_refuses_it():
    mixer = RNN2DMixer(6, 3).double()
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    wv, wh = module_weights(mixer.rnn_v), module_weights(mixer.rnn_h)
    assert torch.allclose(rnn2d(x, wv, wh, backend="flashrnn-vanilla"), rnn2d_reference(x, wv, wh), atol=1e-12)
    with pytest.raises(RuntimeError, match="fp32, fp16 and bf16"):
        rnn2d(x, wv, wh, backend="flashrnn-vanilla_fwbw")


@needs_flashrnn
def test_zero_padded_hidden_units_are_exact(monkeypatch):
    """The Triton/CUDA kernels run head dims padded to a power of two (48 -> 64): checked here on the vanilla
    loop, padded on purpose."""
    mixer = RNN2DMixer(8, 5).double()
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64)
    wv, wh = module_weights(mixer.rnn_v), module_weights(mixer.rnn_h)
    monkeypatch.setattr(_flashrnn, "PADDED", ("vanilla",))
    assert torch.allclose(rnn2d(x, wv, wh, backend="flashrnn-vanilla"), rnn2d_reference(x, wv, wh), atol=1e-12)


@needs_flashrnn
def test_sequencer_model_with_flashrnn_matches_nn_lstm():
    model = create_model("sequencer2d_tiny").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), use_backend(rnn2d="module"):
        ref = model.forward_features(x)
    for backend in FLASH_CPU:
        with torch.no_grad(), use_backend(rnn2d=backend):
            assert (model.forward_features(x) - ref).abs().max() < 1e-4


@needs_flashrnn
def test_flashrnn_backends_under_bf16_autocast_run_in_bf16():
    mixer = RNN2DMixer(16, 8)
    x = torch.randn(2, 4, 4, 16)
    with torch.no_grad():
        with use_backend(rnn2d="module"):
            ref = mixer(x)
        with use_backend(rnn2d="flashrnn-vanilla_fwbw"), torch.autocast("cpu", dtype=torch.bfloat16):
            y = mixer(x)
    assert y.dtype == torch.bfloat16 and (y.float() - ref).abs().max() < 5e-2


def test_flashrnn_selection_rules(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(1, 2, 2, 4)
    for backend in _flashrnn.BACKENDS:
        assert resolve_rnn2d_backend(x, "gru", backend) == "fused"  # LSTM only: GRU/RNN fall back, as triton
        assert resolve_rnn2d_backend(x, "rnn", backend) == "fused"
    if _flashrnn.available():
        for backend in FLASH_CPU:
            assert resolve_rnn2d_backend(x, "lstm", backend) == backend
        for backend in ("flashrnn-cuda", "flashrnn-triton"):  # never silently something else on a wrong device
            with pytest.raises(RuntimeError, match="needs CUDA"):
                resolve_rnn2d_backend(x, "lstm", backend)


# ------------------------------------------------------------------------------------------- mlstm_kernels
def _mlstm_inputs(S=37, d=12, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = [torch.randn(1, 2, S, d, generator=g, dtype=dtype) for _ in range(3)]
    return [*qkv, torch.randn(1, 2, S, generator=g, dtype=dtype) * 2, torch.randn(1, 2, S, generator=g, dtype=dtype) + 1]


@needs_mlstm_kernels
def test_mlstm_kernels_define_the_same_mlstm_as_ours():
    """Same gates, scale, normaliser max(|q·n|, exp(-m)) + eps; the forms differ only in the stabiliser m
    (parallel: no initial state; chunkwise/recurrent: the zero initial state), in both libraries alike."""
    ts = _mlstm_inputs()
    ours_par, ours_rec = parallel(*ts), recurrent(*ts)
    lib_par = mlstm(*ts, backend="mlstm_kernels-parallel-native")
    lib_chunk = mlstm(*ts, backend="mlstm_kernels-chunkwise-native", chunk_size=16)  # 37 tokens -> 48, padded
    assert (lib_par - ours_par).abs().max() < 1e-12
    assert (lib_chunk - ours_rec).abs().max() < 1e-12
    assert 1e-9 < (ours_par - ours_rec).abs().max() < 1e-6  # the stabiliser difference itself (~4e-8 here)


@needs_mlstm_kernels
@pytest.mark.parametrize("backend, reference", [("mlstm_kernels-parallel-native", parallel),
                                                ("mlstm_kernels-chunkwise-native", recurrent)])
def test_mlstm_kernels_native_gradients_are_exact(backend, reference):
    ts = [t.requires_grad_() for t in _mlstm_inputs()]
    g = torch.randn(1, 2, 37, 12, dtype=torch.float64)
    ref = torch.autograd.grad(reference(*ts), ts, g)
    got = torch.autograd.grad(mlstm(*ts, backend=backend, chunk_size=16), ts, g)
    assert max(_max_rel(a, b) for a, b in zip(got, ref)) < 1e-10


@needs_mlstm_kernels
def test_custom_backward_is_the_gradient_with_the_normaliser_detached():
    """mlstm_kernels' custom backward (here its native custbw, the same convention as its Triton kernels) is the
    gradient of `detached_reference`, far from the exact gradient."""
    get = _mlstm_kernels.library()
    ts = [t.requires_grad_() for t in _mlstm_inputs(S=32)]
    g = torch.randn(1, 2, 32, 12, dtype=torch.float64)
    custom = torch.autograd.grad(get("chunkwise--native_custbw")(*ts, chunk_size=16), ts, g)
    detached = torch.autograd.grad(_mlstm_kernels.detached_reference(*ts), ts, g)
    exact = torch.autograd.grad(recurrent(*ts), ts, g)
    assert (_mlstm_kernels.detached_reference(*ts) - recurrent(*ts)).abs().max() < 1e-12  # same forward
    assert max(_max_rel(a, b) for a, b in zip(custom, detached)) < 1e-9
    assert max(_max_rel(a, b) for a, b in zip(custom, exact)) > 1e-2


@needs_mlstm_kernels
def test_mlstm_kernels_native_in_bf16_computes_in_fp32():
    ts = _mlstm_inputs(dtype=torch.float32)
    ref = recurrent(*[t.double() for t in ts])
    for backend in MLSTM_NATIVE:
        y = mlstm(*[t.bfloat16() for t in ts], backend=backend, chunk_size=16)
        assert y.dtype == torch.bfloat16
        assert (y.double() - ref).abs().max() < 5e-2 * ref.abs().max()


@needs_mlstm_kernels
def test_vil_with_mlstm_kernels_matches_our_forms():
    model = create_model("vil_tiny", depth=2).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        with use_backend(mlstm="parallel"):
            ref = model.forward_features(x)
        for backend in MLSTM_NATIVE:
            with use_backend(mlstm=backend):
                assert (model.forward_features(x) - ref).abs().max() < 1e-4


def test_mlstm_kernels_selection_rules(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for S in (16, 196, PARALLEL_MAX_LEN + 1, 3136):  # auto never picks a library
        assert resolve_mlstm_backend("auto", S, "cpu") not in _mlstm_kernels.BACKENDS
    if _mlstm_kernels.available():
        for backend in MLSTM_NATIVE:
            assert resolve_mlstm_backend(backend, 196, "cpu") == backend
        assert resolve_mlstm_backend("mlstm_kernels-chunkwise-triton", 196) == "mlstm_kernels-chunkwise-triton"
        with pytest.raises(RuntimeError, match="needs CUDA"):
            resolve_mlstm_backend("mlstm_kernels-chunkwise-triton", 196, "cpu")


def test_triton_chunk_and_head_sizes():
    assert [_mlstm_kernels.triton_chunk(S, 64) for S in (5, 16, 37, 196, 3136)] == [16, 16, 64, 64, 64]
    assert _mlstm_kernels.triton_chunk(196, 32) == 32
    dims = (12, 16, 32, 48, 64, 96, 128, 192, 384)  # ViL-T: 96, ViL-S: 192
    assert [_mlstm_kernels.triton_head_dim(d) for d in dims] == [16, 16, 32, 64, 64, 128, 128, 192, 384]


# ------------------------------------------------------------------------------------ dispatch, missing library
def test_auto_is_unchanged_and_the_names_are_accepted():
    x = torch.randn(1, 3, 3, 4)
    with use_backend():
        assert resolve_rnn2d_backend(x) == "module"
        for name in _flashrnn.BACKENDS:
            previous = set_backend(rnn2d=name)
            assert previous.rnn2d == "auto"
            set_backend(rnn2d="auto")
        for name in _mlstm_kernels.BACKENDS:
            set_backend(mlstm=name)
        set_backend(mlstm="auto")


def _missing(module, monkeypatch):
    monkeypatch.setattr(module, "_import", lambda: (None, "ModuleNotFoundError: No module named 'x'"))


def test_missing_flashrnn_names_the_extra(monkeypatch):
    _missing(_flashrnn, monkeypatch)
    mixer = RNN2DMixer(8, 4)
    x = torch.randn(1, 3, 3, 8)
    for backend in _flashrnn.BACKENDS:
        with pytest.raises(ImportError, match=r'pip install "lstmvision\[kernels\]"'), use_backend(rnn2d=backend):
            mixer(x)
    assert resolve_rnn2d_backend(x, "gru", "flashrnn-vanilla") == "fused"  # GRU never needed the library
    rows = check_kernels("cpu", ["fp32"], list(_flashrnn.BACKENDS))
    lstm_rows = [r for r in rows if "lstm" in r.op]
    assert lstm_rows and all(r.status == "unavailable" and EXTRA in r.note for r in lstm_rows)


def test_missing_mlstm_kernels_names_the_extra(monkeypatch):
    _missing(_mlstm_kernels, monkeypatch)
    ts = _mlstm_inputs(S=8, d=4, dtype=torch.float32)
    for backend in _mlstm_kernels.BACKENDS:
        with pytest.raises(ImportError, match=r'pip install "lstmvision\[kernels\]"'):
            mlstm(*ts, backend=backend)
    with pytest.raises(ImportError, match="NXAI"):
        create_model("vil_tiny", depth=1, mlstm_backend="mlstm_kernels-chunkwise-native")
    rows = check_kernels("cpu", ["fp32"], list(_mlstm_kernels.BACKENDS))
    assert rows and all(r.status == "unavailable" and EXTRA in r.note for r in rows)


# ------------------------------------------------------------------------------------------ check-kernels rows
@pytest.mark.skipif(not (_flashrnn.available() and _mlstm_kernels.available()), reason="lstmvision[kernels] missing")
def test_check_kernels_rows_of_the_libraries_on_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    names = [*_flashrnn.BACKENDS, *_mlstm_kernels.BACKENDS]
    rows = {(r.op, r.backend, r.dtype): r for r in check_kernels("cpu", None, names)}
    assert {b for _, b, _ in rows} == set(names)
    for dtype in ("fp32", "bf16"):
        for op in ("rnn2d lstm bidir", "rnn2d lstm unidir"):
            for backend in FLASH_CPU:
                r = rows[op, backend, dtype]
                assert r.status == "pass", r
            assert rows[op, "flashrnn-cuda", dtype].status == "unavailable"
            assert rows[op, "flashrnn-triton", dtype].status == "unavailable"
        assert rows["rnn2d gru bidir", "flashrnn-vanilla", dtype].status == "unavailable"  # LSTM only
        for backend in MLSTM_NATIVE:
            assert rows["mlstm", backend, dtype].status == "pass", rows["mlstm", backend, dtype]
        assert rows["mlstm", "mlstm_kernels-chunkwise-triton", dtype].status == "unavailable"
    assert rows["rnn2d lstm bidir", "flashrnn-vanilla", "fp32"].fwd_abs_err < 1e-6
    assert rows["mlstm", "mlstm_kernels-chunkwise-native", "fp32"].grad_rel_err < 1e-5


@pytest.mark.slow
@pytest.mark.skipif(not (_flashrnn.available() and _mlstm_kernels.available()), reason="lstmvision[kernels] missing")
def test_library_triton_kernels_under_the_interpreter(tmp_path):
    pytest.importorskip("triton")
    path = tmp_path / "check.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "lstmvision", "check-kernels", "--dtype", "fp32", "--backend", "flashrnn-triton",
           "--backend", "mlstm_kernels-chunkwise-triton", "--json", str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(path.read_text())
    rows = {(r["op"], r["backend"]): r for r in report["rows"]}
    assert report["versions"]["flashrnn"] and report["versions"]["mlstm_kernels"] and report["command"]
    for op in ("rnn2d lstm bidir", "rnn2d lstm unidir"):  # D = 6, run padded to 16
        assert rows[op, "flashrnn-triton"]["status"] == "pass"
    r = rows["mlstm", "mlstm_kernels-chunkwise-triton"]
    assert r["status"] == "pass" and "detached" in r["note"] and r["grad_rel_err"] < 1e-5


_MODEL_HEAD_DIMS = """
import json, torch
from lstmvision.layers import RNN2DMixer
from lstmvision.ops import _mlstm_kernels
from lstmvision.ops.dispatch import use_backend
from lstmvision.ops.mlstm import mlstm

def rel(a, b):
    return max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(a, b))

out = {}
for D in (48, 96):  # Sequencer2D-S hidden sizes, run padded to 64 and 128
    mixer = RNN2DMixer(16, D)
    x = torch.randn(2, 3, 3, 16)
    res = {}
    for be in ("module", "flashrnn-triton"):
        xg = x.clone().requires_grad_(True)
        with use_backend(rnn2d=be):
            y = mixer(xg)
        res[be] = (y.detach(), torch.autograd.grad(y, [xg, *mixer.parameters()], torch.ones_like(y)))
    out[f"flashrnn {D}"] = [float((res["flashrnn-triton"][0] - res["module"][0]).abs().max()),
                            rel(res["flashrnn-triton"][1], res["module"][1])]
for d in (96, 192):  # ViL-T / ViL-S head dims (96 runs padded to 128)
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(1, 1, 20, d, generator=g, dtype=torch.float64) for _ in range(3)]
    ts += [torch.randn(1, 1, 20, generator=g, dtype=torch.float64) * 2,
           torch.randn(1, 1, 20, generator=g, dtype=torch.float64) + 1]
    xs = [t.float().requires_grad_() for t in ts]
    y = mlstm(*xs, backend="mlstm_kernels-chunkwise-triton")
    gy = torch.autograd.grad(y, xs, torch.ones_like(y))
    rs = [t.clone().requires_grad_() for t in ts]
    r = _mlstm_kernels.detached_reference(*rs)
    gr = torch.autograd.grad(r, rs, torch.ones_like(r))
    out[f"mlstm {d}"] = [float((y.detach().double() - r.detach()).abs().max() / r.detach().abs().max()),
                         rel([a.double() for a in gy], gr)]
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(not (_flashrnn.available() and _mlstm_kernels.available()), reason="lstmvision[kernels] missing")
def test_library_triton_kernels_at_the_models_head_dims_under_the_interpreter():
    """Sequencer2D-S's 48/96 and ViL-T/S's 96/192 are not what the Triton kernels take as such: padded, exact."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", _MODEL_HEAD_DIMS], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(errors) == {"flashrnn 48", "flashrnn 96", "mlstm 96", "mlstm 192"}
    for name, (fwd, grad) in errors.items():
        assert fwd < 1e-5 and grad < 1e-5, (name, fwd, grad)


# ------------------------------------------------------------------------------------------- packaging, licence
def test_the_extra_is_opt_in_and_attributed():
    pyproject = (ROOT / "pyproject.toml").read_text()
    extras = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    assert 'kernels = ["flashrnn>=1.0.8", "mlstm_kernels>=2.0.6"]' in extras.splitlines()
    dependencies = pyproject.split("\ndependencies = [", 1)[1].split("]", 1)[0]
    assert "flashrnn" not in dependencies and "mlstm" not in dependencies
    notice = (ROOT / "NOTICE").read_text()
    assert "Built with technology from NXAI" in notice and "NXAI Community License" in notice
    docs = (ROOT / "docs" / "performance.md").read_text()
    assert "lstmvision[kernels]" in docs and "NXAI Community License" in docs
