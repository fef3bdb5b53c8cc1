"""`lstmvision predict`: top-k labels with probabilities for image files or folders."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from lstmvision.tools.inference_common import add_model_arguments

    add_model_arguments(p)
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--topk", "-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON (one object with a list of predictions)")
    p.add_argument("--strict-images", action="store_true", help="an unreadable image is an error")


def class_names_for(model) -> list[str]:
    names = getattr(model, "class_names", None)
    if names and len(names) == model.num_classes:
        return list(names)
    if model.num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo("imagenet-1k")
        return [info.index_to_description(i) for i in range(1000)]
    return [str(i) for i in range(model.num_classes)]


def run(args: argparse.Namespace) -> int:
    import torch

    from lstmvision.data import IMAGE_EXTENSIONS, create_eval_transform, list_images
    from lstmvision.tools.inference_common import data_settings, device_of, load_model
    from PIL import Image

    if args.topk < 1:
        raise ValueError("--topk must be at least 1")
    files: list[Path] = []
    for item in args.images:
        p = Path(item)
        if p.is_dir():
            files += list_images(p)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {' '.join(args.images)}")
    model = load_model(args)
    device = device_of(args)
    s = data_settings(model, args)
    tf = create_eval_transform(s["input_size"], s["mean"], s["std"], s["crop_pct"], s["interpolation"])
    names = class_names_for(model)
    k = min(args.topk, model.num_classes)
    model.to(device)
    results, skipped = [], 0
    batch: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        x = torch.stack([t for _, t in batch]).to(device)
        with torch.no_grad():
            prob = model(x).float().softmax(-1)
        top = prob.topk(k, dim=-1)
        for (path, _), pv, iv in zip(batch, top.values.tolist(), top.indices.tolist()):
            results.append(dict(file=str(path), predictions=[
                dict(label=names[i], index=i, prob=round(v, 6)) for v, i in zip(pv, iv)]))
        batch.clear()

    for f in files:
        try:
            with Image.open(f) as im:
                img = im.convert(s["img_mode"])
        except Exception as e:
            if args.strict_images:
                raise ValueError(f"unreadable image {f} ({type(e).__name__}); drop --strict-images to skip it") from None
            skipped += 1
            warnings.warn(f"skipping unreadable image {f} ({type(e).__name__})", stacklevel=1)
            continue
        batch.append((f, tf(img)))
        if len(batch) >= args.batch_size:
            flush()
    flush()
    if skipped:
        print(f"predict: skipped {skipped} unreadable image(s)", file=sys.stderr)
    if args.json:
        print(json.dumps(dict(model=getattr(model, "model_name", None), skipped=skipped, results=results), indent=2))
    else:
        for r in results:
            top = ", ".join(f"{p['label']} {100 * p['prob']:.1f}%" for p in r["predictions"])
            print(f"{r['file']}: {top}")
    if not results:
        raise ValueError("none of the images could be read")
    return 0
