"""`lstmvision resolution-sweep`: argparse glue for `lstmvision.commands.analysis.resolution.resolution_sweep`."""
from __future__ import annotations

import argparse

from lstmvision.cli._common import add_analysis_arguments, add_analysis_models, analysis_specs


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_analysis_models(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sizes", nargs="+", type=int, help="absolute test sizes in pixels")
    g.add_argument("--factors", nargs="+", type=float, help="test sizes relative to each model's training size")
    p.add_argument("--native-size", type=int, help="training size used with --factors (default: the model's)")
    add_analysis_arguments(p)


def run(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import analysis_reads, warn_random_weights
    from lstmvision.commands.analysis.common import check_report, open_images
    from lstmvision.commands.analysis.resolution import resolution_sweep, table
    from lstmvision.device import resolve_device
    from lstmvision.models.loading import create_model

    specs = analysis_specs(args)
    reads = analysis_reads(args)
    check_report(args.output, "resolution", args.overwrite, reads)
    device = resolve_device(args.device)
    data = open_images(args.data, args.split, args.limit, args.seed, crop_pct=args.crop_pct,
                       interpolation=args.interpolation, batch_size=args.batch_size, workers=args.workers)

    def models():  # one at a time, as the sweep measures them
        for spec, pretrained in specs:
            model = create_model(spec, pretrained, args.num_classes, args.in_chans).eval()
            warn_random_weights(model)
            yield model

    report = resolution_sweep(models(), data, args.output, args.sizes, args.factors, args.native_size, device,
                              args.overwrite, reads)
    print(table(report))
    print(f"wrote {args.output}/resolution.json, resolution.md, resolution.png")
    return 0
