"""`lstmvision resolution-sweep`: argparse glue for `lstmvision.analysis.resolution.resolution_sweep`."""
from __future__ import annotations

import argparse

from lstmvision.cli._common import add_analysis_arguments, analysis_specs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="PATH",
                   help="trained model folders (save_pretrained / training run / best/)")
    p.add_argument("--model", nargs="+", default=[], metavar="NAME",
                   help="registered names or timm:NAME (random init unless --pretrained)")
    p.add_argument("--pretrained", help="weights for a single --model (file, or run / checkpoint folder)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sizes", nargs="+", type=int, help="absolute test sizes in pixels")
    g.add_argument("--factors", nargs="+", type=float, help="test sizes relative to each model's training size")
    p.add_argument("--native-size", type=int, help="training size used with --factors (default: the model's)")
    add_analysis_arguments(p)


def run(args: argparse.Namespace) -> int:
    from lstmvision.commands.analysis.common import open_images
    from lstmvision.commands.analysis.resolution import resolution_sweep, table
    from lstmvision.device import resolve_device
    from lstmvision.models.loading import load_model

    specs = analysis_specs(args)
    device = resolve_device(args.device)
    data = open_images(args.data, args.split, args.limit, args.seed, crop_pct=args.crop_pct,
                       interpolation=args.interpolation, batch_size=args.batch_size, workers=args.workers)
    models = (load_model(spec, pretrained, args.num_classes, args.in_chans) for spec, pretrained in specs)
    report = resolution_sweep(models, data, args.output, args.sizes, args.factors, args.native_size, device)
    print(table(report))
    print(f"wrote {args.output}/resolution.json, resolution.md, resolution.png")
    return 0
