"""`lstmvision transfer`: the VTAB-1K protocol (lr sweep on train800/val200, retrain on 1000, test) per task."""
from __future__ import annotations

import argparse
from pathlib import Path

from lstmvision.constants import VTAB_LRS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretrained", help="weights to fine-tune: a save_pretrained folder or a training run folder "
                                        "(uses best/); with --scratch a registered model name or such a folder")
    p.add_argument("--scratch", action="store_true", help="train from scratch (the baseline): --pretrained names a "
                   "registered model, or a checkpoint / run folder whose architecture (model arguments, channels, "
                   "input size, normalisation) is built with random weights")
    p.add_argument("--model", "-m", help="registered model to train from scratch (instead of --pretrained)")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR",
                   help="one folder per task: an ImageFolder tree (train/ and val/|test/) or MNIST idx files")
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
    """What `--pretrained` / `--scratch` / `--model` ask to fine-tune."""
    from lstmvision.cli import UserError
    from lstmvision.commands.transfer import backbone_from_folder, backbone_from_name
    from lstmvision.models import is_model
    from lstmvision.weights import find_checkpoint

    if args.model and args.pretrained:
        raise UserError("give --pretrained CKPT (fine-tune) or --model NAME (from scratch), not both")
    if args.model or args.scratch:
        name = args.model or args.pretrained
        if not name:
            raise UserError("--scratch needs --pretrained NAME (a registered model) or a checkpoint folder")
        if args.scratch and not args.model and not is_model(name) and Path(name).exists():
            return backbone_from_folder(find_checkpoint(name, prefer="best"), args.img_size, scratch=True)
        if not is_model(name):
            raise UserError(f"unknown model {name!r}; run `lstmvision models` for the list")
        return backbone_from_name(name, args.img_size)
    if not args.pretrained:
        raise UserError("give --pretrained CKPT, or --model NAME / --pretrained NAME --scratch for the baseline")
    if not Path(args.pretrained).exists() and is_model(args.pretrained):
        raise UserError(f"{args.pretrained!r} is a model name, not weights; add --scratch to train it from scratch")
    return backbone_from_folder(find_checkpoint(args.pretrained, prefer="best"), args.img_size)


def run(args: argparse.Namespace) -> int:
    from lstmvision.commands.transfer import Protocol, transfer

    protocol = Protocol(epochs=args.epochs, lrs=tuple(args.lrs), seeds=args.seeds, train_size=args.train_size,
                        val_size=args.val_size, split_seed=args.split_seed, batch_size=args.batch_size,
                        layer_decay=args.layer_decay, weight_decay=args.weight_decay, warmup_frac=args.warmup_frac,
                        device=args.device, amp=args.amp, workers=args.workers, threads=args.threads)
    result = transfer(args.data, backbone(args), protocol, args.output)
    print((Path(args.output) / "transfer.md").read_text(), end="")
    print(f"transfer: mean test top-1 {result['mean_test_top1']:.2f}% over {len(result['tasks'])} task(s); "
          f"tables {Path(args.output) / 'transfer.md'} and transfer.json")
    return 0
