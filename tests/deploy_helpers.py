"""Tiny configurations of every registered model, for the deployment tests (export, compile, inference)."""
from __future__ import annotations

import torch

import lstmvision
from conftest import perturb_

SIZE = 64  # Sequencer: stem 7 -> 9x9 tokens, then 4x4; ViL: 16-px patches -> 4x4 (stride 8: 7x7)
_SEQ = dict(layers=(1, 1, 1, 1), embed_dims=(16, 32, 32, 32))
# the 2-stage Fashion-MNIST presets also need 4-stage patch sizes and ratios to take the 4-stage sizes above
_SEQ_4_STAGES = dict(patch_sizes=(7, 2, 1, 1), mlp_ratios=3.0)
# the first hidden sizes that fit each Sequencer variant: with an fc any work; without (with_fc=False, vanilla
# 1-D mixers, single-direction unions) the mixer output must equal the embedding width
_SEQ_HIDDEN = ((4, 8, 8, 8), (8, 16, 16, 16))
_VIL = dict(embed_dim=16, depth=2)


def family(name: str) -> str:
    return "vil" if name.startswith("vil") else "sequencer"


def tiny_kwargs(name: str) -> list[dict]:
    if family(name) == "vil":
        return [dict(_VIL)]
    with torch.device("meta"):
        stages = len(lstmvision.create_model(name).stages)
    base = dict(_SEQ) if stages == 4 else dict(_SEQ, **_SEQ_4_STAGES)
    return [dict(base, hidden_sizes=h) for h in _SEQ_HIDDEN]


def tiny_model(name: str, num_classes: int = 5, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A small `name` with noisy weights (so that no output is trivially zero), in eval mode."""
    error = None
    for base in tiny_kwargs(name):
        try:
            model = lstmvision.create_model(name, num_classes=num_classes, **{**base, **kwargs})
            break
        except ValueError as e:
            error = e
    else:
        raise error
    return perturb_(model, scale=0.1, seed=seed).eval()
