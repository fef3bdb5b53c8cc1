"""The schema of the training settings: the type, count and help of every setting (`SETTINGS`, on/off
`SWITCHES`), and the vocabularies they are checked against. Plain data with no torch import, so the command line
builds its flags from it without loading the engine; `lstmvision.engine.config` checks values against it."""
from __future__ import annotations

from typing import Any


def flag(key: str) -> str:
    """The command-line flag of setting `key` (`lr_base` -> `--lr-base`)."""
    return "--" + key.replace("_", "-")


# setting → (type, nargs, help); every DEFAULTS key that is not a switch has one
SETTINGS: dict[str, tuple[Any, Any, str]] = {
    "model": (str, None, "registered model name (see `lstmvision models`)"),
    "initial_checkpoint": (str, None, "initial weights: a weights file, or a saved / run folder (a new head if "
                                      "classes differ)"),
    "num_classes": (int, None, "classes (default: from the data)"),
    "in_chans": (int, None, "input channels (default: 1 for grayscale data, else 3)"),
    "model_kwargs": (str, "*", "extra model arguments as key=value (values parsed as YAML)"),
    "data": (str, None, "ImageFolder tree (train/, val/|validation/), a folder of MNIST idx files, or shards: "
                        "wds:DIR|PATTERN, hfds:PATH|NAME, hfids:... (docs/scale.md) (default: $LSTMVISION_DATA or "
                        "/usr/share/datasets/fashion-mnist)"),
    "limit_train": (int, None, "use a fixed random subset of N training images (of a stream: every shard that "
                               "holds one is read)"),
    "limit_val": (int, None, "use a fixed random subset of N validation images"),
    "epochs": (int, None, "epochs (plus --cooldown-epochs)"),
    "batch_size": (int, None, "batch size per process"),
    "grad_accum": (int, None, "gradient accumulation steps"),
    "lr": (float, None, "learning rate (default: --lr-base scaled by global batch / --lr-base-size)"),
    "lr_base": (float, None, "base learning rate for linear scaling"),
    "lr_base_size": (int, None, "global batch at which --lr-base applies"),
    "opt": (str, None, "timm optimizer name (adamw, sgd, lamb, ...)"),
    "opt_eps": (float, None, "optimizer epsilon"),
    "opt_betas": (float, "+", "optimizer betas"),
    "momentum": (float, None, "SGD momentum"),
    "weight_decay": (float, None, "weight decay (not on biases / norms / no_weight_decay())"),
    "clip_grad": (float, None, "clip gradient norm to this value"),
    "layer_decay": (float, None, "layer-wise lr decay"),
    "sched": (str, None, "timm scheduler (cosine, step, multistep, ...)"),
    "decay_milestones": (int, "+", "epochs at which the multistep schedule multiplies the lr by --decay-rate"),
    "decay_rate": (float, None, "lr factor of the step / multistep schedules at each decay"),
    "warmup_epochs": (float, None, "warmup epochs"),
    "warmup_lr": (float, None, "warmup start lr"),
    "min_lr": (float, None, "final lr"),
    "cooldown_epochs": (int, None, "epochs at min lr after the schedule"),
    "img_size": (int, None, "input size"),
    "crop_pct": (float, None, "eval center-crop fraction"),
    "interpolation": (str, None, "eval interpolation"),
    "train_interpolation": (str, None, "train interpolation (random = bilinear or bicubic)"),
    "mean": (float, "+", "normalisation mean"),
    "std": (float, "+", "normalisation std"),
    "scale": (float, 2, "RandomResizedCrop scale range"),
    "ratio": (float, 2, "RandomResizedCrop aspect-ratio range"),
    "hflip": (float, None, "horizontal-flip probability"),
    "color_jitter": (float, None, "color jitter (0 = off)"),
    "aa": (str, None, "auto-augment policy, e.g. rand-m9-mstd0.5-inc1-mmax9 or 3a ('none' = off)"),
    "reprob": (float, None, "RandomErasing probability"),
    "remode": (str, None, "RandomErasing mode"),
    "mixup": (float, None, "Mixup alpha (0 = off)"),
    "cutmix": (float, None, "CutMix alpha (0 = off)"),
    "mixup_prob": (float, None, "probability of Mixup/CutMix per batch"),
    "mixup_switch_prob": (float, None, "probability of CutMix instead of Mixup"),
    "smoothing": (float, None, "label smoothing"),
    "drop_path": (float, None, "stochastic depth rate"),
    "drop": (float, None, "head dropout"),
    "ema_decay": (float, None, "EMA decay"),
    "amp": (str, None, "mixed precision: none, bf16 or fp16"),
    "device": (str, None, "cpu, cuda, cuda:1 (default: cuda if available)"),
    "workers": (int, None, "data-loader worker processes per rank"),
    "threads": (int, None, "CPU compute threads per process (default: cores left after the workers)"),
    "seed": (int, None, "random seed"),
    "output": (str, None, "parent folder of run folders"),
    "experiment": (str, None, "run folder name (default: date-model-size)"),
    "resume": (str, None, "resume a run: its folder, its last/ folder or last/state.pth"),
    "log_interval": (int, None, "steps between log lines"),
    "checkpoint_steps": (int, None, "also save last/ every N steps inside an epoch (0 = only at epoch end)"),
    # segmentation only (`lstmvision segment train`)
    "seg_base_size": (int, 2, "LONG SHORT: the image scale random resizing and evaluation start from"),
    "seg_ratio_range": (float, 2, "random resize ratio range around --seg-base-size"),
    "seg_cat_max_ratio": (float, None, "random crops retry while one class covers more than this fraction"),
    "seg_stride": (int, None, "sliding-window stride of evaluation (default: 2/3 of --img-size, the crop)"),
    "aux_weight": (float, None, "loss weight of the auxiliary FCN head (0 = no auxiliary head)"),
    "decoder_channels": (int, None, "UperNet decoder channels (default: 192 for ViL-T, 384 for larger ViL, "
                                    "else 256)"),
    # detection only (`lstmvision detect train`)
    "detector": (str, None, "torchvision detector: fasterrcnn, retinanet, fcos or maskrcnn (instance masks)"),
    "train_split": (str, None, "COCO split to train on: DATA/annotations/instances_SPLIT.json and DATA/SPLIT/"),
    "val_split": (str, None, "COCO split to validate on (as --train-split)"),
    "train_sizes": (int, "+", "short sides of training images, one drawn per image (multi-scale; default: "
                              "--img-size, the short side of evaluation)"),
    "max_size": (int, None, "longest side of resized images (default: the largest of --img-size and --train-sizes "
                            "x 1333 / 800, COCO's ratio)"),
    "fpn_channels": (int, None, "channels of the feature pyramid and the detection heads"),
    "rpn_pre_nms_top_n": (int, 2, "R-CNNs: TRAIN TEST region proposals kept per pyramid level before NMS "
                                  "(default: torchvision's 2000 1000)"),
    "rpn_post_nms_top_n": (int, 2, "R-CNNs: TRAIN TEST region proposals kept per image after NMS (default: "
                                   "torchvision's 2000 1000)"),
    "box_batch_size_per_image": (int, None, "R-CNNs: RoIs sampled per training image for the box and mask losses "
                                            "(default: torchvision's 512)"),
}
SEGMENT_KEYS = ("seg_base_size", "seg_ratio_range", "seg_cat_max_ratio", "seg_stride", "aux_weight",
                "decoder_channels", "photometric")
DETECT_KEYS = ("detector", "train_split", "val_split", "train_sizes", "max_size", "fpn_channels",
               "rpn_pre_nms_top_n", "rpn_post_nms_top_n", "box_batch_size_per_image")
TASK_NAMES = ("classify", "segment", "detect")
TASK_WORDS = {"classify": "classification", "segment": "segmentation", "detect": "detection"}
TASK_COMMANDS = {"classify": "lstmvision train", "segment": "lstmvision segment train",
                 "detect": "lstmvision detect train"}


def task_mismatch(run_task: str, task: str, resume: str | None) -> str:
    """The one-line refusal of a run of `run_task` (resumed from `resume`, or set up by a recipe or config)
    under the command that trains `task`."""
    what = f"--resume {resume} is" if resume else "these settings are"
    again = f" --resume {resume}" if resume else ""
    return (f"{what} a {TASK_WORDS[run_task]} run, not a {TASK_WORDS[task]} one: use "
            f"`{TASK_COMMANDS[run_task]}`{again}")
SWITCHES: dict[str, str] = {
    "pretrained": "start from the released weights of the model's tag (sequencer2d_s: sequencer2d_s.in1k; "
                  "downloaded or from the cache; see `lstmvision models --pretrained`)",
    "ema": "keep an EMA of the weights (evaluated too)",
    "channels_last": "channels-last memory format",
    "compile": "torch.compile the model",
    "grad_checkpointing": "gradient checkpointing",
    "strict_images": "an unreadable image is an error instead of being skipped",
    "photometric": "photometric distortion (brightness, contrast, saturation, hue) of training images",
}
SWITCH_KEYS = (*SWITCHES, "eval_ema")
ERASE_MODES = ("const", "rand", "pixel")
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "plateau", "poly", "constant", "rsqrt")
