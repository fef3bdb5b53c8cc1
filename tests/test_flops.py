import pytest
import torch.nn as nn

import lstmvision
from lstmvision.models.flops import count_macs, rnn_macs


def test_rnn_macs_formula():
    lstm = nn.LSTM(8, 4, batch_first=True, bidirectional=True)
    assert rnn_macs(lstm, batch=3, steps=5) == 2 * 4 * 4 * (8 + 4) * 3 * 5
    gru = nn.GRU(8, 4, batch_first=True)
    assert rnn_macs(gru, batch=1, steps=1) == 3 * 4 * 12


@pytest.mark.slow
def test_sequencer2d_macs_match_the_paper_counts():
    for name, gmacs in [("sequencer2d_s", 8.33), ("gru_sequencer2d_s", 7.48), ("rnn_sequencer2d_s", 5.79)]:
        macs = count_macs(lstmvision.create_model(name))
        assert abs(macs["total"] / 1e9 - gmacs) < 0.01, name
        assert macs["rnn"] > 0
