"""`lstmvision` command line. Each subcommand lives in its own module with `add_arguments` and `run`.

Only the module of the command being run is imported, and no command module imports torch before its `run`:
`lstmvision --help` and `lstmvision CMD --help` answer at once."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from pathlib import Path

from lstmvision import __version__
from lstmvision.errors import worker_message

# subcommand -> (module, one-line help). A module defines add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("lstmvision.cli.models", "list registered models with parameters and MACs"),
    "download": ("lstmvision.cli.download", "fetch released weights into the caches and verify them"),
    "train": ("lstmvision.cli.train", "train a model (default: a small Sequencer2D on Fashion-MNIST)"),
    "validate": ("lstmvision.cli.validate", "top-1 / top-5 / loss of a model on a validation set"),
    "predict": ("lstmvision.cli.predict", "top-k labels with probabilities for images"),
    "samples": ("lstmvision.cli.samples", "write Fashion-MNIST images as PNG files named after their class"),
    "data": ("lstmvision.cli.data", "pack image folders and idx files as WebDataset / Hugging Face shards; describe a source"),
    "export": ("lstmvision.cli.export", "export a model to ONNX or TorchScript and verify it against PyTorch"),
    "benchmark": ("lstmvision.cli.benchmark", "throughput, memory and MACs of models, with ratios against baselines"),
    "resolution-sweep": ("lstmvision.cli.resolution_sweep", "top-1 of models at several test resolutions (table, JSON, plot)"),
    "erf": ("lstmvision.cli.erf", "effective receptive field maps (.npy + PNG grid) by the Sequencer protocol"),
    "robustness": ("lstmvision.cli.robustness", "ImageNet-C corruptions (mCE / CE vs a baseline) and FGSM/PGD"),
    "memory": ("lstmvision.cli.memory", "peak forward memory and throughput vs input resolution"),
    "check-kernels": ("lstmvision.cli.check_kernels", "every rnn2d/mLSTM backend on a device vs the math reference"),
    "transfer": ("lstmvision.cli.transfer", "VTAB-1K transfer protocol: lr sweep, retrain on train+val, test"),
    "segment": ("lstmvision.cli.segment", "semantic segmentation with UperNet: train, validate, predict, scenes"),
    "detect": ("lstmvision.cli.detect", "object detection / instance segmentation (Faster R-CNN, RetinaNet, FCOS, "
                                        "Mask R-CNN): train, validate, predict, scenes"),
}


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, no traceback."""


# PermissionError, FileExistsError, IsADirectoryError: a path the user gave that cannot be written or read
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError, NotADirectoryError,
                                                PermissionError, FileExistsError, IsADirectoryError)


def build_parser(commands: str | tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of `commands` (one name, several, or '*' for all; the others are listed
    by name and help only, so that their modules are not imported). `parser.commands` maps each command name
    to its subparser."""
    parser = argparse.ArgumentParser(
        prog="lstmvision", description="LSTM-based vision backbones: Sequencer and Vision-LSTM.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = tuple(COMMANDS) if commands == "*" else (commands,) if isinstance(commands, str) else commands or ()
    parser.commands = {}
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        parser.commands[name] = p
        if name in wanted:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subparser `args` went through (`lstmvision segment train` -> segment's `train` parser)."""
    current = parser.commands[args.command]
    while True:
        nested = next((a for a in current._actions if isinstance(a, argparse._SubParsersAction)), None)
        if nested is None or getattr(args, nested.dest, None) not in nested.choices:
            return current
        current = nested.choices[getattr(args, nested.dest)]


# what a weights file or saved folder looks like (`--pretrained PATH` of earlier versions)
_WEIGHTS_SUFFIXES = (".pth", ".pt", ".th", ".bin", ".safetensors", ".tar", ".ckpt", ".npz")


def _old_pretrained_value(argv: list[str], unknown: list[str]) -> str | None:
    """The PATH of `--pretrained PATH`, as earlier versions took it (now --initial-checkpoint PATH), if given: a
    value after the switch that nothing took, or that looks like weights (a positional argument took it)."""
    for flag, value in zip(argv, argv[1:]):
        if flag != "--pretrained" or value.startswith("-"):
            continue
        path = Path(value)
        looks_like_weights = path.suffix.lower() in _WEIGHTS_SUFFIXES or (
            path.is_dir() and any((path / n).exists() for n in ("config.json", "best", "last", "model.safetensors")))
        if looks_like_weights or value in unknown:
            return value
    return None


@contextlib.contextmanager
def one_line_warnings(command: str):
    """Warnings as `lstmvision COMMAND: warning: MESSAGE` lines on stderr, without the source path and
    line Python adds (LSTMVISION_DEBUG keeps Python's format)."""
    if os.environ.get("LSTMVISION_DEBUG"):
        yield
        return

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        kind = "" if issubclass(category, UserWarning) else f"{category.__name__}: "
        print(f"lstmvision {command}: warning: {kind}{text}", file=file or sys.stderr)

    original = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the top level has no valued options
    parser = build_parser(command if command in COMMANDS else None)
    args, unknown = parser.parse_known_args(argv)
    old = _old_pretrained_value(argv, unknown)
    if old is not None:  # before "unrecognized arguments: PATH", which would not say why
        chosen_parser(parser, args).error(
            f"--pretrained {old}: --pretrained is a switch now (the released weights of the model's tag); give a "
            f"weights file or saved / run folder as --initial-checkpoint {old}")
    if unknown:  # the subcommand's usage and name, not the top level's
        chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv
    try:
        with one_line_warnings(args.command):
            return int(args._run(args) or 0)
    except USER_ERRORS as e:
        if os.environ.get("LSTMVISION_DEBUG"):
            raise
        print(f"lstmvision {args.command}: error: {worker_message(str(e)) or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lstmvision {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
