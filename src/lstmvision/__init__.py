"""lstmvision: LSTM-based vision backbones (Sequencer, Vision-LSTM) with weights, training and analyses.

The public names below are imported on first use (PEP 562), so that `import lstmvision` (and the command line's
`--help`) does not load torch."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Classifier": "lstmvision.inference",
    "Prediction": "lstmvision.inference",
    "WeightsError": "lstmvision.weights",
    "create_model": "lstmvision.models",
    "get_pretrained_cfg": "lstmvision.models",
    "list_models": "lstmvision.models",
    "list_pretrained": "lstmvision.models",
    "push_to_hf_hub": "lstmvision.models",
    "save_for_hf": "lstmvision.weights",
    "register_timm": "lstmvision.models",
    "load_pretrained": "lstmvision.weights",
    "save_pretrained": "lstmvision.weights",
}
__all__ = [
    "Classifier", "Prediction", "WeightsError", "create_model", "get_pretrained_cfg", "list_models",
    "list_pretrained", "load_pretrained", "push_to_hf_hub", "register_timm", "save_for_hf", "save_pretrained",
]

if TYPE_CHECKING:
    from lstmvision.inference import Classifier, Prediction
    from lstmvision.models import (
        create_model,
        get_pretrained_cfg,
        list_models,
        list_pretrained,
        push_to_hf_hub,
        register_timm,
    )
    from lstmvision.weights import WeightsError, load_pretrained, save_for_hf, save_pretrained


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lstmvision' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
