"""Object detection and instance segmentation over any lstmvision or timm backbone: torchvision's Faster R-CNN,
RetinaNet, FCOS and Mask R-CNN (`create_detector`).

Layout of a detector built by `create_detector` (a `Detector`; the torchvision model is `Detector.detector`):

- `detector.backbone`: `PyramidBackbone`, the one adapter for every backbone:
  - `body`: `lstmvision.models.upernet.BackboneFeatures`, the classifier read through its `forward_intermediates`
    (the classification checkpoint's keys under `body.model.`);
  - `levels`: one `PyramidLevel` per stride 8, 16, 32 (`pyramid_plan`): the backbone map of that stride as it
    is (hierarchical backbones: Sequencer2D, ResNet, ...), max-pooled from a finer map, or upsampled by
    transposed convolutions from a coarser one (isotropic backbones: ViL's last block, as ViTDet's simple
    feature pyramid: deconv / identity / pool). Strides that are no power of two (Sequencer2D's 7 and 14) are
    resampled onto the power-of-two grid torchvision's anchors and RoI pooling assume;
  - `fpn`: torchvision's `FeaturePyramidNetwork` over the three levels with `LastLevelMaxPool` (R-CNNs: strides
    8-64) or `LastLevelP6P7` (RetinaNet, FCOS: strides 8-128).
- `detector.transform`: `SizedTransform`, torchvision's resize-and-normalise with the sizes of the run: training
  draws the short side from `train_sizes` per image (multi-scale), evaluation uses `img_size`; the long side is
  at most `max_size` (default: 1333 / 800 of the largest short side). torchvision's 800 px default is never used.
- anchors: three octave scales (4, 5, 6.3 x the stride) and three aspect ratios per location (FCOS: one point of
  the stride's size), in pixels of the resized image.

Labels are 1..`num_classes` (0 is the background of the R-CNNs' classifiers; RetinaNet and FCOS are trained never
to predict it). The heads are torchvision's, their widths following `fpn_channels` (box head 4x, mask head 1x:
torchvision's 1024 and 256 at 256 channels), so small detectors stay small.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from lstmvision.constants import DETECTOR_PREFIX, DETECTORS, IMAGENET_MEAN, IMAGENET_STD
from lstmvision.layers.pyramid import LEVEL_STRIDES, PyramidLevel, pyramid_plan
from lstmvision.models.upernet import BackboneFeatures, build_backbone, load_backbone_weights, prefix_group_matcher
from lstmvision.weights import find_checkpoint, load_state_dict_into, read_config, read_state_dict

LEVEL_NAMES = ("p3", "p4", "p5")
ANCHOR_OCTAVES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
ASPECT_RATIOS = (0.5, 1.0, 2.0)


# -------------------------------------------------------------------------------------------- pyramid
class PyramidBackbone(nn.Module):
    """A classifier as torchvision's detection backbone: an OrderedDict of `out_channels`-channel maps, p3-p5
    (strides 8, 16, 32) and the FPN's extra levels (see the module docstring)."""

    def __init__(self, model: nn.Module, out_channels: int = 256, extra: str = "pool"):
        super().__init__()
        info = list(getattr(model, "feature_info", None) or [])
        if not info or not hasattr(model, "forward_intermediates"):
            raise TypeError(f"{type(model).__name__} has no forward_intermediates/feature_info to read maps from")
        plan = pyramid_plan([f["reduction"] for f in info])
        taps = sorted({i for i, _ in plan})
        self.body = BackboneFeatures(model, indices=taps)
        self.levels = nn.ModuleList(PyramidLevel(taps.index(i), s, src, int(info[i]["num_chs"]))
                                    for (i, src), s in zip(plan, LEVEL_STRIDES))
        blocks = LastLevelMaxPool() if extra == "pool" else LastLevelP6P7(out_channels, out_channels)
        self.fpn = FeaturePyramidNetwork([int(info[i]["num_chs"]) for i, _ in plan], out_channels, extra_blocks=blocks)
        self.out_channels = out_channels
        self.taps = [i for i, _ in plan]

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        maps = self.body(x)
        hw = x.shape[-2:]
        return self.fpn(OrderedDict((n, level(maps, hw)) for n, level in zip(LEVEL_NAMES, self.levels)))


# ----------------------------------------------------------------------------------------- transform
class SizedTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform (resize, normalise, batch with padding to a multiple of 32) with the
    run's sizes: in training the short side is drawn from `train_sizes` for each image, in evaluation it is
    `eval_size`; the long side is at most `max_size`."""

    def __init__(self, train_sizes: Sequence[int], eval_size: int, max_size: int, mean: Sequence[float],
                 std: Sequence[float]):
        super().__init__(min_size=tuple(train_sizes), max_size=max_size, image_mean=list(mean), image_std=list(std))
        self.train_sizes, self.eval_sizes = tuple(int(s) for s in train_sizes), (int(eval_size),)

    def train(self, mode: bool = True) -> "SizedTransform":
        # torchvision evaluates at min_size[-1]: the sizes follow the mode instead
        self.min_size = self.train_sizes if mode else self.eval_sizes
        return super().train(mode)


def default_max_size(img_size: int) -> int:
    """The long-side limit for short side `img_size`: COCO's 1333 for 800."""
    return int(round(img_size * 1333 / 800))


# ------------------------------------------------------------------------------------------- detector
def anchor_generator(strides: Sequence[int], points: bool = False) -> AnchorGenerator:
    """Anchors of each level (see the module docstring); `points`: one stride-sized square (FCOS)."""
    if points:
        return AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
    sizes = tuple(tuple(4 * s * o for o in ANCHOR_OCTAVES) for s in strides)
    return AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(strides))


def _rcnn_kwargs(backbone: PyramidBackbone, masks: bool, num_classes: int,
                 sampling: dict[str, int] | None = None) -> dict[str, Any]:
    c = backbone.out_channels
    kw: dict[str, Any] = dict(
        rpn_anchor_generator=anchor_generator((*LEVEL_STRIDES, 64)),
        box_roi_pool=MultiScaleRoIAlign(list(LEVEL_NAMES), output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(c * 7 * 7, 4 * c), box_predictor=FastRCNNPredictor(4 * c, num_classes),
        box_score_thresh=0.05, box_detections_per_img=100, **(sampling or {}))
    if masks:
        kw.update(mask_roi_pool=MultiScaleRoIAlign(list(LEVEL_NAMES), output_size=14, sampling_ratio=2),
                  mask_head=MaskRCNNHeads(c, [c] * 4, 1), mask_predictor=MaskRCNNPredictor(c, c, num_classes))
    return kw


def rcnn_sampling(rpn_pre_nms_top_n: Sequence[int] | None = None, rpn_post_nms_top_n: Sequence[int] | None = None,
                  box_batch_size_per_image: int | None = None) -> dict[str, int]:
    """torchvision's R-CNN arguments for proposals kept per level before NMS and per image after it (TRAIN,
    TEST) and RoIs sampled per training image; None keeps torchvision's 2000/1000, 2000/1000 and 512."""
    kw: dict[str, int] = {}
    for name, pair in (("rpn_pre_nms_top_n", rpn_pre_nms_top_n), ("rpn_post_nms_top_n", rpn_post_nms_top_n)):
        if pair is not None:
            if len(pair) != 2 or min(pair) < 1:
                raise ValueError(f"{name} is TRAIN TEST: two counts >= 1, got {list(pair)}")
            kw[f"{name}_train"], kw[f"{name}_test"] = int(pair[0]), int(pair[1])
    if box_batch_size_per_image is not None:
        if box_batch_size_per_image < 1:
            raise ValueError(f"box_batch_size_per_image must be >= 1, got {box_batch_size_per_image}")
        kw["box_batch_size_per_image"] = int(box_batch_size_per_image)
    return kw


def _torchvision_detector(kind: str, backbone_model: nn.Module, num_classes: int, fpn_channels: int,
                          sampling: dict[str, int] | None = None) -> nn.Module:
    """torchvision's `kind` over `backbone_model`, `num_classes` + 1 outputs (0: background); `sampling`:
    `rcnn_sampling`'s arguments (R-CNNs only)."""
    rcnn = kind in ("fasterrcnn", "maskrcnn")
    backbone = PyramidBackbone(backbone_model, fpn_channels, extra="pool" if rcnn else "p6p7")
    n = num_classes + 1
    if kind == "fasterrcnn":
        return FasterRCNN(backbone, None, **_rcnn_kwargs(backbone, False, n, sampling))
    if kind == "maskrcnn":
        return MaskRCNN(backbone, None, **_rcnn_kwargs(backbone, True, n, sampling))
    strides = (*LEVEL_STRIDES, 64, 128)
    if kind == "retinanet":
        return RetinaNet(backbone, n, anchor_generator=anchor_generator(strides), score_thresh=0.05,
                         detections_per_img=100)
    return FCOS(backbone, n, anchor_generator=anchor_generator(strides, points=True), score_thresh=0.05,
                detections_per_img=100)


@contextlib.contextmanager
def _captured(modules: dict[str, nn.Module]) -> Iterator[dict[str, tuple[tuple, Any]]]:
    """Inside: `seen[name]` is (positional inputs, output) of the last call of `modules[name]`."""
    seen: dict[str, tuple[tuple, Any]] = {}
    handles = [m.register_forward_hook(lambda _m, args, out, name=name: seen.__setitem__(name, (args, out)))
               for name, m in modules.items()]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _training_branch(*modules: nn.Module) -> Iterator[None]:
    """Inside: `modules` take their training branch; their submodules stay in the mode they are in."""
    modes = [m.training for m in modules]
    for m in modules:
        m.training = True
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode


@contextlib.contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Inside: the CPU's random stream (and on CUDA `device`'s) seeded with `seed`; after: as before."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


class Detector(nn.Module):
    """A torchvision detector (`detector`) with what lstmvision's engine and loader read: `num_classes` (object
    categories; labels 1..num_classes), `kind`, layer groups of the backbone for layer-wise lr decay.

    `forward(images, targets)` is torchvision's: training mode with targets gives the loss dict, evaluation
    mode a list of dicts (`boxes` xyxy in input pixels, `labels`, `scores`; Mask R-CNN: `masks` (N, 1, H, W)
    probabilities)."""

    def __init__(self, detector: nn.Module, num_classes: int, kind: str):
        super().__init__()
        self.detector = detector
        self.num_classes, self.kind = num_classes, kind
        self.class_names: list[str] = []

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        return self.detector(images, targets)

    @torch.no_grad()
    def losses_and_detections(self, images: list[Tensor], targets: list[dict[str, Tensor]], seed: int = 0
                              ) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        """For a validation loss: the training losses of `images` against `targets` and their detections,
        exactly what `forward(images)` gives in evaluation mode, from one pass in evaluation mode.

        torchvision computes losses only in training mode, which would also normalise the backbone's
        BatchNorm layers with batch statistics (and move their running ones), turn dropout and drop-path on and
        draw a training image size. Here no module leaves evaluation mode: the forward runs as in evaluation
        (the targets resized with the images), and torchvision's own loss code is applied to what it computed
        (R-CNNs: the RPN and RoI heads run their training branch on the backbone's features, their own
        `training` flag set and nothing below it; RetinaNet and FCOS: `compute_loss` on the head outputs). The
        R-CNNs' random choice of the anchors and RoIs the losses are taken over is seeded with `seed`; the global
        random state is left as it was."""
        if self.training:
            raise RuntimeError("losses_and_detections evaluates: put the model in eval mode first")
        tv = self.detector
        rcnn = self.kind in ("fasterrcnn", "maskrcnn")
        watched = dict(transform=tv.transform, backbone=tv.backbone) if rcnn else dict(
            transform=tv.transform, head=tv.head, anchors=tv.anchor_generator)
        with _captured(watched) as seen:
            detections = tv(images, targets)
        batch, sized_targets = seen["transform"][1]
        if not rcnn:
            (maps,), head_outputs = seen["head"]
            per_level = ([m.shape[-2] * m.shape[-1] for m in maps],) if self.kind == "fcos" else ()
            return tv.compute_loss(sized_targets, head_outputs, seen["anchors"][1], *per_level), detections
        features = seen["backbone"][1]
        with _seeded(batch.tensors.device, seed), _training_branch(tv.rpn, tv.roi_heads):
            proposals, losses = tv.rpn(batch, features, sized_targets)
            _, head_losses = tv.roi_heads(features, proposals, batch.image_sizes, sized_targets)
        return {**losses, **head_losses}, detections

    def features(self, images: list[Tensor]) -> list[Tensor]:
        """The pyramid maps of `images` (transformed as the detector does)."""
        batch, _ = self.detector.transform(images)
        return list(self.detector.backbone(batch.tensors).values())

    @property
    def _body(self) -> BackboneFeatures:
        return self.detector.backbone.body

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """The backbone's layer groups; pyramid and heads match none (timm: the last group, full lr)."""
        return prefix_group_matcher(self._body.group_matcher(coarse), "detector.backbone.body.")

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"detector.backbone.body." + n for n in self._body.no_weight_decay()}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self._body.set_grad_checkpointing(enable)


def create_detector(
    model: str,
    detector: str,
    num_classes: int,
    in_chans: int = 3,
    img_size: int = 800,
    train_sizes: Sequence[int] | None = None,
    max_size: int | None = None,
    fpn_channels: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    pretrained: str | os.PathLike | None = None,
    drop_path_rate: float = 0.0,
    model_kwargs: dict[str, Any] | None = None,
    rpn_pre_nms_top_n: Sequence[int] | None = None,
    rpn_post_nms_top_n: Sequence[int] | None = None,
    box_batch_size_per_image: int | None = None,
) -> Detector:
    """Detector `detector` (one of DETECTORS) for `num_classes` object categories on backbone `model` (a
    registered name or 'timm:NAME', classifier-free, built for `img_size`).

    Images are resized to short side `img_size` in evaluation and one of `train_sizes` (default: `img_size`) in
    training, long side at most `max_size` (default: `default_max_size` of the largest short side), and
    normalised by `mean`/`std`. R-CNNs only: `rpn_pre_nms_top_n` / `rpn_post_nms_top_n` (TRAIN, TEST) are the
    proposals kept per pyramid level before NMS and per image after it, `box_batch_size_per_image` the RoIs
    sampled per training image for the box and mask losses (None: torchvision's 2000/1000, 2000/1000, 512).

    `pretrained`: initial weights (`read_initial_weights`): a classification checkpoint goes into the backbone
    (head dropped); a detector checkpoint of the same detector, backbone and `fpn_channels` fills the whole
    detector, all but its class outputs when the number of classes differs (its backbone `model_kwargs` are
    kept unless given). `detector_args` holds this call's JSON-able arguments (not `pretrained`):
    `create_detector(**args)` rebuilds it; `model_name` is 'detector:' + model and `model_kwargs` the args
    without num_classes."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    if num_classes < 1 or img_size < 32 or fpn_channels < 1:
        raise ValueError(f"a detector needs num_classes >= 1, img_size >= 32 and fpn_channels >= 1; got "
                         f"{num_classes}, {img_size}, {fpn_channels}")
    if detector == "fcos" and (fpn_channels % 32 or fpn_channels < 64):
        raise ValueError(fcos_channels_message(fpn_channels))
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(f"mean/std need {in_chans} values (one per input channel), got {len(mean)} and {len(std)}")
    rcnn = detector in ("fasterrcnn", "maskrcnn")
    sampling = [rpn_pre_nms_top_n, rpn_post_nms_top_n, box_batch_size_per_image] if rcnn else [None] * 3
    sampling_kwargs = rcnn_sampling(*sampling)
    initial = read_initial_weights(pretrained, detector, model, fpn_channels) if pretrained is not None else None
    kwargs = {**(initial.model_kwargs if initial else {}), **(model_kwargs or {})}
    sizes = [int(s) for s in (train_sizes or [img_size])]
    max_size = int(max_size or default_max_size(max(img_size, *sizes)))
    net = build_backbone(model, in_chans, img_size, drop_path_rate, kwargs)
    if initial is not None and initial.state is None:
        load_backbone_weights(net, initial.source)
    tv = _torchvision_detector(detector, net, num_classes, fpn_channels, sampling_kwargs)
    tv.transform = SizedTransform(sizes, img_size, max_size, mean, std)
    det = Detector(tv, num_classes, detector)
    cfg = dict(tv.backbone.body.pretrained_cfg)
    if isinstance(cfg.get("first_conv"), str):
        cfg["first_conv"] = f"detector.backbone.body.{cfg['first_conv']}"
    cfg.update(architecture=f"{detector}_{model}", input_size=(in_chans, img_size, img_size), mean=tuple(mean),
               std=tuple(std), num_classes=num_classes, classifier=_classifier_names(detector))
    det.pretrained_cfg = cfg
    det.detector_args = dict(model=model, detector=detector, num_classes=num_classes, in_chans=in_chans,
                             img_size=img_size, train_sizes=sizes, max_size=max_size, fpn_channels=fpn_channels,
                             mean=[float(v) for v in mean], std=[float(v) for v in std],
                             drop_path_rate=drop_path_rate, model_kwargs=kwargs,
                             rpn_pre_nms_top_n=_ints(sampling[0]), rpn_post_nms_top_n=_ints(sampling[1]),
                             box_batch_size_per_image=sampling[2])
    det.model_name = DETECTOR_PREFIX + model
    det.model_kwargs = {k: v for k, v in det.detector_args.items() if k != "num_classes"}
    if initial is not None and initial.state is not None:
        load_detector_weights(det, initial.state, str(initial.source))
    return det


def _ints(values: Sequence[int] | None) -> list[int] | None:
    return None if values is None else [int(v) for v in values]


# ------------------------------------------------------------------------------------ initial weights
@dataclass
class InitialWeights:
    """Where initial weights come from (`source`: a file or a checkpoint folder) and, for a detector's, its
    `state` dict and backbone `model_kwargs` (`state` None: classification weights for the backbone)."""

    source: Path
    state: dict[str, Tensor] | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def read_initial_weights(path: str | os.PathLike, detector: str, model: str, fpn_channels: int) -> InitialWeights:
    """The initial weights at `path` (a weights file, a saved folder or a training run folder: its best/, else
    last/) for a `detector` on backbone `model`: a detector checkpoint of another detector, backbone or
    `fpn_channels` is a ValueError (a lone weights file has no config to tell: its keys are checked on load)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"initial weights not found: {path}")
    if path.is_file():
        state = read_state_dict(path)
        is_detector = any(k.startswith("detector.") for k in state)
        return InitialWeights(path, state if is_detector else None)
    folder = find_checkpoint(path, prefer="best")
    saved = read_config(folder)
    if not saved["architecture"].startswith(DETECTOR_PREFIX):
        return InitialWeights(folder)
    args = saved["kwargs"]
    theirs, ours = (args.get("detector"), args.get("model")), (detector, model)
    if theirs != ours:
        raise ValueError(f"{folder} is a {theirs[0]} on {theirs[1]}, this run a {detector} on {model}: fine-tune it "
                         f"with --detector {theirs[0]} --model {theirs[1]}, or give classification weights")
    if int(args.get("fpn_channels", fpn_channels)) != fpn_channels:
        raise ValueError(f"{folder} has --fpn-channels {args['fpn_channels']}, this run {fpn_channels}: fine-tune it "
                         f"with --fpn-channels {args['fpn_channels']}")
    return InitialWeights(folder, read_state_dict(folder), dict(args.get("model_kwargs") or {}))


def load_detector_weights(det: Detector, state: dict[str, Tensor], source: str) -> None:
    """A detector's weights into `det`: all of them when the number of classes matches; otherwise all but the
    class outputs (`_classifier_names`), which keep their fresh initialisation. Any other mismatch is one
    WeightsError naming the keys. Says which in one line (stderr; a warning when the class outputs start new)."""
    own = det.state_dict()
    heads = [f"{n}.{p}" for n in _classifier_names(det.kind) for p in ("weight", "bias") if f"{n}.{p}" in own]
    differ = [k for k in heads if k in state and state[k].shape != own[k].shape]
    if differ:
        rows, own_rows = state[differ[0]].shape[0], own[differ[0]].shape[0]
        theirs = rows // (own_rows // (det.num_classes + 1)) - 1  # rows: (classes + background) x anchors
        state = dict(state, **{k: own[k] for k in heads})
    load_state_dict_into(det, state, source)
    if not differ:
        print(f"lstmvision: initial weights: the whole {det.kind} (backbone, FPN and heads) from {source}",
              file=sys.stderr)
        return
    rcnn = det.kind in ("fasterrcnn", "maskrcnn")
    kept = ("RPN, box head" + (" and mask head" if det.kind == "maskrcnn" else "")) if rcnn else \
        "box regression head and classification tower"
    outputs = ", ".join(sorted({k.split(".")[-2] for k in heads}))
    warnings.warn(f"{source}: a {det.kind} for {theirs} classes, this one has {det.num_classes}: loaded its "
                  f"backbone, FPN, {kept}; the class outputs ({outputs}) start new", stacklevel=2)


def fcos_channels_message(fpn_channels: int) -> str:
    # GroupNorm(32) needs 2+ values per group on the 1x1 top level of small images
    return (f"FCOS's head normalises 32 groups of channels: --fpn-channels must be a multiple of 32 and at least 64, "
            f"got {fpn_channels}")


def _classifier_names(detector: str) -> tuple[str, ...]:
    """The class-dependent output layers (what a checkpoint with other classes may not load)."""
    if detector in ("fasterrcnn", "maskrcnn"):
        names = ("detector.roi_heads.box_predictor.cls_score", "detector.roi_heads.box_predictor.bbox_pred")
        return names + (("detector.roi_heads.mask_predictor.mask_fcn_logits",) if detector == "maskrcnn" else ())
    return ("detector.head.classification_head.cls_logits",)
