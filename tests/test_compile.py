"""torch.compile sees every registered family as one graph (no graph breaks) and matches eager."""
import pytest
import torch

import lstmvision
from deploy_helpers import SIZE, tiny_model
from lstmvision.models.rnn import GRU, LSTM, RNN

# one model per distinct code path: BiLSTM2D (cat, add, single direction, no fc), GRU/RNN mixers, vanilla 1-D
# mixer, the position-embedded vanilla model, and ViL v2 / v1 / stride 8
REPRESENTATIVE = [
    "sequencer2d_s", "sequencer2d_s_add", "sequencer2d_s_horizontal", "sequencer2d_s_unidirectional",
    "gru_sequencer2d_s", "rnn_sequencer2d_s", "v_sequencer_s", "v_sequencer_s_pe",
    "vil2_tiny", "vil_tiny", "vil_tinyplus_stride8",
]


def test_representatives_cover_every_family_and_exist():
    assert set(REPRESENTATIVE) <= set(lstmvision.list_models())
    assert {n.split("_")[0].rstrip("2") for n in REPRESENTATIVE} >= {"sequencer2d", "vil"}


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
