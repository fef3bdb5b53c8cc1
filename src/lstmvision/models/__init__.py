"""Model families. Importing this package registers every architecture."""
from lstmvision.models import sequencer  # noqa: F401  (registers the Sequencer family)
from lstmvision.models import vil  # noqa: F401  (registers the Vision-LSTM family)
from lstmvision.models.registry import create_model, get_pretrained_cfg, is_model, list_models, register_model

__all__ = ["create_model", "get_pretrained_cfg", "is_model", "list_models", "register_model"]
