"""`lstmvision models [PATTERN]`: registered models with parameters, MACs and paper top-1."""
from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from lstmvision.models import create_model, get_pretrained_cfg, list_models
from lstmvision.flops import count_macs, count_params


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default=None, help="wildcard or substring filter, e.g. 'sequencer2d_*'")
    p.add_argument("--img-size", type=int, default=None, help="resolution for MACs (default: each model's own)")
    p.add_argument("--no-macs", action="store_true", help="skip the MAC count (faster)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def model_rows(names: list[str], img_size: int | None = None, macs: bool = True) -> list[dict]:
    rows = []
    for name in tqdm(names, desc="measuring", disable=len(names) < 3, leave=False):
        cfg = get_pretrained_cfg(name)
        size = img_size or cfg["input_size"][-1]
        model = create_model(name)
        row = dict(model=name, params=count_params(model), img_size=size, paper_top1=cfg.get("paper_top1"))
        if macs:
            row["gmacs"] = round(count_macs(model, (cfg["input_size"][0], size, size))["total"] / 1e9, 2)
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
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
