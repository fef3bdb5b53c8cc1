"""`lstmvision resolution-sweep`: top-1 of each model at each test resolution (sequencer.md §4.5).

The trained models are evaluated as they are at other input sizes, with no fine-tuning. Sequencer takes any
size by construction; ViL interpolates its position embedding (bicubic) to the new token grid; timm ViTs are
built with `dynamic_img_size=True` so theirs is interpolated too. Each image is resized so that the centre
`crop_pct` of its shorter side becomes the test size (crop_pct 1.0 = the whole image, the default here; the
paper's crop is UNVERIFIED).

Sizes are absolute (`--sizes 112 224 448`) or relative to the training size (`--factors 0.5 1 1.5 2`, size =
round(factor * native)); with factors, "native" is each model's own training size (`--native-size` overrides),
which is the meaningful comparison for small images (e.g. Fashion-MNIST trained at 28 or 32 px).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from lstmvision.analysis import common as C


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="PATH",
                   help="trained model folders (save_pretrained / training run / best/)")
    p.add_argument("--model", nargs="+", default=[], metavar="NAME",
                   help="registered names or timm:NAME (random init unless --pretrained)")
    p.add_argument("--pretrained", help="weights for a single --model")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sizes", nargs="+", type=int, help="absolute test sizes in pixels")
    g.add_argument("--factors", nargs="+", type=float, help="test sizes relative to each model's training size")
    p.add_argument("--native-size", type=int, help="training size used with --factors (default: the model's)")
    C.add_common_arguments(p)


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


def model_specs(args: argparse.Namespace) -> list[str]:
    specs = list(args.checkpoint) + list(args.model)
    if not specs:
        raise ValueError("give at least one --checkpoint PATH or --model NAME")
    if args.pretrained and len(args.model) != 1:
        raise ValueError("--pretrained goes with exactly one --model")
    return specs


def evaluate_at(model, ds, indices, size: int, args, device) -> float:
    mean, std = C.model_norm(model)
    in_chans = C.model_in_chans(model)
    net = C.Normalized(model, mean, std).to(device).eval()

    def fn(img, _i):
        return C.to_model_tensor(C.resize_image(img, size, args.crop_pct, args.interpolation), in_chans)

    batches = C.loader(C.MappedDataset(ds, indices, fn), args.batch_size, args.workers)
    return C.top1(net, batches, device, desc=f"{model.label} @ {size}px")


def run(args: argparse.Namespace) -> int:
    specs = model_specs(args)
    device = C.resolve_device(args.device)
    ds = C.open_dataset(args.data, args.split)
    indices = C.subset_indices(len(ds), args.limit, args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = []
    for spec in specs:
        pretrained = args.pretrained if spec in args.model else None
        model = C.load_model(spec, pretrained, args.num_classes, args.in_chans)
        native = args.native_size or C.model_native_size(model)
        sizes = sweep_sizes(native, args.sizes, args.factors)
        accs = {}
        for s in sizes:
            try:
                accs[s] = evaluate_at(model, ds, indices, s, args, device)
            except (RuntimeError, ValueError, AssertionError) as e:  # e.g. too small for the patch grid
                print(f"{model.label} @ {s}px: not evaluated ({str(e).splitlines()[0][:120]})")
                accs[s] = None
            print(f"{model.label} @ {s}px: " + ("n/a" if accs[s] is None else f"{accs[s]:.2f}%"))
        results.append(dict(model=model.label, spec=spec, native_size=native,
                             top1={str(k): v for k, v in accs.items()}))
    report = dict(data=str(args.data), split=args.split, images=len(indices), crop_pct=args.crop_pct,
                  interpolation=args.interpolation, device=C.device_description(device),
                  seconds=round(time.time() - t0, 1), results=results)
    C.write_json(out / "resolution.json", report)
    (out / "resolution.md").write_text(table(report))
    plot(report, out / "resolution.png")
    print(table(report))
    print(f"wrote {out / 'resolution.json'}, resolution.md, resolution.png")
    return 0


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
