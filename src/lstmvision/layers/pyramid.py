"""Feature pyramids over any backbone that has `forward_intermediates` and `feature_info`: one map per
power-of-two stride, made from the backbone's own maps.

For each stride, `pyramid_plan` picks the backbone map it is made from: the last map of that stride, as it is
(hierarchical backbones: ResNet, ConvNeXt); else the coarsest finer map, max-pooled; else the finest coarser map,
upsampled by transposed 2x2 convolutions (an isotropic backbone such as ViL, whose blocks all have stride 16: its
last block, as in ViTDet's simple feature pyramid). Strides that are no power of two (Sequencer2D's 7 and 14) are
rounded to the nearest one, and every level is resampled onto its exact grid, ceil(H / stride) x ceil(W / stride).

`FeaturePyramid` is that pyramid as a `features_only` model (`feature_cls='pyramid'`): a list of NCHW maps with
strides 4, 8, 16 and 32 and a timm `FeatureInfo`, the layout segmentation_models_pytorch's `tu-` encoders,
transformers' dense heads and torchvision's `FeaturePyramidNetwork` take. The detectors'
(`lstmvision.models.detection.PyramidBackbone`) use the same levels at strides 8, 16 and 32.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models._features import FeatureInfo
from torch import Tensor

LEVEL_STRIDES = (8, 16, 32)  # the detectors' levels p3-p5
PYRAMID_STRIDES = (4, 8, 16, 32)  # FeaturePyramid's levels
OUTPUT_FORMATS = ("NCHW", "NHWC")


def _pow2(reduction: float) -> int:
    return 2 ** round(math.log2(reduction))


def pyramid_plan(reductions: Sequence[float], strides: Sequence[int] = LEVEL_STRIDES) -> list[tuple[int, int]]:
    """For each stride, (feature_info index, power-of-two stride of that map) of the map the level is made from:
    the last map of that stride, else the coarsest finer map (pooled), else the finest coarser one (upsampled;
    an isotropic backbone: its last block)."""
    rounded = [_pow2(r) for r in reductions]
    plan = []
    for s in strides:
        same = [i for i, r in enumerate(rounded) if r == s]
        finer = [i for i, r in enumerate(rounded) if r < s]
        if same:
            i = same[-1]
        elif finer:
            i = max(finer, key=lambda j: (rounded[j], j))
        else:
            i = max(range(len(rounded)), key=lambda j: (-rounded[j], j))
        plan.append((i, rounded[i]))
    return plan


def _upsample(dim: int, factor: int) -> nn.Module:
    """`factor` = 2, 4, ...: transposed 2x2 convolutions, LayerNorm + GELU between them (ViTDet's)."""
    layers: list[nn.Module] = []
    for k in range(int(math.log2(factor))):
        if k:
            layers += [LayerNorm2d(dim), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class PyramidLevel(nn.Module):
    """One pyramid level: map `tap` of the backbone, pooled (`factor` > 1), upsampled (< 1) or as it is, then
    fitted to the level's grid (ceil(H / stride), ceil(W / stride))."""

    def __init__(self, tap: int, stride: int, source_stride: int, channels: int):
        super().__init__()
        self.tap, self.stride = tap, stride
        factor = stride / source_stride
        if factor > 1:
            self.op: nn.Module = nn.MaxPool2d(int(factor), int(factor), ceil_mode=True)
        elif factor < 1:
            self.op = _upsample(channels, int(round(1 / factor)))
        else:
            self.op = nn.Identity()

    def forward(self, maps: Sequence[Tensor], image_hw: Sequence[int]) -> Tensor:
        x = self.op(maps[self.tap])
        size = tuple(math.ceil(n / self.stride) for n in image_hw)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


def check_strides(strides: Any) -> tuple[int, ...]:
    """`strides` as a tuple, or one ValueError unless they are increasing powers of two."""
    values = tuple(strides) if isinstance(strides, (list, tuple)) else (strides,)
    if not values or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 or s & (s - 1) for s in values) \
            or list(values) != sorted(set(values)):
        raise ValueError(f"pyramid strides must be increasing powers of two (e.g. {PYRAMID_STRIDES}), got {strides!r}")
    return values


def _level_indices(out_indices: Any, count: int) -> list[int]:
    """The levels `out_indices` selects (None: all; an int n: the last n; negative indices allowed)."""
    if out_indices is None:
        return list(range(count))
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        if not 0 < out_indices <= count:
            raise ValueError(f"out_indices={out_indices} asks for the last {out_indices} of {count} pyramid levels")
        return list(range(count - out_indices, count))
    picked = list(out_indices)
    if not picked or any(not isinstance(i, int) or isinstance(i, bool) or not -count <= i < count for i in picked):
        raise ValueError(f"out_indices of the pyramid are level indices 0..{count - 1} (strides of the levels "
                         f"in order), got {out_indices!r}")
    levels = [i % count for i in picked]
    if levels != sorted(set(levels)):
        raise ValueError(f"out_indices of the pyramid must be increasing, got {out_indices!r}")
    return levels


class FeaturePyramid(nn.Module):
    """`model` as a feature extractor returning one map per stride in `strides` (4, 8, 16, 32 by default), in
    `output_fmt` (NCHW, or NHWC); `out_indices` picks levels (indices into `strides`). The maps come from
    `model.forward_intermediates`; the blocks after the last one used, the final norm and the classifier are
    pruned. `feature_info` lists each level's channels (those of the map it is made from) and stride."""

    def __init__(self, model: nn.Module, out_indices: Any = None, output_fmt: str = "NCHW",
                 strides: Sequence[int] = PYRAMID_STRIDES):
        super().__init__()
        info = list(getattr(model, "feature_info", None) or [])
        if not info or not hasattr(model, "forward_intermediates"):
            raise TypeError(f"{type(model).__name__} has no forward_intermediates/feature_info to read maps from")
        if output_fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        strides = check_strides(strides)
        plan = pyramid_plan([f["reduction"] for f in info], strides)
        levels = _level_indices(out_indices, len(strides))
        self.taps = sorted({plan[i][0] for i in levels})
        if hasattr(model, "prune_intermediate_layers"):
            model.prune_intermediate_layers(self.taps, prune_norm=True, prune_head=True)
        self.model = model
        self.levels = nn.ModuleList(
            PyramidLevel(self.taps.index(plan[i][0]), strides[i], plan[i][1], int(info[plan[i][0]]["num_chs"]))
            for i in levels
        )
        self.output_fmt = output_fmt
        self.feature_info = FeatureInfo(
            [dict(num_chs=int(info[plan[i][0]]["num_chs"]), reduction=strides[i], module=f"levels.{k}", index=i)
             for k, i in enumerate(levels)],
            out_indices=tuple(range(len(levels))),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = self.model.forward_intermediates(x, indices=self.taps, intermediates_only=True, output_fmt="NCHW")
        hw = x.shape[-2:]
        out = [level(maps, hw) for level in self.levels]
        return [y.permute(0, 2, 3, 1) for y in out] if self.output_fmt == "NHWC" else out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)
