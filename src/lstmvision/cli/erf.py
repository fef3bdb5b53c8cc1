"""`lstmvision erf`: argparse glue for `lstmvision.commands.analysis.erf.erf_report`."""
from __future__ import annotations

import argparse

from lstmvision.cli._common import (
    add_analysis_arguments,
    add_analysis_models,
    add_input_size_arguments,
    analysis_specs,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_analysis_models(p, "trained model folders")
    p.add_argument("--layers", nargs="+",
                   help="dotted module names (e.g. stages.1 blocks.3); 'MODEL=LAYER' restricts a layer to the model "
                        "labelled MODEL (its folder or model name). Default: per model, the output of every stage "
                        "(its last block) of a hierarchical model (Sequencer stages.0.., ConvNeXt stages.0.., "
                        "ResNet layer1..layer4) and 4 evenly spaced blocks ending with the last of an isotropic one "
                        "(ViL, ViT/DeiT: blocks.1 3 5 7 of 8)")
    p.add_argument("--images", "-n", type=int, default=32, help="number of random images summed (exactly N)")
    add_input_size_arguments(p, "input size (default: each model's training size)")
    p.add_argument("--layout", choices=["auto", "nhwc", "nchw"], default="auto", help="layout of 4-D outputs")
    p.add_argument("--train-aug", action="store_true", help="random-resized crop + flip instead of eval resize")
    add_analysis_arguments(p, limit=False)
    p.set_defaults(batch_size=8)


def run(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import analysis_reads, resolve_input_size, warn_random_weights
    from lstmvision.commands.analysis.common import check_report, open_images
    from lstmvision.commands.analysis.erf import erf_report, table
    from lstmvision.device import resolve_device
    from lstmvision.models.loading import create_model

    resolve_input_size(args)
    specs = analysis_specs(args)
    reads = analysis_reads(args)
    check_report(args.output, "erf", args.overwrite, reads)
    if args.images < 1:
        raise ValueError(f"--images must be at least 1, got {args.images}")
    data = open_images(args.data, args.split, None, args.seed, crop_pct=args.crop_pct,
                       interpolation=args.interpolation, batch_size=args.batch_size, workers=args.workers)
    # all loaded first: a bad spec fails before any work
    models = [create_model(spec, pretrained, args.num_classes, args.in_chans).eval() for spec, pretrained in specs]
    for model in models:
        warn_random_weights(model)
    report = erf_report(models, data, args.layers, args.images, args.output, args.img_size, args.layout,
                        args.train_aug, args.seed, resolve_device(args.device), args.overwrite, reads)
    print(table(report))
    print(f"wrote {len(report['maps'])} maps (.npy), erf.png and erf.json to {args.output}")
    return 0
