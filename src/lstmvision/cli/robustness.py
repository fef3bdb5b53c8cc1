"""`lstmvision robustness`: argparse glue for `lstmvision.commands.analysis.robustness.robustness_report`."""
from __future__ import annotations

import argparse
from fractions import Fraction

from lstmvision.cli._common import (
    INITIAL_CHECKPOINT_HELP,
    PRETRAINED_HELP,
    add_analysis_arguments,
    add_input_size_arguments,
)
from lstmvision.constants import CORRUPTION_NAMES, SEVERITIES


def parse_fraction(text: str) -> float:
    """'0.0039', '1/255' -> float."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (use e.g. 0.004 or 1/255)") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="PATH", help="trained model folder (a run folder: its best/)")
    p.add_argument("--model", "-m", metavar="NAME",
                   help="registered name or timm:NAME (random init unless --pretrained / --initial-checkpoint)")
    p.add_argument("--pretrained", action="store_true", help=PRETRAINED_HELP)
    p.add_argument("--initial-checkpoint", metavar="PATH", help=INITIAL_CHECKPOINT_HELP)
    p.add_argument("--baseline", metavar="SPEC", help="model (folder, name or timm:NAME) to normalise CE against")
    p.add_argument("--imagenet", choices=["auto", "yes", "no"], default="auto",
                   help="use the AlexNet constants (auto: when the model has 1000 classes)")
    p.add_argument("--corruptions", nargs="+", default=list(CORRUPTION_NAMES), metavar="NAME",
                   help="subset of the 15 corruptions (default all)")
    p.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES), help="subset of 1..5")
    p.add_argument("--no-corruptions", action="store_true", help="skip ImageNet-C (e.g. attacks only)")
    add_input_size_arguments(p, "input size (default: the model's training size)")
    p.add_argument("--attack", choices=["fgsm", "pgd"], help="also measure adversarial top-1")
    p.add_argument("--eps", type=parse_fraction, default=1 / 255, help="L-inf budget in [0, 1] (default 1/255)")
    p.add_argument("--pgd-steps", type=int, default=5)
    p.add_argument("--pgd-step-size", type=parse_fraction, default=0.5 / 255)
    add_analysis_arguments(p)


def run(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import analysis_reads, check_weights_flags, resolve_input_size, warn_random_weights
    from lstmvision.commands.analysis.common import check_report, open_images
    from lstmvision.commands.analysis.robustness import check_robustness_settings, robustness_report, table
    from lstmvision.device import resolve_device
    from lstmvision.models.loading import create_model
    from lstmvision.outputs import checkpoint_reads

    if bool(args.checkpoint) == bool(args.model):
        raise ValueError("give exactly one of --checkpoint PATH or --model NAME")
    resolve_input_size(args)
    check_weights_flags(args.checkpoint, args.model, args.pretrained, args.initial_checkpoint)
    check_robustness_settings(args.corruptions, args.severities, args.eps, args.pgd_steps)
    if args.no_corruptions and not args.attack:
        raise ValueError("--no-corruptions leaves nothing to do without --attack")
    reads = analysis_reads(args) + checkpoint_reads(args.baseline)
    check_report(args.output, "robustness", args.overwrite, reads)
    device = resolve_device(args.device)
    weights = args.initial_checkpoint or (True if args.pretrained else None)
    model = create_model(args.checkpoint or args.model, weights, args.num_classes, args.in_chans).eval()
    warn_random_weights(model)
    baseline = create_model(args.baseline, None, args.num_classes, args.in_chans).eval() if args.baseline else None
    if baseline is not None:
        warn_random_weights(baseline, "--baseline names no weights: give a checkpoint folder")
    data = open_images(args.data, args.split, args.limit, args.seed, crop_pct=args.crop_pct,
                       interpolation=args.interpolation, batch_size=args.batch_size, workers=args.workers)
    report = robustness_report(model, data, args.output, [] if args.no_corruptions else args.corruptions,
                               args.severities, baseline, args.imagenet, args.img_size, args.attack, args.eps,
                               args.pgd_steps, args.pgd_step_size, device, args.seed, args.overwrite, reads)
    print(table(report))
    print(f"wrote {args.output}/robustness.json, robustness.md" + (", robustness.png" if "top1" in report else ""))
    return 0
