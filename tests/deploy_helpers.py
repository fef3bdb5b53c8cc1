"""Tiny configurations of every registered model, for the deployment tests (export, compile, inference)."""
from __future__ import annotations

import torch

import lstmvision
from conftest import perturb_

SIZE = 56  # smallest convenient size: stem 7 -> 8x8 tokens, then 4x4
_DIMS = dict(layers=(1, 1, 1, 1), embed_dims=(16, 32, 32, 32))
# the first hidden sizes that fit each variant: with an fc any work; without (with_fc=False, vanilla 1-D
# mixers, single-direction unions) the mixer output must equal the embedding width
_HIDDEN = ((4, 8, 8, 8), (8, 16, 16, 16))


def tiny_model(name: str, num_classes: int = 5, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A small `name` with noisy weights (so that no output is trivially zero), in eval mode."""
    error = None
    for hidden in _HIDDEN:
        try:
            model = lstmvision.create_model(name, num_classes=num_classes, **{**_DIMS, "hidden_sizes": hidden, **kwargs})
            break
        except ValueError as e:
            error = e
    else:
        raise error
    return perturb_(model, scale=0.1, seed=seed).eval()
