"""`lstmvision memory`: argparse glue for `lstmvision.commands.analysis.memory.memory_report`."""
from __future__ import annotations

import argparse

from lstmvision.cli._common import add_overwrite_argument

DEFAULT_MODELS = ["sequencer2d_s", "vil2_tiny", "timm:deit_small_patch16_224", "timm:convnext_tiny"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", nargs="+", default=[], metavar="SPEC",
                   help=f"names, timm:NAME or checkpoint folders (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="PATH", help="trained model folders")
    p.add_argument("--sizes", nargs="+", type=int, default=[224, 320, 448], help="input sizes in pixels")
    p.add_argument("--batch-size", "-b", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5, help="timed forwards per throughput measurement")
    p.add_argument("--repeats", type=int, default=3,
                   help="throughput rounds, models interleaved in each (reported: median, min, max)")
    p.add_argument("--no-throughput", action="store_true", help="measure peak memory only")
    p.add_argument("--in-chans", type=int, help="input channels for names / timm: specs")
    p.add_argument("--num-classes", type=int, help="classes for names / timm: specs")
    p.add_argument("--mlstm-backend", choices=["auto", "parallel", "chunkwise", "recurrent"],
                   help="mLSTM backend for ViL for this run (default: $LSTMVISION_MLSTM_BACKEND, else auto)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--output", "-o", required=True, help="output folder")
    add_overwrite_argument(p, "the report of an earlier run in --output")


def run(args: argparse.Namespace) -> int:
    specs = list(args.checkpoint) + list(args.model) or list(DEFAULT_MODELS)
    from lstmvision.ops import use_backend

    with use_backend(mlstm=args.mlstm_backend):  # for this command only (it may run inside a longer process)
        return _run(args, specs)


def _run(args: argparse.Namespace, specs: list[str]) -> int:
    from lstmvision.commands.analysis.common import check_report
    from lstmvision.commands.analysis.memory import memory_report, table
    from lstmvision.device import resolve_device
    from lstmvision.models.loading import create_model
    from lstmvision.outputs import checkpoint_reads

    reads = [r for spec in specs for r in checkpoint_reads(spec)]  # specs: the --checkpoint folders and --model
    check_report(args.output, "memory", args.overwrite, reads)
    device = resolve_device(args.device)
    models = (create_model(spec, None, args.num_classes, args.in_chans).eval() for spec in specs)
    report = memory_report(models, args.sizes, args.output, args.batch_size, args.warmup, args.iters,
                           not args.no_throughput, device, args.repeats, args.overwrite, reads)
    print(table(report))
    print(f"wrote {args.output}/memory.json, memory.md, memory.png")
    return 0
