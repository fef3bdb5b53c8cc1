"""transformers code for a model folder written by `lstmvision.save_for_hf`: the folder carries this file as
`modeling_lstmvision.py` and its `config.json` names it in `auto_map`, so that

    AutoModelForImageClassification.from_pretrained(FOLDER_OR_REPO, trust_remote_code=True)

builds the model in a process that never imported lstmvision itself (lstmvision must be installed: transformers
names the missing package, `pip install lstmvision`). Importing lstmvision registers its models in timm, and the
classes below are transformers' own TimmWrapper classes under the folder's names, so the model,
`pipeline("image-classification", ...)` and `id2label` behave exactly as on the route without remote code
(`model_type` is `timm_wrapper`, which transformers knows). The image processor also gives one-channel models
(grayscale, e.g. Fashion-MNIST) one-channel input, as lstmvision's Classifier does (the pipeline converts every
image to RGB first). lstmvision never imports this module itself.
"""
import torch
from transformers import (
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
    TimmWrapperImageProcessor,
    TimmWrapperModel,
)
from transformers.image_transforms import to_pil_image
from transformers.image_utils import make_flat_list_of_images

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


class LstmVisionImageProcessor(TimmWrapperImageProcessor):
    """timm's eval transform of the model's `pretrained_cfg`, on images converted to the model's channels ('L' for
    one input channel, else 'RGB')."""

    def preprocess(self, images, return_tensors="pt"):
        if not isinstance(images, torch.Tensor):
            mode = "L" if self.data_config["input_size"][0] == 1 else "RGB"
            images = [to_pil_image(image).convert(mode) for image in make_flat_list_of_images(images)]
        return super().preprocess(images, return_tensors=return_tensors)
