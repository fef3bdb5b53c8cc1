"""`lstmvision resolution-sweep`: top-1 of each model at each test resolution (sequencer.md §4.5).

The trained models are evaluated as they are at other input sizes, with no fine-tuning. Sequencer takes any
size by construction; ViL interpolates its position embedding (bicubic) to the new token grid; timm ViTs are
built with `dynamic_img_size=True` so theirs is interpolated too. Each image is resized so that the centre
`crop_pct` of its shorter side becomes the test size (crop_pct 1.0 = the whole image, the default here; the
paper does not state its crop).

Sizes are absolute (`--sizes 112 224 448`) or relative to the training size (`--factors 0.5 1 1.5 2`, size =
round(factor * native)); with factors, "native" is each model's own training size (`--native-size` overrides),
which is the meaningful comparison for small images (e.g. Fashion-MNIST trained at 28 or 32 px).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from lstmvision.commands.analysis import common as C
from lstmvision.device import resolve_device


def sweep_sizes(native: int, sizes: list[int] | None, factors: list[float] | None) -> list[int]:
    if sizes:
        bad = [s for s in sizes if s < 1]
        if bad:
            raise ValueError(f"--sizes must be positive, got {bad}")
        return sorted(set(sizes))
    factors = factors or [0.5, 1.0, 1.5, 2.0]
    bad = [f for f in factors if f <= 0]
    if bad:
        raise ValueError(f"--factors must be positive, got {bad}")
    return sorted({max(1, round(f * native)) for f in factors})


def evaluate_at(model: nn.Module, data: C.EvalImages, size: int, device: torch.device) -> float:
    """Top-1 (%) of `model` on `data` resized to `size` px."""
    mean, std = C.model_norm(model)
    in_chans = C.model_in_chans(model)
    net = C.Normalized(model, mean, std).to(device).eval()

    def fn(img, _i):
        return C.to_model_tensor(data.resize(img, size), in_chans)

    return C.top1(net, data.batches(fn), device, desc=f"{model.label} @ {size}px")


def resolution_sweep(models: Iterable[nn.Module], data: C.EvalImages, output: str | Path,
                     sizes: list[int] | None = None, factors: list[float] | None = None,
                     native_size: int | None = None, device: torch.device | None = None, overwrite: bool = False,
                     reads: Sequence[str | Path] = ()) -> dict:
    """Top-1 of each model (with `.label`, from `models.loading.create_model`; an iterable, so they can be loaded one at a
    time) at each size (see the module docstring); writes resolution.json, .md and .png to `output` and returns
    the report."""
    device = device or resolve_device(None)
    out = C.report_folder(output, "resolution", overwrite, reads)
    t0 = time.time()
    results = []
    for model in models:
        native = native_size or C.model_native_size(model)
        accs = {}
        for s in sweep_sizes(native, sizes, factors):
            try:
                accs[s] = evaluate_at(model, data, s, device)
            except (RuntimeError, ValueError, AssertionError) as e:  # e.g. too small for the patch grid
                print(f"{model.label} @ {s}px: not evaluated ({str(e).splitlines()[0][:120]})")
                accs[s] = None
            print(f"{model.label} @ {s}px: " + ("n/a" if accs[s] is None else f"{accs[s]:.2f}%"))
        results.append(dict(model=model.label, native_size=native, top1={str(k): v for k, v in accs.items()}))
    report = dict(data=data.name, split=data.split, images=len(data.dataset), crop_pct=data.crop_pct,
                  interpolation=data.interpolation, device=C.device_description(device),
                  seconds=round(time.time() - t0, 1), results=results)
    C.write_report(out, "resolution", report, table(report), plot)
    return report


def table(report: dict) -> str:
    sizes = sorted({int(s) for r in report["results"] for s in r["top1"]})
    rows = []
    for r in report["results"]:
        native = r["native_size"]
        acc = {int(k): v for k, v in r["top1"].items()}
        base = acc.get(native)
        cells = [("" if s not in acc else "n/a" if acc[s] is None else acc[s]) for s in sizes]
        at2 = acc.get(2 * native)
        drop = (base - at2) if base is not None and at2 is not None else "n/a"
        rows.append([r["model"], native, *cells, drop])
    head = ["model", "train px", *[f"{s}px" for s in sizes], "drop at 2x (pts)"]
    return (f"Top-1 (%) on {report['data']} ({report['split']}, {report['images']} images), crop_pct "
            f"{report['crop_pct']}, {report['interpolation']}; device: {report['device']}\n\n"
            + C.markdown_table(head, rows))


def plot(report: dict, path: Path) -> None:
    with C.figure(path, figsize=(6, 4)) as (_, ax):
        for r in report["results"]:
            pts = sorted((int(k), v) for k, v in r["top1"].items() if v is not None)
            if pts:
                xs = [k / r["native_size"] for k, _ in pts]
                ax.plot(xs, [v for _, v in pts], marker="o", label=f"{r['model']} (train {r['native_size']}px)")
        ax.axvline(1.0, color="gray", lw=0.5)
        ax.set_xlabel("test resolution / training resolution")
        ax.set_ylabel("top-1 (%)")
        ax.set_title("Resolution adaptability")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
