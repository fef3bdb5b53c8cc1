"""`lstmvision export`: argparse glue for `lstmvision.commands.export.export`."""
from __future__ import annotations

import argparse

from lstmvision.cli._common import add_input_size_arguments, add_overwrite_argument, add_weights_arguments
from lstmvision.constants import DEFAULT_OPSET, EXPORT_FORMATS, EXPORT_TOLERANCE, MIN_OPSET


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_weights_arguments(p, model_help="registered model name or timm:NAME (random weights unless --pretrained "
                                        "or --initial-checkpoint; optional with --checkpoint)")
    p.add_argument("--format", choices=(*EXPORT_FORMATS, "hf"), default=None,
                   help="default: from the output suffix (.onnx, .pt); hf: a Hugging Face Hub repo folder (timm and "
                        "transformers load it; a model card with a run's recipe and metrics)")
    p.add_argument("--output", "-o", required=True, help="file to write (.onnx, or .pt for TorchScript; a folder for hf)")
    add_overwrite_argument(p, "an existing --output file")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (ONNX: dynamic axis 0)")
    p.add_argument("--dynamic-size", action="store_true", help="any image height and width")
    p.add_argument("--opset", type=int, default=None, help=f"ONNX opset ({MIN_OPSET}..20, default {DEFAULT_OPSET})")
    add_input_size_arguments(p, "export resolution (default: the model's input_size)")
    p.add_argument("--batch-size", "-b", type=int, default=1, help="batch size of the export (default 1)")
    p.add_argument("--tolerance", type=float, default=EXPORT_TOLERANCE, help=f"max |Δ| allowed (default {EXPORT_TOLERANCE:g})")


def run(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import model_from_args, resolve_input_size, warn_random_weights, weights_reads
    from lstmvision.commands import export as ex

    if args.format == "hf":
        return run_hf(args)
    # the request and the output file first: nothing is loaded for an export that cannot be written as asked
    ex.check_request(args.output, args.format, args.batch_size, args.opset, args.overwrite, weights_reads(args))
    resolve_input_size(args, square=False)  # an export may be H x W
    model = model_from_args(args)
    ex.check_model(model)
    warn_random_weights(model)
    result = ex.export(
        model, args.output, args.format, args.img_size, args.batch_size, args.dynamic_batch, args.dynamic_size,
        args.opset, args.tolerance, overwrite=args.overwrite,
    )
    size_mb = result.path.stat().st_size / 2**20
    name = getattr(model, "model_name", "model")
    print(f"exported {name} to {result.path} ({result.format}, {size_mb:.1f} MB)")
    engine = "onnxruntime" if result.format == "onnx" else "torch.jit.load"
    for check in result.checks:
        print(f"  verified with {engine}: {check}")
    if not result.ok:
        print(f"lstmvision export: error: max |Δ| {result.max_abs_diff:.2e} exceeds the tolerance {result.tolerance:g}")
        return 1
    print(f"ok: max |Δ| {result.max_abs_diff:.2e} <= {result.tolerance:g}")
    return 0


def run_hf(args: argparse.Namespace) -> int:
    from lstmvision.cli._common import model_from_args, warn_random_weights, weights_reads
    from lstmvision.commands import export as ex

    model = model_from_args(args)
    warn_random_weights(model)
    folder, diff = ex.export_hf(model, args.output, args.overwrite, weights_reads(args))
    name = getattr(model, "model_name", "model")
    print(f"exported {name} to {folder}/ (a Hugging Face Hub repo folder with README.md model card)")
    if diff is not None:
        print(f"ok: loaded back, max |Δ| {diff:.2e}")
    return 0
