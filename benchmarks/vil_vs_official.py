"""lstmvision's ViL against the official Vision-LSTM code itself, in one process: the official `VisionLSTM2`
(imported from a checkout of NX-AI/vision-lstm that you give; nothing of it is part of lstmvision), lstmvision's
default path and `ref:` (lstmvision with the official mLSTM formulation), on the same weights (logits compared),
interleaved run by run; median, min and max.

    git clone https://github.com/NX-AI/vision-lstm /tmp/vision-lstm   # needs einops
    python benchmarks/vil_vs_official.py --official-src /tmp/vision-lstm --mode infer --json out.json

`--cpu-time` times with the process's CPU time instead of the wall clock: on a shared machine a busy neighbour
then costs less accuracy (with one thread it is the wall time an idle machine would show).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import lstmvision
from lstmvision.device import device_name, versions
from lstmvision.ops.dispatch import use_backend

# lstmvision name -> the official VisionLSTM2 constructor arguments (vision-lstm.md: depth counts block pairs)
OFFICIAL_ARGS = {"vil2_tiny": dict(dim=192, depth=12), "vil2_small": dict(dim=384, depth=12),
                 "vil2_base": dict(dim=768, depth=12)}


def official_model(src: str, name: str, img: int) -> torch.nn.Module:
    sys.path.insert(0, src)
    from vision_lstm.vision_lstm2 import VisionLSTM2  # noqa: PLC0415 (optional dependency: the official code)

    return VisionLSTM2(**OFFICIAL_ARGS[name], legacy_norm=True, input_shape=(3, img, img), output_shape=(1000,))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official-src", required=True, help="a checkout of github.com/NX-AI/vision-lstm")
    p.add_argument("--model", default="vil2_tiny", choices=sorted(OFFICIAL_ARGS))
    p.add_argument("--mode", choices=["infer", "train"], default="infer")
    p.add_argument("--batch-size", "-b", type=int, default=8)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cpu-time", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    official = official_model(args.official_src, args.model, args.img_size)
    ours = lstmvision.create_model(args.model, img_size=args.img_size)
    ours.load_state_dict(ours.checkpoint_filter_fn(official.state_dict()))
    with torch.no_grad():  # random heads: the official init leaves them at zero, which would compare nothing
        for head in (official.head, ours.get_classifier()):
            head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(1)) * 0.02)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    y = torch.randint(0, 1000, (args.batch_size,))
    with torch.no_grad():
        diff = (official.eval()(x[:2]) - ours.eval()(x[:2])).abs().max().item()
    train = args.mode == "train"
    entries = {"official": (official, None), "lstmvision": (ours, None), "ref": (ours, "parallel")}
    clock = time.process_time if args.cpu_time else time.perf_counter

    def step(model: torch.nn.Module, backend: str | None) -> None:
        model.train(train)
        with use_backend(mlstm=backend):
            if train:
                F.cross_entropy(model(x), y).backward()
            else:
                with torch.no_grad():
                    model(x)

    times: dict[str, list[float]] = {name: [] for name in entries}
    for model, backend in entries.values():
        step(model, backend)  # warm-up
    for _ in range(args.rounds):
        for name, (model, backend) in entries.items():
            t0 = clock()
            step(model, backend)
            times[name].append(args.batch_size / (clock() - t0))
    base = statistics.median(times["official"])
    rows = {name: dict(img_per_s=round(statistics.median(v), 2), min=round(min(v), 2), max=round(max(v), 2),
                       vs_official=round(statistics.median(v) / base, 3)) for name, v in times.items()}
    for name, row in rows.items():
        print(f"{name:11s} {row['img_per_s']:7.2f} img/s [{row['min']:.2f}-{row['max']:.2f}]  "
              f"{row['vs_official']:.3f}x official")
    print(f"max |logit difference| official vs lstmvision: {diff:.2e}")
    if args.json:
        report = dict(command="python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
                      device=device_name(torch.device("cpu")), threads=args.threads,
                      clock="process CPU time" if args.cpu_time else "wall", mode=args.mode,
                      batch_size=args.batch_size, img_size=args.img_size, max_abs_logit_diff=diff,
                      versions=versions(), results=rows)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
