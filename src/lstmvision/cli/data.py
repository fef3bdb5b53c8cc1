"""`lstmvision data {pack,info}`: pack image folders and idx files as shards, and describe any data source
(`lstmvision.commands.data`)."""
from __future__ import annotations

import argparse

ACTIONS = {
    "pack": "write image-class folders or idx files as WebDataset shards or a Hugging Face dataset",
    "info": "kind, splits with sample and shard counts, and classes of any data source",
}
DEFAULT_SHARD_SIZE = 1000  # lstmvision.data.packing.DEFAULT_SHARD_SIZE (not imported: --help loads no torch)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in ACTIONS.items():
        q = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        (_add_pack if name == "pack" else _add_info)(q)


def _add_pack(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="the source: an ImageFolder tree (train/ and val/ or validation/), a "
                                              "bare class folder (evaluation data only) or a folder of MNIST-format "
                                              "idx files")
    p.add_argument("out", metavar="OUT", help="folder for the data set (made; not inside SRC)")
    p.add_argument("--format", required=True, choices=["wds", "hfds"],
                   help="wds: WebDataset tar shards with timm's _info.json (read with --data wds:OUT); hfds: a "
                        "Hugging Face DatasetDict saved with save_to_disk (--data hfds:OUT or hfids:OUT)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N",
                   help="samples a shard (default %(default)s: ImageNet-1K's ~110 kB JPEGs give 1282 train shards "
                        "of ~110 MB and 50 validation shards, enough for 64 GPUs x 8 loader workers and small "
                        "enough to shuffle well; timm's and webdataset's usual is 1-2k images or ~1 GB a shard)")
    p.add_argument("--workers", "-j", type=int, default=4, metavar="N",
                   help="threads that read and check the images (default %(default)s; 0: none)")
    p.add_argument("--strict-images", action="store_true",
                   help="an unreadable image is an error (default: skipped and counted)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the data set an earlier pack wrote in OUT (a folder holding anything else, and "
                        "SRC, are never replaced)")
    p.epilog = ("Splits are written as train and validation (timm's names). Image files keep their bytes and "
                "extension (.jpeg as jpg); idx images, and formats other than jpg/png/webp, are stored as PNG. "
                "Samples keep the source's order (the readers shuffle). OUT also gets SHA256SUMS (check with "
                "`cd OUT && sha256sum -c SHA256SUMS`). The data set is written into a temporary folder beside OUT "
                "and renamed at the end: a failed or killed pack leaves OUT as it was. hfds needs about twice the "
                "data's size on disk while it runs. Needs the [data] extra: pip install 'lstmvision[data]'.")


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="PATH",
                   help="a source as --data names it: a folder (ImageFolder tree, class folder, idx files), "
                        "wds:DIR, wds:PATTERN, hfds:PATH, hfds:NAME[:split] or hfids:...")
    p.add_argument("--classes", type=int, default=10, metavar="N",
                   help="how many class names to print (default %(default)s; 0: all)")


def run(args: argparse.Namespace) -> int:
    from lstmvision.commands import data

    if args.action == "pack":
        if args.shard_size < 1:
            raise ValueError(f"--shard-size must be a positive integer, got {args.shard_size}")
        if args.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {args.workers}")
        report = data.pack(args.src, args.out, args.format, args.shard_size, args.overwrite, args.strict_images,
                           args.workers)
        print(data.pack_summary(report), flush=True)
        return 0
    if args.classes < 0:
        raise ValueError(f"--classes must be 0 or more, got {args.classes}")
    print("\n".join(data.info_lines(args.source, args.classes)))
    return 0
