"""`lstmvision check-kernels`: every rnn2d and mLSTM backend available on a device against the math reference,
forward and gradients (the logic is `lstmvision.ops.check`), the opt-in kernel libraries (flashrnn-*,
mlstm_kernels-*) included: "unavailable" rows where they are not installed. Exit status 0: all pass or are
unavailable; 1: some row failed."""
from __future__ import annotations

import argparse
import json

from lstmvision.cli._common import add_overwrite_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--dtype", action="append", default=None, metavar="NAME",
                   help="check only this dtype (repeatable): fp32, bf16, and fp16 on CUDA (default: all)")
    p.add_argument("--backend", action="append", default=None, metavar="NAME",
                   help="check only this backend (repeatable), e.g. fused, flashrnn-vanilla, "
                        "mlstm_kernels-chunkwise-native (default: all)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="also write the rows as JSON (with the command, device and versions)")
    add_overwrite_argument(p, "an existing --json file")


def run(args: argparse.Namespace) -> int:
    import torch

    from lstmvision.device import device_name, resolve_device, versions
    from lstmvision.ops.check import as_dicts, check_kernels, format_table
    from lstmvision.outputs import check_outputs, write_text

    if args.json:  # before the checks, not after them
        check_outputs([args.json], [], args.overwrite)
    try:
        device = resolve_device(args.device)
    except RuntimeError as e:  # torch.device() on a malformed name
        raise ValueError(f"--device {args.device!r} is not a device name ({str(e).splitlines()[0]})") from None
    rows = check_kernels(device, args.dtype, args.backend)
    print(format_table(rows))
    failed = [r for r in rows if r.status == "fail"]
    print(f"{len(rows) - len(failed)} of {len(rows)} rows pass or are unavailable; {len(failed)} failed")
    if args.json:
        argv = getattr(args, "argv", None) or ["check-kernels", "..."]
        write_text(args.json, json.dumps(dict(command="lstmvision " + " ".join(argv), device=str(device),
                                        device_name=device_name(device),
                                        torch=torch.__version__, versions=versions(), passed=not failed,
                                        rows=as_dicts(rows)), indent=2))
    return 1 if failed else 0
