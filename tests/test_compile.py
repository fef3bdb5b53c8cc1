"""torch.compile sees every registered family as one graph (no graph breaks) and matches eager."""
import pytest
import torch

import lstmvision
from deploy_helpers import SIZE, tiny_model
from lstmvision.layers.rnn import GRU, LSTM, RNN

# one model per distinct code path: BiLSTM2D (cat, add, vertical / horizontal only, single direction, no fc),
# GRU/RNN mixers, vanilla 1-D mixer, the position-embedded vanilla model, and ViL v2 / v1 / stride 8
REPRESENTATIVE = [
    "sequencer2d_s", "sequencer2d_s_add", "sequencer2d_s_horizontal", "sequencer2d_vertical",
    "sequencer2d_s_unidirectional", "sequencer2d_s_without_fc",
    "gru_sequencer2d_s", "rnn_sequencer2d_s", "v_sequencer_s", "v_sequencer_s_pe",
    "vil2_tiny", "vil_tiny", "vil_tinyplus_stride8",
    # ViL's design space: direction designs and poolings (v1 ViL-T ablation configs)
    "vil_tiny_dir_unidirectional", "vil_tiny_dir_quad_alternating", "vil_tiny_dir_bidirectional",
    "vil_tiny_dir_bidirectional_shared", "vil_tiny_dir_quaddirectional",
    "vil_tiny_pool_avg", "vil_tiny_pool_bilateral_flatten", "vil_tiny_pool_middle", "vil_tiny_pool_cls",
]


# attributes that select a different forward path (the rest, like widths and depths, do not)
_PATH_ATTRS = ("union", "mode", "bidirectional", "batch_first", "global_pool", "direction", "shuffle_tokens")


def _code_path(name: str) -> frozenset:
    """What decides which Python/ATen path a model's forward takes: its module classes and their switches."""
    with torch.device("meta"):
        model = lstmvision.create_model(name)
    path = set()
    for m in model.modules():
        switches = tuple((a, getattr(m, a)) for a in _PATH_ATTRS if isinstance(getattr(m, a, None), (str, bool, int)))
        optional = tuple((a, getattr(m, a) is None) for a in ("fc", "pos_embed") if hasattr(m, a))
        path.add((type(m).__name__, switches, optional))
    return frozenset(path)


@pytest.mark.slow
def test_every_registered_model_shares_its_code_path_with_a_representative():
    """A model whose forward path no representative takes would escape the graph-break test below."""
    covered = {_code_path(n) for n in REPRESENTATIVE}
    missing = [n for n in lstmvision.list_models() if _code_path(n) not in covered]
    assert not missing, f"add a representative for {missing} (their forward path is not compiled by this file)"


@pytest.mark.slow
def test_sequencer_fused_backend_compiles_without_graph_breaks():
    """The backend kwarg path (one rnn2d call per mixer, PyTorch loop) traces as one graph too."""
    torch._dynamo.reset()
    model = tiny_model("sequencer2d_s", rnn_backend="fused")
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, [str(r.reason)[:200] for r in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_no_graph_breaks_and_same_outputs(name):
    torch._dynamo.reset()
    model = tiny_model(name)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        explanation = torch._dynamo.explain(model)(x)
        assert explanation.graph_break_count == 0, [str(r.reason)[:200] for r in explanation.break_reasons]
        assert explanation.graph_count == 1
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_no_graph_breaks_with_grad_enabled_and_training_backward():
    torch._dynamo.reset()
    model = tiny_model("sequencer2d_s").train()
    x = torch.randn(2, 3, SIZE, SIZE)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    compiled(x).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model(x).square().sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("ours, theirs, kwargs", [
    (LSTM, torch.nn.LSTM, {}), (GRU, torch.nn.GRU, {}), (RNN, torch.nn.RNN, {}),
    (RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
])
@pytest.mark.parametrize("batch_first", [True, False])
def test_compile_friendly_rnns_equal_torch_ones(ours, theirs, kwargs, batch_first):
    ref = theirs(6, 4, num_layers=2, bidirectional=True, batch_first=batch_first, **kwargs)
    mine = ours(6, 4, num_layers=2, bidirectional=True, batch_first=batch_first, **kwargs)
    mine.load_state_dict(ref.state_dict())  # same parameter names
    for x in (torch.randn(3, 5, 6), torch.randn(5, 6)):  # batched and unbatched
        for a, b in zip(torch.utils._pytree.tree_leaves(ref(x)), torch.utils._pytree.tree_leaves(mine(x))):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch._dynamo.reset()
    assert torch._dynamo.explain(mine)(torch.randn(3, 5, 6)).graph_break_count == 0
