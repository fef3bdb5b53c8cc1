"""Model families. Importing this package registers every architecture and its released weights (in lstmvision's
registry; timm's only after `register_timm()`)."""
from lstmvision.models import (
    sequencer,  # noqa: F401  (registers the Sequencer family)
    vil,  # noqa: F401  (registers the Vision-LSTM family)
)
from lstmvision.models.hub import push_to_hf_hub
from lstmvision.models.loading import create_model
from lstmvision.models.registry import (
    get_pretrained_cfg,
    is_model,
    list_models,
    list_pretrained,
    register_model,
    register_pretrained,
)
from lstmvision.models.sequencer import Sequencer
from lstmvision.models.timm_bridge import register_timm
from lstmvision.models.vil import VisionLSTM

__all__ = [
    "Sequencer", "VisionLSTM", "create_model", "get_pretrained_cfg", "is_model", "list_models", "list_pretrained",
    "push_to_hf_hub", "register_model", "register_pretrained", "register_timm",
]
