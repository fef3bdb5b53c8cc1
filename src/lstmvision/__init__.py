"""lstmvision: LSTM-based vision backbones (Sequencer, Vision-LSTM) with weights, training and analyses."""
from lstmvision.inference import Classifier, Prediction
from lstmvision.models import create_model, get_pretrained_cfg, list_models, register_timm
from lstmvision.weights import WeightsError, load_pretrained, save_pretrained

__version__ = "0.1.0"
__all__ = [
    "Classifier",
    "Prediction",
    "WeightsError",
    "create_model",
    "get_pretrained_cfg",
    "list_models",
    "register_timm",
    "load_pretrained",
    "save_pretrained",
]
