"""`lstmvision models [PATTERN]`: registered models with parameters, MACs and paper top-1, read from the committed
table `lstmvision/models/model_table.json` (written by scripts/make_model_table.py) so that the answer is immediate;
`--macs` counts them instead (`lstmvision.models.flops.model_rows`). `--pretrained` lists the released weights."""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path
from typing import Any

TABLE = "model_table.json"  # in the lstmvision.models package


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default=None, help="wildcard or substring filter, e.g. 'sequencer2d_*'")
    p.add_argument("--pretrained", action="store_true",
                   help="list the released weights (arch.tag) with their source, published top-1 and license")
    p.add_argument("--macs", action="store_true",
                   help="count parameters and MACs now instead of reading the table (minutes for all models)")
    p.add_argument("--img-size", type=int, default=None,
                   help="resolution for MACs (default: each model's own; another size is counted, as --macs)")
    p.add_argument("--no-macs", action="store_true", help="leave out the MACs column")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def read_table() -> dict[str, dict[str, Any]]:
    """model -> {params, gmacs, img_size, paper_top1} of the committed table (empty if the file is missing). Read
    as a file beside the package, not through `lstmvision.models`, whose import loads torch and every model."""
    path = Path(__file__).resolve().parents[1] / "models" / TABLE
    try:
        return {r["model"]: r for r in json.loads(path.read_text())["rows"]}
    except FileNotFoundError:
        return {}


def _match(names: list[str], pattern: str | None) -> list[str]:
    """`lstmvision.models.list_models`' filter (a wildcard, or a substring), on the table's names."""
    if not pattern:
        return sorted(names)
    pattern = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    header = f"{'model':<32} {'params':>12} {'res':>5} {'GMACs':>8} {'paper top-1':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        top1 = f"{r['paper_top1']:.1f}" if r["paper_top1"] else "-"
        gmacs = f"{r['gmacs']:.2f}" if r.get("gmacs") is not None else "-"
        print(f"{r['model']:<32} {r['params']:>12,} {r['img_size']:>5} {gmacs:>8} {top1:>12}")


def run(args: argparse.Namespace) -> int:
    if args.pretrained:
        return _run_pretrained(args)
    table = {} if args.macs or args.img_size is not None else read_table()
    if table:  # the committed table covers every registered model (tests/test_cli_timm.py): no torch import
        names = _match(list(table), args.pattern)
        if not names:
            raise ValueError(f"no model matches {args.pattern!r}")
        keys = ("model", "params", "img_size", "paper_top1") + (() if args.no_macs else ("gmacs",))
        _print([{k: table[n].get(k) for k in keys} for n in names], args.json)
        return 0
    from lstmvision.models import get_pretrained_cfg, list_models

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}")
    if args.img_size is not None and args.img_size < 8:
        raise ValueError(f"--img-size must be at least 8, got {args.img_size}")
    count = args.macs or args.img_size is not None
    table = {} if count else read_table()
    missing = [n for n in names if n not in table]
    if missing and not count:
        print(f"models: {len(missing)} model(s) not in {TABLE} ({', '.join(missing[:5])}"
              f"{', ...' if len(missing) > 5 else ''}): counting them now; run scripts/make_model_table.py",
              file=sys.stderr)
    measured = {}
    if missing:
        from lstmvision.models.flops import model_rows

        measured = {r["model"]: r for r in model_rows(missing, args.img_size, macs=not args.no_macs)}
    rows = []
    for name in names:
        known = measured.get(name) or table[name]
        row = dict(model=name, params=known["params"], img_size=known["img_size"],
                   paper_top1=get_pretrained_cfg(name).get("paper_top1"), gmacs=known.get("gmacs"))
        if args.no_macs:
            row.pop("gmacs")
        rows.append(row)
    _print(rows, args.json)
    return 0


def pretrained_rows(pattern: str | None) -> list[dict[str, Any]]:
    from lstmvision.models import get_pretrained_cfg
    from lstmvision.models.registry import default_tag, list_pretrained

    rows = []
    for name in list_pretrained(pattern):
        cfg = get_pretrained_cfg(name)
        rows.append(dict(tag=name, default=default_tag(cfg["architecture"]) == cfg["tag"],
                         hf_hub_id=cfg.get("hf_hub_id") or None, url=cfg.get("url") or None, top1=cfg.get("top1"),
                         license=cfg.get("license")))
    return rows


def _run_pretrained(args: argparse.Namespace) -> int:
    rows = pretrained_rows(args.pattern)
    if not rows:
        raise ValueError(f"no released weights match {args.pattern!r}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["tag"]) for r in rows) + 2
    print(f"{'tag':<{width}} {'top-1':>6}  {'license':<38} source")
    print("-" * (width + 60))
    for r in rows:
        top1 = f"{r['top1']:.1f}" if r["top1"] is not None else "-"
        tag = r["tag"] + ("*" if r["default"] else "")
        source = f"hf-hub:{r['hf_hub_id']}" if r["hf_hub_id"] else r["url"] or "-"  # the Hub is tried first
        print(f"{tag:<{width}} {top1:>6}  {str(r['license']):<38} {source}")
    print("* the architecture's default tag: what --pretrained loads for the bare name")
    return 0
