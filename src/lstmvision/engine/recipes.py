"""Training recipes: named presets of every training setting; each value can be overridden by a flag or YAML.

Numbers come from the project specs (`sequencer.md` §4, `vision-lstm.md` §4). `lr: null` with `lr_base` and
`lr_base_size` means "scale linearly with the global batch": lr = lr_base * global_batch / lr_base_size.
"""
from __future__ import annotations

from typing import Any

# Every setting the trainer understands, with the value used when neither recipe, YAML nor flag sets it.
DEFAULTS: dict[str, Any] = dict(
    model="sequencer2d_tiny", pretrained=False, initial_checkpoint=None, num_classes=None, in_chans=None, model_kwargs={},
    data=None, limit_train=None, limit_val=None, strict_images=False,
    epochs=10, batch_size=128, grad_accum=1,
    lr=None, lr_base=1e-3, lr_base_size=256,
    opt="adamw", opt_eps=1e-8, opt_betas=[0.9, 0.999], momentum=0.9, weight_decay=0.05, clip_grad=None,
    layer_decay=None,
    sched="cosine", warmup_epochs=0, warmup_lr=1e-6, min_lr=1e-6, cooldown_epochs=0,
    decay_milestones=[90, 180, 270], decay_rate=0.1,  # timm's defaults (step / multistep schedules)
    img_size=224, crop_pct=0.875, interpolation="bicubic", train_interpolation="random", mean=None, std=None,
    scale=[0.08, 1.0], ratio=[0.75, 1.3333333], hflip=0.5, color_jitter=0.4, aa=None,
    reprob=0.0, remode="pixel", mixup=0.0, cutmix=0.0, mixup_prob=1.0, mixup_switch_prob=0.5, smoothing=0.1,
    drop_path=0.0, drop=0.0,
    ema=False, ema_decay=0.9998,
    amp="none", channels_last=False, compile=False, grad_checkpointing=False,
    device=None, workers=2, threads=None, seed=42, output="runs", experiment=None, resume=None,
    log_interval=50, checkpoint_steps=0, eval_ema=True,
    task="classify",
    # semantic segmentation (task 'segment', `lstmvision segment train`); img_size is the crop size
    seg_base_size=[2048, 512], seg_ratio_range=[0.5, 2.0], seg_cat_max_ratio=0.75, photometric=True,
    seg_stride=None, aux_weight=0.4, decoder_channels=None,
    # object detection (task 'detect', `lstmvision detect train`); img_size is the short side of evaluation
    detector="fasterrcnn", train_split="train2017", val_split="val2017", train_sizes=None, max_size=None,
    fpn_channels=256, rpn_pre_nms_top_n=None, rpn_post_nms_top_n=None, box_batch_size_per_image=None,
)

RECIPES: dict[str, dict[str, Any]] = {
    # sequencer.md §4.1: ImageNet-1k from scratch (S: 300 epochs + 10 cooldown, global batch 2048).
    "sequencer-imagenet": dict(
        model="sequencer2d_s", epochs=300, cooldown_epochs=10, batch_size=256,
        lr=None, lr_base=2e-3, lr_base_size=2048, opt="adamw", weight_decay=0.05, sched="cosine",
        warmup_epochs=20, warmup_lr=1e-6, min_lr=1e-6, img_size=224, crop_pct=0.875, interpolation="bicubic",
        train_interpolation="random", scale=[0.08, 1.0], hflip=0.5, aa="rand-m9-mstd0.5-inc1-mmax9",
        reprob=0.25, remode="pixel", mixup=0.8, cutmix=1.0, smoothing=0.1, drop_path=0.1, amp="fp16",
        clip_grad=None, ema=False,
    ),
    # sequencer.md §4.2: fine-tune the 224 weights at 392 (L: drop-path 0.4), global batch 512.
    "sequencer-finetune-392": dict(
        model="sequencer2d_l", epochs=30, cooldown_epochs=0, batch_size=64,
        lr=None, lr_base=5e-5, lr_base_size=512, opt="adamw", weight_decay=1e-8, sched="cosine",
        warmup_epochs=0, img_size=392, crop_pct=1.0, aa="rand-m9-mstd0.5-inc1-mmax9", reprob=0.25,
        mixup=0.8, cutmix=1.0, smoothing=0.1, drop_path=0.4, amp="fp16",
    ),
    # sequencer.md §4.3: transfer (e.g. CIFAR-10) from ImageNet weights with a new head; global batch 512.
    "sequencer-transfer": dict(
        model="sequencer2d_s", epochs=200, cooldown_epochs=10, batch_size=128,
        lr=None, lr_base=1e-4, lr_base_size=512, opt="adamw", weight_decay=1e-4, clip_grad=1.0,
        sched="cosine", warmup_epochs=5, warmup_lr=1e-6, img_size=224, aa="rand-m9-mstd0.5-inc1-mmax9",
        reprob=0.0, mixup=0.8, cutmix=1.0, smoothing=0.1, drop_path=0.1, amp="fp16",
    ),
    # vision-lstm.md §4.1: ViL ImageNet-1k pre-training at 192 px; 1e-3 per 1024 → 2e-3 at 2048; bf16.
    # Any registered ViL (vil2_* or vil_*) trains with it; vil2_tiny is the default.
    "vil-imagenet": dict(
        model="vil2_tiny", epochs=800, batch_size=256, lr=None, lr_base=1e-3, lr_base_size=1024,
        opt="adamw", weight_decay=0.05, clip_grad=1.0, sched="cosine", warmup_epochs=5, warmup_lr=1e-6,
        min_lr=1e-6, img_size=192, crop_pct=1.0, interpolation="bicubic", scale=[0.08, 1.0], hflip=0.5,
        aa="3a", color_jitter=0.3, mixup=0.8, cutmix=1.0, mixup_switch_prob=0.5, smoothing=0.0,
        drop_path=0.0, amp="bf16", compile=True,
    ),
    # Small data (Fashion-MNIST / MNIST, 28 px grayscale) on a CPU: the default main job.
    "sequencer-small": dict(
        model="sequencer2d_tiny", epochs=8, batch_size=128, lr=2e-3, opt="adamw", weight_decay=0.05,
        sched="cosine", warmup_epochs=1, warmup_lr=1e-4, min_lr=1e-5, img_size=28, crop_pct=1.0,
        interpolation="bilinear", train_interpolation="bilinear", scale=[0.9, 1.0], ratio=[0.95, 1.05],
        hflip=0.5, color_jitter=0.0, aa=None, reprob=0.0, mixup=0.0, cutmix=0.0, smoothing=0.1,
        drop_path=0.0, amp="none", ema=False, workers=1,
    ),
}
# The same small recipe, longer and wider, for a GPU run to convergence (results/ target >= 94%).
RECIPES["sequencer-small-long"] = dict(RECIPES["sequencer-small"], model="sequencer2d_small32", epochs=100,
                                       img_size=28, batch_size=256, lr=2e-3, warmup_epochs=3, reprob=0.25,
                                       ema=True, ema_decay=0.999, workers=4)
# vision-lstm.md §4.3: UperNet on ADE20K (ViL-T; S/B: --drop-path 0.05/0.1 --decoder-channels 384). The
# official 160k iterations at batch 16 on the 20,210 training images are 127 epochs; 1500 warmup iterations
# are 1.19 epochs. Layer-wise lr decay 0.65 over the backbone's block groups; the decoder trains at full lr.
RECIPES["upernet-ade20k"] = dict(
    task="segment", model="vil2_tiny", epochs=127, batch_size=16, lr=5e-4, opt="adamw", weight_decay=0.05,
    layer_decay=0.65, sched="cosine", warmup_epochs=1.19, warmup_lr=1e-6, min_lr=1e-6, img_size=512,
    seg_base_size=[2048, 512], seg_ratio_range=[0.5, 2.0], seg_cat_max_ratio=0.75, hflip=0.5, photometric=True,
    seg_stride=341, aux_weight=0.4, smoothing=0.0, drop_path=0.0, amp="fp16", mixup=0.0, cutmix=0.0,
    aa=None, reprob=0.0, color_jitter=0.0, ema=False, workers=4, log_interval=50,
)
# The same protocol scaled to `lstmvision segment scenes` (96 px Fashion-MNIST scenes) on a CPU.
RECIPES["upernet-small"] = dict(
    RECIPES["upernet-ade20k"], model="sequencer2d_tiny", epochs=10, batch_size=16, lr=1e-3, layer_decay=None,
    warmup_epochs=1, img_size=64, seg_base_size=[384, 96], seg_stride=32, amp="none", workers=1,
    decoder_channels=64,
)
# Mask R-CNN 1x on COCO 2017 (mmdet's schedule, as the ViL and Sequencer detection follow-ups train it): 12 epochs,
# lr x0.1 after epochs 8 and 11, AdamW lr 1e-4 wd 0.05 at a global batch of 16 (2 images x 8 GPUs), short side
# drawn from 480..800 (step 32), long side <= 1333, evaluation at 800; 500 warmup iterations (0.07 of the 7,330
# per epoch). Layer-wise lr decay 0.9 over the backbone's layer groups (FPN and heads at full lr).
RECIPES["maskrcnn-coco-1x"] = dict(
    task="detect", detector="maskrcnn", model="vil2_tiny", epochs=12, batch_size=2, lr=1e-4, opt="adamw",
    weight_decay=0.05, layer_decay=0.9, sched="multistep", decay_milestones=[8, 11], decay_rate=0.1,
    warmup_epochs=0.07, warmup_lr=1e-7, min_lr=1e-7, img_size=800, train_sizes=list(range(480, 801, 32)),
    max_size=1333, fpn_channels=256, hflip=0.5, smoothing=0.0, drop_path=0.1, mixup=0.0, cutmix=0.0, aa=None,
    reprob=0.0, color_jitter=0.0, amp="none", ema=False, workers=4, log_interval=50,
)
# The same schedule scaled to `lstmvision detect scenes` (128 px Fashion-MNIST scenes) on a CPU.
RECIPES["detect-small"] = dict(
    RECIPES["maskrcnn-coco-1x"], detector="fasterrcnn", model="sequencer2d_tiny", epochs=8, batch_size=8, lr=1e-3,
    layer_decay=None, decay_milestones=[6, 7], warmup_epochs=1, warmup_lr=1e-5, min_lr=1e-5, img_size=128,
    train_sizes=[96, 112, 128], max_size=None, fpn_channels=64, drop_path=0.0, workers=1, log_interval=10,
)
# detect-small made cheaper for a CPU: RoI sampling and proposals sized for scenes of a few objects. On 128 px
# scenes of <= 4 garments torchvision's 512 sampled RoIs per image are mostly background, and their RoIAlign
# backward is about half of a CPU step; 128 RoIs still hold up to 32 positives (a quarter), 600 / 300 proposals
# still cover every object (see docs/detection.md, benchmarks/detect_cpu.py).
RECIPES["detect-cpu"] = dict(RECIPES["detect-small"], rpn_pre_nms_top_n=[600, 300], rpn_post_nms_top_n=[600, 300],
                             box_batch_size_per_image=128)
RECIPES["vil-small"] = dict(RECIPES["sequencer-small-long"], model="vil2_tiny", drop_path=0.0,
                            model_kwargs={"patch_size": 4})
DEFAULT_RECIPE = "sequencer-small"


def get_recipe(name: str) -> dict[str, Any]:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(sorted(RECIPES))}")
    return dict(RECIPES[name])
