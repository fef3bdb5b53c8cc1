"""`lstmvision models [PATTERN]`: registered models with parameters, MACs and paper top-1 (argparse glue for
`lstmvision.flops.model_rows`)."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default=None, help="wildcard or substring filter, e.g. 'sequencer2d_*'")
    p.add_argument("--img-size", type=int, default=None, help="resolution for MACs (default: each model's own)")
    p.add_argument("--no-macs", action="store_true", help="skip the MAC count (faster)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from lstmvision.models import list_models
    from lstmvision.models.flops import model_rows

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}")
    rows = model_rows(names, args.img_size, macs=not args.no_macs)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'model':<32} {'params':>12} {'res':>5} {'GMACs':>8} {'paper top-1':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        top1 = f"{r['paper_top1']:.1f}" if r["paper_top1"] else "-"
        gmacs = f"{r['gmacs']:.2f}" if "gmacs" in r else "-"
        print(f"{r['model']:<32} {r['params']:>12,} {r['img_size']:>5} {gmacs:>8} {top1:>12}")
    return 0
