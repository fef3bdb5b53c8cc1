"""MkDocs hook: pages generated from the code at build time, and the result plots copied from `results/`.

- `models.md`: the model zoo, from the registry (every registered model; parameters counted on the meta device,
  so nothing is allocated; GMACs from `src/lstmvision/models/model_table.json` when that file exists; the
  released pretrained tags when the registry has `list_pretrained`).
- `cli.md`: the command-line reference, from the argparse parsers (`lstmvision.cli.build_parser('*')`).
- `assets/results/...png`: the plots the results and detection pages show, taken from `results/` as they are.

Nothing is written into `docs/`: the generated pages replace the committed stubs `docs/models.md` and
`docs/cli.md` (which say where the content comes from, for readers of the repository) and the plots are added to
the build's file list in memory (`File.generated`), so `mkdocs serve` does not see its own output as a change.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch
from mkdocs.structure.files import File, Files

import lstmvision
from lstmvision.cli import COMMANDS, build_parser
from lstmvision.models import create_model, get_pretrained_cfg, registry

log = logging.getLogger("mkdocs.hooks.lstmvision")

ROOT = Path(__file__).resolve().parent.parent
MODEL_TABLE = ROOT / "src" / "lstmvision" / "models" / "model_table.json"
HELP_WIDTH = 100

# result plots shown on results.md and detection.md: path under results/ -> path under docs/assets/results/
RESULT_PLOTS = [
    "fashion_mnist/full/accuracy.png",
    "fashion_mnist/full/ablations.png",
    "fashion_mnist/full/resolution/resolution.png",
    "fashion_mnist/full/erf/erf.png",
    "fashion_mnist/full/memory/memory.png",
    "fashion_mnist/full/memory_vil_chunkwise/memory.png",
    "fashion_mnist/full/robustness/sequencer2d/robustness.png",
    "fashion_mnist/full/robustness/vil/robustness.png",
    "fashion_mnist/full/robustness/deit/robustness.png",
    "fashion_mnist/full/robustness/convnext/robustness.png",
    "fashion_mnist/full/robustness/resnet/robustness.png",
    "fashion_mnist/full/robustness/vanilla_sequencer/robustness.png",
    "fashion_mnist/full/training/sequencer2d/curves.png",
    "segmentation_scenes/sequencer2d/examples.png",
    "segmentation_scenes/vil/examples.png",
    "segmentation_scenes/deit/examples.png",
    "segmentation_scenes/convnext/examples.png",
    "detection_scenes/predictions.png",
]


# ---------------------------------------------------------------- model zoo

def _family(name: str) -> str:
    return "Vision-LSTM (ViL)" if name.startswith("vil") else "Sequencer"


def _param_count(name: str) -> int:
    with torch.device("meta"):
        model = create_model(name)
    return sum(p.numel() for p in model.parameters())


def _gmacs() -> dict[str, float]:
    if not MODEL_TABLE.is_file():
        return {}
    try:
        rows = json.loads(MODEL_TABLE.read_text())
    except (OSError, ValueError) as e:
        log.info("model zoo: %s not readable (%s); GMACs left out", MODEL_TABLE.name, e)
        return {}
    if isinstance(rows, dict):
        rows = rows.get("models", rows.get("rows", []))
    return {r["model"]: float(r["gmacs"]) for r in rows if isinstance(r, dict) and r.get("gmacs") is not None}


def _cell(value: Any) -> str:
    return "–" if value in (None, "") else str(value)


def _pretrained_rows() -> list[dict[str, Any]]:
    """Released weights: one row per tag, from `registry.list_pretrained()` where the registry has it."""
    list_pretrained = getattr(registry, "list_pretrained", None)
    if list_pretrained is None:
        return []
    rows = []
    for tag in list_pretrained():
        if isinstance(tag, dict):
            cfg, name = tag, tag.get("name") or tag.get("tag")
        else:
            name = str(tag)
            try:
                cfg = get_pretrained_cfg(name)
            except (ValueError, KeyError):
                cfg = {}
        src = cfg.get("hf_hub_id") or cfg.get("url") or ""
        rows.append(dict(tag=name, source=src, top1=cfg.get("top1"), license=cfg.get("license")))
    return rows


def _tags_of(name: str) -> str:
    list_pretrained = getattr(registry, "list_pretrained", None)
    if list_pretrained is None:
        return ""
    tags = [t.partition(".")[2] for t in list_pretrained(f"{name}.*")]
    return ", ".join(f"`{t}`" for t in tags)


def models_page() -> str:
    names = lstmvision.list_models()
    gmacs = _gmacs()
    has_tags = getattr(registry, "list_pretrained", None) is not None
    head = ("| model | params | resolution |" + (" GMACs |" if gmacs else "") + " paper top-1 (ImageNet) |"
            + (" pretrained tags |" if has_tags else "") + " license |")
    rule = "|---|---:|---:|" + ("---:|" if gmacs else "") + "---:|" + ("---|" if has_tags else "") + "---|"
    out = [
        "# Model zoo",
        "",
        "Every model registered in `lstmvision` (generated from the registry when this site was built; "
        "`lstmvision models` prints the same list with MACs). *params* at the model's own number of classes; "
        "*resolution* is the default input size (`pretrained_cfg['input_size']`); *paper top-1* is the "
        "ImageNet-1K top-1 the paper reports for that configuration (– where the paper gives none); *license* is "
        "that of the released weights where there are any (*pretrained tags*, detailed below), else of the model code.",
        "",
        "Create any of them with `lstmvision.create_model(NAME)`; see [Getting started](getting-started.md).",
        "",
    ]
    for family in ("Sequencer", "Vision-LSTM (ViL)"):
        members = [n for n in names if _family(n) == family]
        if not members:
            continue
        out += [f"## {family}", "", head, rule]
        for name in members:
            cfg = get_pretrained_cfg(name)
            size = cfg.get("input_size") or ()
            res = f"{size[-2]}×{size[-1]}" if len(size) == 3 else _cell(None)
            row = f"| `{name}` | {_param_count(name):,} | {res} |"
            if gmacs:
                row += f" {gmacs[name]:.2f} |" if name in gmacs else " – |"
            row += f" {_cell(cfg.get('paper_top1'))} |"
            if has_tags:
                row += f" {_cell(_tags_of(name))} |"
            row += f" {_cell(cfg.get('license'))} |"
            out.append(row)
        out.append("")
    out += ["## Pretrained weights", ""]
    tags = _pretrained_rows()
    if tags:
        out += [
            "Released checkpoints, created with `lstmvision.create_model(NAME, pretrained=True)` "
            "(`lstmvision.list_pretrained()` lists them):",
            "",
            "| tag | weights | top-1 | license |",
            "|---|---|---:|---|",
        ]
        out += [f"| `{r['tag']}` | `{_cell(r['source'])}` | {_cell(r['top1'])} | {_cell(r['license'])} |"
                for r in tags]
    else:
        out.append("Weights load from a local file or folder: `create_model(NAME, pretrained=PATH)` takes the "
                   "official checkpoints, timm's and lstmvision's own (see [Getting started](getting-started.md)).")
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- CLI reference

def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = functools.partial(parser.formatter_class, width=HELP_WIDTH)
    return parser.format_help().rstrip()


def cli_page() -> str:
    parser = build_parser("*")
    commands = _subparsers(parser)
    out = [
        "# Command-line reference",
        "",
        "Generated from the argparse parsers when this site was built: the text is what `lstmvision COMMAND "
        "--help` prints. `python -m lstmvision` is the same command line.",
        "",
        "```text",
        _help(parser),
        "```",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    out += [f"| [`{name}`](#{name}) | {help_text} |" for name, (_, help_text) in COMMANDS.items()]
    out.append("")
    for name in COMMANDS:
        sub = commands[name]
        out += [f"## {name}", "", "```text", _help(sub), "```", ""]
        for action, action_parser in _subparsers(sub).items():
            out += [f"### {name} {action}", "", "```text", _help(action_parser), "```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------- hooks

def on_files(files: Files, config: Any) -> Files:
    generated = {"models.md": models_page(), "cli.md": cli_page()}
    for uri, text in generated.items():
        old = files.get_file_from_path(uri)
        if old is not None:
            files.remove(old)
        files.append(File.generated(config, uri, content=text))
    for rel in RESULT_PLOTS:
        src = ROOT / "results" / rel
        if not src.is_file():
            log.warning("results plot missing: results/%s", rel)
            continue
        uri = f"assets/results/{rel}"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(src)))
    return files
