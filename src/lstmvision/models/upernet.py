"""UperNet semantic segmentation over any lstmvision or timm backbone (the ViL ADE20K recipe, vision-lstm.md §4.3).

Layout of a segmenter built by `create_segmenter`:

- `backbone`: `BackboneFeatures`, the classifier itself (`backbone.model`, the classification checkpoint's keys
  under that prefix) read through its `forward_intermediates` as a list of NCHW maps. Isotropic backbones (all
  maps one stride: ViL, timm ViT/DeiT) give four sub-block outputs at `isotropic_indices(depth)` (7, 11, 15, 23 of
  24), taken before the final norm; hierarchical ones (Sequencer, ConvNeXt, ResNet) give their last (up to) four
  stages. Layers after the last tap, the final norm and the classifier are pruned (no unused parameters).
- `neck`: `MultiScaleNeck` (BEiT's x4, x2, x1, x0.5 pyramid) for isotropic backbones, else None.
- `decoder`: segmentation_models_pytorch's `UPerNetDecoder` (per-map LayerNorm, PPM 1/2/3/6 on the coarsest map,
  FPN, fusion at the finest map's size), then `classifier` (Dropout2d(0.1) + 1x1 conv).
- `aux_head`: an FCN head (3x3 conv-BN-ReLU, Dropout2d(0.1), 1x1 conv) on map `aux_index` (2, the third map),
  weighted by `aux_weight` (0.4) in `lstmvision.tasks.segment.SegmentationLoss`; only run in training mode.

`forward_intermediates` is used for every backbone (rather than timm's `features_only` wrappers) because it keeps
the classifier's parameter names, so classification checkpoints load unchanged and `group_matcher` /
`no_weight_decay` delegate with a plain prefix, and it works the same for lstmvision and timm models.
"""
from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from torch import Tensor

from lstmvision.constants import UPERNET_PREFIX
from lstmvision.models.registry import build_model
from lstmvision.models.timm_models import create_timm_model, timm_name
from lstmvision.models.vil import VisionLSTM
from lstmvision.weights import convert_state_dict, find_checkpoint, load_state_dict_into, read_state_dict

ISOTROPIC_TAPS = (7, 11, 15, 23)  # the ViL / BEiT taps of a 24-block backbone


# --------------------------------------------------------------------------------------------- helpers
def isotropic_indices(depth: int) -> list[int]:
    """Blocks to tap in an isotropic backbone of `depth` blocks: 7, 11, 15, 23 for 24, proportional otherwise
    (round-half-up((i + 1) * depth / 24) - 1); very shallow models may repeat an index."""
    return [max(int(math.floor((i + 1) * depth / 24 + 0.5)) - 1, 0) for i in ISOTROPIC_TAPS]


def _prefix_pattern(pattern: str, prefix: str) -> str:
    # timm matches with re.match (anchored): drop each alternative's leading '^' and anchor the prefixed whole
    body = re.sub(r"(^|\|)\^", r"\1", pattern)
    return f"^{re.escape(prefix)}(?:{body})"


def prefix_group_matcher(matcher: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A timm group_matcher dict (regex strings, or lists of (regex, ordinal suffix)) for parameters under `prefix`."""
    out: dict[str, Any] = {}
    for group, spec in matcher.items():
        if spec is None or isinstance(spec, str):
            out[group] = spec if spec is None else _prefix_pattern(spec, prefix)
        elif isinstance(spec, (list, tuple)):
            out[group] = [(_prefix_pattern(p, prefix), suffix) for p, suffix in spec]
        else:
            raise TypeError(f"group_matcher entry {group!r} is {type(spec).__name__}; expected a regex or a list")
    return out


def _delegate_group_matcher(module: nn.Module, prefix: str, coarse: bool) -> dict[str, Any]:
    matcher = getattr(module, "group_matcher", None)
    if matcher is None:  # no layer structure known: the whole module is one (the first) group
        return dict(stem=f"^{re.escape(prefix)}")
    return prefix_group_matcher(matcher(coarse=coarse), prefix)


def _delegate_no_weight_decay(module: nn.Module, prefix: str) -> set[str]:
    fn = getattr(module, "no_weight_decay", None)
    return {prefix + name for name in fn()} if fn is not None else set()


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


# -------------------------------------------------------------------------------------------- modules
class BackboneFeatures(nn.Module):
    """A classifier read as a list of NCHW maps via its `forward_intermediates` (`indices` into `feature_info`).

    Default taps: `isotropic_indices` when every `feature_info` entry has one stride, else the last four entries.
    `prune` drops the layers after the last tap, the final norm and the classifier (none of them is used).
    """

    def __init__(self, model: nn.Module, indices: Sequence[int] | None = None, prune: bool = True):
        super().__init__()
        if not hasattr(model, "forward_intermediates") or not getattr(model, "feature_info", None):
            raise TypeError(f"{type(model).__name__} has no forward_intermediates/feature_info to read maps from")
        info = list(model.feature_info)
        self.isotropic = len({f["reduction"] for f in info}) == 1
        if indices is None:
            indices = isotropic_indices(len(info)) if self.isotropic else list(range(max(len(info) - 4, 0), len(info)))
        self.indices = [i % len(info) for i in indices]
        self.channels = [int(info[i]["num_chs"]) for i in self.indices]
        self.reductions = [info[i]["reduction"] for i in self.indices]
        self._taps = sorted(set(self.indices))
        if prune:
            model.prune_intermediate_layers(self._taps, prune_norm=True, prune_head=True)
        self.model = model

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        cfg = dict(getattr(self.model, "pretrained_cfg", None) or {})
        if isinstance(cfg.get("first_conv"), str):
            cfg["first_conv"] = f"model.{cfg['first_conv']}"
        return cfg

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = self.model.forward_intermediates(x, indices=self._taps, intermediates_only=True, output_fmt="NCHW")
        by_index = dict(zip(self._taps, maps))
        return [by_index[i] for i in self.indices]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return _delegate_group_matcher(self.model, "model.", coarse)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return _delegate_no_weight_decay(self.model, "model.")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


def _up2(dim: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2)


class MultiScaleNeck(nn.Module):
    """BEiT's neck: four same-stride maps -> x4 (2 transposed convs), x2, x1 and x0.5 (max-pool) resolution."""

    def __init__(self, dim: int):
        super().__init__()
        self.ops = nn.ModuleList([
            nn.Sequential(_up2(dim), nn.BatchNorm2d(dim), nn.GELU(), _up2(dim)),
            _up2(dim),
            nn.Identity(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ])

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        if len(maps) != len(self.ops):
            raise ValueError(f"the multi-scale neck takes {len(self.ops)} maps, got {len(maps)}")
        return [op(m) for op, m in zip(self.ops, maps)]


def fcn_head(in_chans: int, channels: int, num_classes: int) -> nn.Sequential:
    """The auxiliary FCN head: 3x3 conv-BN-ReLU, Dropout2d(0.1), 1x1 conv to the classes."""
    return nn.Sequential(
        nn.Conv2d(in_chans, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.Dropout2d(0.1), nn.Conv2d(channels, num_classes, 1),
    )


class UperNet(nn.Module):
    """UperNet over `backbone` (a module returning NCHW maps, finest first, with `feature_channels` channels;
    after `neck` when given). Eval: logits (B, num_classes, H, W) at the input size; training with an aux head:
    the tuple (logits, aux_logits), both at the input size (the engine's SegmentationLoss weighs them)."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_channels: Sequence[int],
        num_classes: int,
        decoder_channels: int = 256,
        aux_channels: int = 256,
        aux_index: int | None = 2,
        neck: nn.Module | None = None,
    ):
        super().__init__()
        channels = [int(c) for c in feature_channels]
        if len(channels) < 2:
            raise ValueError(f"UperNet needs at least 2 feature maps, got {len(channels)}")
        if aux_index is not None and not -len(channels) <= aux_index < len(channels):
            raise ValueError(f"aux_index {aux_index} is out of range for {len(channels)} feature maps")
        self.num_classes = num_classes
        self.feature_channels = channels
        self.aux_index = None if aux_index is None else aux_index % len(channels)
        self.backbone = backbone
        self.neck = neck
        # smp's decoder reads maps at [1, 1/2, 1/4, ...] and skips the first two: two placeholders in front
        self.decoder = UPerNetDecoder([channels[0], channels[0], *channels], len(channels) + 1, decoder_channels)
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        self.aux_head = fcn_head(channels[self.aux_index], aux_channels, num_classes) if aux_index is not None else None
        self.class_names: list[str] = []
        cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
        if isinstance(cfg.get("first_conv"), str):
            cfg["first_conv"] = f"backbone.{cfg['first_conv']}"
        cfg["classifier"] = ("classifier", "aux_head.4") if self.aux_head is not None else "classifier"
        cfg["num_classes"] = num_classes
        self.pretrained_cfg = cfg

    def features(self, x: Tensor) -> list[Tensor]:
        """The maps the decoder reads (after the neck)."""
        maps = list(self.backbone(x))
        return list(self.neck(maps)) if self.neck is not None else maps

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        maps = self.features(x)
        out = self.decoder([maps[0], maps[0], *maps])
        logits = _resize(self.classifier(self.dropout(out)), x.shape[-2:])
        if self.training and self.aux_head is not None:
            return logits, _resize(self.aux_head(maps[self.aux_index]), x.shape[-2:])
        return logits

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """The backbone's layer groups under `backbone.`; neck, decoder and heads match none (timm: the last layer)."""
        return _delegate_group_matcher(self.backbone, "backbone.", coarse)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return _delegate_no_weight_decay(self.backbone, "backbone.")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)


# -------------------------------------------------------------------------------------------- builder
def build_backbone(
    model: str, in_chans: int, img_size: int, drop_path_rate: float, kwargs: dict[str, Any]
) -> nn.Module:
    """The classifier-free backbone `model` (a registered name or 'timm:NAME') built for `img_size` (UperNet,
    detectors)."""
    kw = dict(kwargs)
    if drop_path_rate:
        kw["drop_path_rate"] = drop_path_rate
    if timm_name(model):
        return create_timm_model(timm_name(model), 0, in_chans, img_size, kw)
    kw.setdefault("img_size", img_size)  # position embeddings (ViL, Sequencer with pos_embed)
    return build_model(model, num_classes=0, in_chans=in_chans, **kw)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or "head"
    names = names if isinstance(names, (list, tuple)) else (names,)
    return tuple(f"{n}." for n in names)


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike) -> None:
    """A classification checkpoint (file, saved folder or training run folder) into a classifier-free backbone:
    foreign layouts converted (lstmvision families, timm's module filter: position embeddings resized), the
    classifier's keys dropped, every other key checked."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    source = find_checkpoint(path, prefer="best") if path.is_dir() else path
    state = read_state_dict(source)
    if hasattr(backbone, "checkpoint_filter_fn"):
        state = convert_state_dict(state, backbone)
    else:  # a timm model: its module's filter (the one timm's builder applies to pretrained weights)
        timm_filter = getattr(sys.modules.get(type(backbone).__module__), "checkpoint_filter_fn", None)
        if timm_filter is not None:
            state = timm_filter(state, backbone)
    own = backbone.state_dict()
    heads = _classifier_prefixes(backbone)
    state = {k: v for k, v in state.items() if k in own or not k.startswith(heads)}
    load_state_dict_into(backbone, state, source=str(source))


def default_decoder_channels(backbone: nn.Module) -> int:
    """192 for a ViL of width <= 192 (ViL-T), 384 for wider ViLs (S, B), 256 for any other backbone."""
    if isinstance(backbone, VisionLSTM):
        return 192 if backbone.embed_dim <= 192 else 384
    return 256


def create_segmenter(
    model: str,
    num_classes: int,
    in_chans: int = 3,
    img_size: int = 512,
    pretrained: str | os.PathLike | None = None,
    decoder_channels: int | None = None,
    drop_path_rate: float = 0.0,
    model_kwargs: dict[str, Any] | None = None,
    aux: bool = True,
) -> UperNet:
    """UperNet on backbone `model` (a registered name or 'timm:NAME'), classifier-free, built for `img_size`.

    `pretrained`: a classification checkpoint loaded into the backbone (its head dropped). Decoder channels
    default to `default_decoder_channels`. The aux head (none with `aux=False`) reads the third map (the last
    when there are only two). `segmenter_args` holds this call's JSON-able arguments (not `pretrained`):
    `create_segmenter(**model.segmenter_args)` rebuilds it. For `save_pretrained`: `model_name` is
    'upernet:' + model and `model_kwargs` the segmenter_args without num_classes.
    """
    kwargs = dict(model_kwargs or {})
    net = build_backbone(model, in_chans, img_size, drop_path_rate, kwargs)
    if pretrained is not None:
        load_backbone_weights(net, pretrained)
    channels = decoder_channels or default_decoder_channels(net)
    backbone = BackboneFeatures(net)
    neck = MultiScaleNeck(backbone.channels[0]) if backbone.isotropic and len(backbone.channels) == 4 else None
    aux_index = min(2, len(backbone.channels) - 1) if aux else None
    seg = UperNet(backbone, backbone.channels, num_classes, channels, aux_index=aux_index, neck=neck)
    seg.pretrained_cfg.update(architecture=f"upernet_{model}", input_size=(in_chans, img_size, img_size))
    seg.segmenter_args = dict(model=model, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                              decoder_channels=channels, drop_path_rate=drop_path_rate, model_kwargs=kwargs, aux=aux)
    seg.model_name = UPERNET_PREFIX + model
    seg.model_kwargs = {k: v for k, v in seg.segmenter_args.items() if k != "num_classes"}
    return seg


# ------------------------------------------------------------------------------------------ inference
def _logits(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return _resize(out, x.shape[-2:])


@torch.no_grad()
def slide_inference(model: nn.Module, img: Tensor, crop: int, stride: int, num_classes: int) -> Tensor:
    """Logits (B, num_classes, H, W) from crop x crop windows every `stride` pixels covering the whole image
    (the last window of a row/column is moved back inside it), averaged where windows overlap. An image smaller
    than the crop is zero-padded at the bottom/right to the crop first."""
    B, _, H, W = img.shape
    img = F.pad(img, (0, max(crop - W, 0), 0, max(crop - H, 0)))
    Hp, Wp = img.shape[-2:]
    h_grids = max(Hp - crop + stride - 1, 0) // stride + 1
    w_grids = max(Wp - crop + stride - 1, 0) // stride + 1
    total = img.new_zeros(B, num_classes, Hp, Wp)
    count = img.new_zeros(1, 1, Hp, Wp)
    for i in range(h_grids):
        for j in range(w_grids):
            y2, x2 = min(i * stride + crop, Hp), min(j * stride + crop, Wp)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            total[:, :, y1:y2, x1:x2] += _logits(model, img[:, :, y1:y2, x1:x2])
            count[:, :, y1:y2, x1:x2] += 1
    return (total / count)[:, :, :H, :W]


@torch.no_grad()
def segment_logits(
    model: nn.Module,
    img: Tensor,
    mode: str = "slide",
    crop: int = 512,
    stride: int = 341,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    out_size: tuple[int, int] | None = None,
) -> Tensor:
    """Test-time segmentation: each scale (the image resized by it, bilinear) and, with `flip`, its mirror, run
    'whole' or 'slide'; each pass's logits resized to `out_size` (default: the input's).

    Returns (B, num_classes, *out_size): a single pass (one scale, no flip) gives its raw logits; several passes
    give the mean of their softmax probabilities (mmseg's aug test). Argmax gives the labels either way.
    """
    if mode not in ("slide", "whole"):
        raise ValueError(f"mode must be 'slide' or 'whole', got {mode!r}")
    num_classes = getattr(model, "num_classes", None)
    if mode == "slide" and not num_classes:
        raise ValueError("slide mode needs model.num_classes")
    H, W = img.shape[-2:]
    size = tuple(out_size) if out_size is not None else (H, W)
    passes = []
    for scale in scales:
        x = img if scale == 1 else F.interpolate(
            img, size=(max(round(H * scale), 1), max(round(W * scale), 1)), mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            xi = x.flip(-1) if flipped else x
            y = _logits(model, xi) if mode == "whole" else slide_inference(model, xi, crop, stride, num_classes)
            passes.append(_resize(y.flip(-1) if flipped else y, size))
    if len(passes) == 1:
        return passes[0]
    return torch.stack([p.softmax(1) for p in passes]).mean(0)
