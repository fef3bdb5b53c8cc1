"""`lstmvision benchmark`: argparse glue for `lstmvision.commands.benchmark.benchmark`."""
from __future__ import annotations

import argparse
import json

from lstmvision.cli._common import add_overwrite_argument
from lstmvision.constants import PRECISIONS, RNN2D_BACKENDS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", action="append", required=True, metavar="NAME",
                   help="model to measure (repeatable): NAME, ref:NAME (official formulation: nn.LSTM modules) "
                        "or timm:NAME")
    p.add_argument("--compare", action="append", default=[], metavar="SPEC",
                   help="baseline measured in the same process (repeatable), e.g. timm:sequencer2d_s or ref:NAME")
    p.add_argument("--batch-size", "-b", type=int, default=8)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--mode", choices=["infer", "train"], default="infer")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for input and model")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--kernels", choices=RNN2D_BACKENDS, default=None,
                   help="rnn2d backend of lstmvision models: module = nn.LSTM (cuDNN/oneDNN), reference = the "
                        "step-by-step math loop, fused, triton (default: LSTMVISION_KERNELS, else auto = module); "
                        "ref: models ignore it")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=40, help="timed iterations per round")
    p.add_argument("--repeats", type=int, default=1, help="rounds (throughput is the median)")
    p.add_argument("--no-macs", action="store_true", help="skip counting MACs")
    p.add_argument("--no-check", action="store_true", help="skip the logits comparison against baselines")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    add_overwrite_argument(p, "an existing --json file")


def run(args: argparse.Namespace) -> int:
    from lstmvision.commands.benchmark import benchmark, table
    from lstmvision.outputs import check_outputs, write_text

    if args.json:  # before the measurement, not after it
        check_outputs([args.json], [], args.overwrite)
    report = benchmark(
        args.model, args.compare, args.batch_size, args.img_size, args.precision, args.mode, args.device,
        args.channels_last, args.compile, args.kernels, args.warmup, args.iters, args.repeats,
        macs=not args.no_macs, check=not args.no_check,
        command="lstmvision " + " ".join(getattr(args, "argv", None) or ["benchmark", "..."]),
    )
    print(table(report))
    if args.json:
        write_text(args.json, json.dumps(report, indent=2))
    return 0
