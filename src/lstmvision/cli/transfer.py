"""`lstmvision transfer`: the VTAB-1K protocol (lr sweep on train800/val200, retrain on 1000, test) per task."""
from __future__ import annotations

import argparse
from pathlib import Path

from lstmvision.constants import VTAB_LRS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--initial-checkpoint", metavar="CKPT",
                   help="weights to fine-tune: a save_pretrained folder or a training run folder (uses best/)")
    p.add_argument("--model", "-m", help="registered model: trained from scratch (the baseline), or fine-tuned from "
                                         "its released weights with --pretrained")
    p.add_argument("--pretrained", action="store_true",
                   help="fine-tune the released weights of --model's tag (sequencer2d_s: sequencer2d_s.in1k; "
                        "downloaded or from the cache)")
    p.add_argument("--scratch", action="store_true", help="train --initial-checkpoint's architecture (model "
                   "arguments, channels, input size, normalisation) from random weights: the baseline for it")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR",
                   help="one folder per task: an ImageFolder tree (train/ and val/|test/) or MNIST idx files; or a "
                        "wds:/hfds:/hfids: source (written once as image folders under OUTPUT/sources/)")
    p.add_argument("--output", "-o", default="runs/transfer", help="results and run folders (default %(default)s)")
    p.add_argument("--epochs", type=int, default=50, help="epochs per fit (paper: 50)")
    p.add_argument("--lrs", type=float, nargs="+", default=list(VTAB_LRS), help="learning rates of the sweep "
                   "(at batch 64; scaled linearly with --batch-size)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per lr and for the final runs (paper: 5)")
    p.add_argument("--train-size", type=int, default=800, help="train images drawn from each task's training split")
    p.add_argument("--val-size", type=int, default=200, help="val images drawn from each task's training split")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/val draw")
    p.add_argument("--batch-size", "-b", type=int, default=64)
    p.add_argument("--layer-decay", type=float, default=0.65, help="layer-wise lr decay")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-frac", type=float, default=0.1, help="fraction of the epochs spent warming up")
    p.add_argument("--img-size", type=int, help="input size (default: the model's)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="mixed precision (paper: bf16)")
    p.add_argument("--workers", "-j", type=int, default=2, help="data-loader workers")
    p.add_argument("--threads", type=int, help="CPU compute threads (default: cores left after the workers)")


def backbone(args: argparse.Namespace):
    """What `--initial-checkpoint` / `--model` (with `--pretrained` or from scratch) / `--scratch` ask to fine-tune."""
    from lstmvision.cli import UserError
    from lstmvision.commands.transfer import backbone_from_folder, backbone_from_name
    from lstmvision.models import get_pretrained_cfg, is_model
    from lstmvision.models.hub import weights_file
    from lstmvision.models.registry import released_tag
    from lstmvision.weights import find_checkpoint

    ckpt = args.initial_checkpoint
    if args.model and ckpt:
        raise UserError("give --initial-checkpoint CKPT (fine-tune it) or --model NAME (from scratch, or from its "
                        "released weights with --pretrained), not both")
    if args.pretrained and not args.model:
        raise UserError("--pretrained fine-tunes the released weights of --model NAME: give the model name")
    if args.pretrained and args.scratch:
        raise UserError("--pretrained (released weights) and --scratch (random weights) exclude each other")
    if args.model:
        if not is_model(args.model):
            raise UserError(f"unknown model {args.model!r}; run `lstmvision models` for the list")
        found = backbone_from_name(args.model, args.img_size)
        if args.pretrained:
            tag = released_tag(args.model)
            released = get_pretrained_cfg(tag)
            found.weights = str(weights_file(released, tag))
            found.mean, found.std = list(released["mean"]), list(released["std"])
        return found
    if not ckpt:
        raise UserError("give --initial-checkpoint CKPT, or --model NAME (from scratch; with --pretrained from its "
                        "released weights)")
    if not Path(ckpt).exists() and is_model(ckpt):
        raise UserError(f"{ckpt!r} is a model name, not weights: use --model {ckpt} (from scratch) or --model {ckpt} "
                        "--pretrained (its released weights)")
    return backbone_from_folder(find_checkpoint(ckpt, prefer="best"), args.img_size, scratch=args.scratch)


def run(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import data_reads, weights_reads
    from lstmvision.commands.transfer import Protocol, local_tasks, open_tasks, transfer
    from lstmvision.outputs import check_output_folder

    protocol = Protocol(epochs=args.epochs, lrs=tuple(args.lrs), seeds=args.seeds, train_size=args.train_size,
                        val_size=args.val_size, split_seed=args.split_seed, batch_size=args.batch_size,
                        layer_decay=args.layer_decay, weight_decay=args.weight_decay, warmup_frac=args.warmup_frac,
                        device=args.device, amp=args.amp, workers=args.workers, threads=args.threads)
    # settings, the output folder and every task's splits first: before any weights are read or fetched
    protocol.check()
    # a run folder of its own (resumed when the settings match), never inside a task's data or the weights
    check_output_folder(args.output, "--output", [*(r for d in args.data for r in data_reads(d)),
                                                  *weights_reads(args)])
    args.data = local_tasks(args.data, args.output)
    open_tasks(args.data, protocol)
    result = transfer(args.data, backbone(args), protocol, args.output)
    print((Path(args.output) / "transfer.md").read_text(), end="")
    print(f"transfer: mean test top-1 {result['mean_test_top1']:.2f}% over {len(result['tasks'])} task(s); "
          f"tables {Path(args.output) / 'transfer.md'} and transfer.json")
    return 0
