"""`lstmvision download`: fetch released weights into the caches and verify them (`lstmvision.commands.download`)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME",
                   help="a model (its default tag), MODEL.TAG, a pattern such as 'vil2_*', or 'all' "
                        "(see `lstmvision models --pretrained`)")
    p.add_argument("--no-verify", action="store_true", help="only fetch; do not load the weights into the model")
    p.epilog = ("Files go to the Hugging Face cache ($HF_HOME/hub) or torch.hub's ($TORCH_HOME/hub/checkpoints), "
                "where create_model(NAME, pretrained=True) finds them, also with HF_HUB_OFFLINE=1.")


def run(args: argparse.Namespace) -> int:
    from lstmvision.commands.download import download

    for row in download(args.names, verify=not args.no_verify):
        checked = f", verified: {row['params']:,} parameters loaded" if "params" in row else ""
        print(f"{row['tag']}: {row['file']} ({row['mb']} MB from {row['source']}{checked})", flush=True)
    return 0
