"""`lstmvision samples`: Fashion-MNIST images as PNG files to try the commands on (`lstmvision.data.samples`)."""
from __future__ import annotations

import argparse

from lstmvision.cli._common import add_overwrite_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", required=True, help="folder for the PNG files (made if missing)")
    p.add_argument("--count", "-n", type=int, default=10, help="how many images, the first of the split "
                                                               "(default %(default)s)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which split (default %(default)s)")
    p.add_argument("--source", help="folder of MNIST-format idx files (default: $LSTMVISION_DATA or the Debian "
                                    "package's /usr/share/datasets/fashion-mnist)")
    add_overwrite_argument(p, "sample files")
    p.epilog = ("Files are named SPLIT_INDEX_CLASS.png after the image's split, its index there and its class "
                "(test_0000_ankle_boot.png), so that `lstmvision predict` can be checked against the name.")


def run(args: argparse.Namespace) -> int:
    from lstmvision.data.samples import write_samples

    if args.count < 1:
        raise ValueError(f"--count must be a positive integer, got {args.count}")
    paths = write_samples(args.output, args.count, args.split, args.source, args.overwrite)
    more = f" ... {paths[-1].name}" if len(paths) > 1 else ""
    print(f"samples: wrote {len(paths)} {args.split} image(s) to {args.output}: {paths[0].name}{more}")
    return 0
