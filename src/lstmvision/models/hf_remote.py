"""transformers code for a model folder written by `lstmvision.save_for_hf`: the folder carries this file as
`modeling_lstmvision.py` and its `config.json` names it in `auto_map`, so that

    AutoModelForImageClassification.from_pretrained(FOLDER_OR_REPO, trust_remote_code=True)

builds the model in a process that never imported lstmvision itself (lstmvision must be installed: transformers
names the missing package, `pip install lstmvision`). Importing lstmvision registers its models in timm, and the
classes below are transformers' own TimmWrapper classes under the folder's names, so the model, its image
processor, `pipeline("image-classification", ...)` and `id2label` behave exactly as on the route without remote
code (`model_type` is `timm_wrapper`, which transformers knows). lstmvision never imports this module itself.
"""
from transformers import TimmWrapperConfig, TimmWrapperForImageClassification, TimmWrapperModel

import lstmvision

lstmvision.register_timm()  # at once, whatever the order in which timm and lstmvision were imported


class LstmVisionConfig(TimmWrapperConfig):
    """transformers' TimmWrapperConfig for an lstmvision architecture (`architecture`, `pretrained_cfg`)."""


class LstmVisionModel(TimmWrapperModel):
    """The backbone without its classifier: `last_hidden_state` and `pooler_output` (AutoModel)."""

    config_class = LstmVisionConfig


class LstmVisionForImageClassification(TimmWrapperForImageClassification):
    """The classifier: `logits` as lstmvision's model gives them (AutoModelForImageClassification)."""

    config_class = LstmVisionConfig
