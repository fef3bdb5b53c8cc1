"""Building blocks of the model families: norms, linear and conv layers, recurrent layers and token mixers, the
mLSTM layer, scan orders of a token grid, and the shared feature-extraction contract. The architectures that
assemble them live in `lstmvision.models`."""
from lstmvision.layers.conv import CONV_KINDS, CausalConv1d, GridConv2d, make_sequence_conv
from lstmvision.layers.intermediates import FeatureIntermediates
from lstmvision.layers.linear import BlockDiagonalLinear
from lstmvision.layers.mixers import RNN_TYPES, UNIONS, RNN1DMixer, RNN2DMixer, make_rnn
from lstmvision.layers.mlstm import MLSTMCell, MLSTMLayer
from lstmvision.layers.norm import MultiHeadLayerNorm, OffsetLayerNorm
from lstmvision.layers.rnn import GRU, LSTM, RNN, RNN_GATES, is_rnn
from lstmvision.layers.scan import from_scan, to_scan, transpose_grid

__all__ = [
    "CONV_KINDS", "GRU", "LSTM", "RNN", "RNN_GATES", "RNN_TYPES", "UNIONS", "BlockDiagonalLinear", "CausalConv1d",
    "FeatureIntermediates", "GridConv2d", "MLSTMCell", "MLSTMLayer", "MultiHeadLayerNorm", "OffsetLayerNorm",
    "RNN1DMixer", "RNN2DMixer", "from_scan", "is_rnn", "make_rnn", "make_sequence_conv", "to_scan", "transpose_grid",
]
