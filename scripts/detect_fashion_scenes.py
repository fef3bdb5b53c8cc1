"""Object detection on Fashion-MNIST scenes: Faster R-CNN on a Sequencer2D, a ViL and a ConvNeXt baseline, on a CPU.

Makes the scenes (`lstmvision detect scenes`, COCO layout), trains each model with the `detect-small` recipe
(`lstmvision detect train`), validates its best checkpoint (`lstmvision detect validate`: COCO box AP), draws its
detections on a few validation scenes (`lstmvision detect predict --save-vis`), and writes `OUT/README.md` (tables,
commands, times), `OUT/summary.json`, `OUT/predictions.png` (the ground truth and every model's detections on the
same scenes) and per model `OUT/<name>/` (detect_val.md/json, summary.csv, curves.png, config.yaml). Run folders
with the weights and the single pictures go to `OUT/runs/` (git-ignored). `--reuse` keeps finished runs, resumes
unfinished ones (their training time adds up over the invocations).

    python scripts/detect_fashion_scenes.py --output results/detection_scenes [--epochs 3] [--reuse]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torchvision
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageOps
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import draw_bounding_boxes

from lstmvision.cli import main as cli
from lstmvision.commands.detect import colour, detection_table
from lstmvision.data.detection import CocoDetection
from lstmvision.engine.summary import read_summary
from lstmvision.models.loading import create_model

# name -> (backbone, --model-kwargs); the same small backbones as scripts/segment_fashion_scenes.py (0.27-1.9 M
# backbone parameters; the Faster R-CNN's FPN and heads at 64 channels add the same ~1.05 M to each)
MODELS = {
    "sequencer2d": ("sequencer2d_tiny", []),
    "vil": ("vil2_tiny", ["embed_dim=64", "depth=8", "patch_size=8"]),
    "convnext": ("timm:convnext_atto", ["dims=[32,64,128,256]", "depths=[2,2,4,2]"]),
}
TRAIN_SCENES, VAL_SCENES, EPOCHS = 1200, 200, 3
STATS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m")


def run_cli(argv: list[str]) -> None:
    print("$ lstmvision " + shlex.join(argv), flush=True)
    rc = cli(argv)
    if rc:
        raise SystemExit(f"lstmvision {argv[0]} {argv[1]} failed with status {rc}")


def schedule(epochs: int) -> tuple[float, list[int]]:
    """The recipe's schedule (8 epochs: 1 warmup epoch, lr x0.1 after epochs 6 and 7) scaled to `epochs`: warmup
    epochs / 8, decays after 3/4 and 7/8 of the epochs (those inside the run)."""
    steps = sorted({round(epochs * 3 / 4), round(epochs * 7 / 8)} & set(range(1, epochs)))
    return epochs / 8, steps


def train_args(name: str, data: Path, runs: Path, epochs: int, threads: int) -> list[str]:
    backbone, kwargs = MODELS[name]
    args = ["detect", "train", "--recipe", "detect-small", "--data", str(data), "--model", backbone,
            "--epochs", str(epochs), "--output", str(runs), "--experiment", name, "--workers", "0",
            "--threads", str(threads)]
    warmup, steps = schedule(epochs)
    args += ["--warmup-epochs", f"{warmup:g}"] + (["--decay-milestones", *map(str, steps)] if steps else [])
    return args + (["--model-kwargs", *kwargs] if kwargs else [])


def finished(run: Path, epochs: int) -> bool:
    return len(read_summary(run)) >= epochs and (run / "best").is_dir()


def train(name: str, argv: list[str], runs: Path, epochs: int, threads: int, reuse: bool) -> tuple[float, float]:
    """Train (or keep, or resume) run `runs/name`; returns its training seconds over every invocation (which
    `runs/name.time.json` keeps) and those of this one."""
    run, clock = runs / name, runs / f"{name}.time.json"
    spent = json.loads(clock.read_text())["train_s"] if reuse and clock.is_file() else 0.0
    if reuse and finished(run, epochs):
        return spent, 0.0
    if reuse and (run / "last").is_dir():
        argv = ["detect", "train", "--resume", str(run), "--epochs", str(epochs), "--threads", str(threads)]
    elif run.exists():
        shutil.rmtree(run)
        spent = 0.0
    t = time.time()
    run_cli(argv)
    now = time.time() - t
    clock.write_text(json.dumps(dict(train_s=round(spent + now, 1))))
    return spent + now, now


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", "-o", default="results/detection_scenes")
    p.add_argument("--data", default="data/fmnist-det", help="scenes folder (made if missing)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--train-scenes", type=int, default=TRAIN_SCENES)
    p.add_argument("--val-scenes", type=int, default=VAL_SCENES)
    p.add_argument("--pictures", type=int, default=4, help="validation scenes in predictions.png")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reuse", action="store_true", help="keep finished runs, resume unfinished ones")
    args = p.parse_args(argv)
    out, data = Path(args.output), Path(args.data)
    runs = out / "runs"
    commands: list[str] = []
    t0, load0 = time.time(), os.getloadavg()
    scenes = ["detect", "scenes", "--output", str(data), "--train", str(args.train_scenes), "--val",
              str(args.val_scenes), "--size", "128", "--seed", "0"]
    run_cli(scenes)
    commands.append("lstmvision " + shlex.join(scenes))
    rows, earlier = [], 0.0  # earlier: training time of earlier --reuse invocations
    for name in args.models:
        run = runs / name
        argv_train = train_args(name, data, runs, args.epochs, args.threads)
        commands.append("lstmvision " + shlex.join(argv_train))
        train_s, now = train(name, argv_train, runs, args.epochs, args.threads, args.reuse)
        earlier += train_s - now
        (out / name).mkdir(parents=True, exist_ok=True)
        val = ["detect", "validate", "--checkpoint", str(run), "--data", str(data), "--results-file",
               str(out / name / "detect_val.json")]
        run_cli(val)
        pictures = runs / "pictures" / name
        shutil.rmtree(pictures, ignore_errors=True)  # no pictures of an earlier --pictures
        vis = ["detect", "predict", "--checkpoint", str(run), "--data", str(data), "--limit", str(args.pictures),
               "--save-vis", str(pictures)]
        run_cli(vis)
        commands += ["lstmvision " + shlex.join(val), "lstmvision " + shlex.join(vis)]
        for f in ("summary.csv", "curves.png", "config.yaml"):
            shutil.copy(run / f, out / name / f)
        result = json.loads((out / name / "detect_val.json").read_text())
        (out / name / "detect_val.md").write_text(detection_table(result))
        model = create_model(run).eval()
        history = read_summary(run)
        best = max(history, key=lambda r: r["bbox_mAP"])
        rows.append(dict(name=name, backbone=MODELS[name][0], backbone_kwargs=MODELS[name][1],
                         architecture=model.pretrained_cfg["architecture"],
                         params=sum(q.numel() for q in model.parameters()),
                         backbone_params=sum(q.numel() for q in model.detector.backbone.body.parameters()),
                         **{k: result[k] for k in STATS}, bbox_mAP_l=result["bbox_mAP_l"],
                         detections=result["detections"], epochs=len(history), best_epoch=int(best["epoch"]) + 1,
                         train_img_s=history[-1].get("img_s"), train_s=round(train_s, 1)))
    picture = save_grid(data, runs / "pictures", [r["name"] for r in rows], out / "predictions.png")
    info = json.loads((data / "scenes.json").read_text())
    write_report(out, rows, commands, time.time() - t0 + earlier, args, info, (load0, os.getloadavg()), picture)
    return 0


def ground_truth(data: Path, stems: list[str]) -> list[torch.Tensor]:
    """The validation scenes named `stems` with their true boxes and classes drawn as `detect predict` draws."""
    ds = CocoDetection(data, "val2017")
    by_stem = {s.path.stem: s for s in ds.samples}
    pictures = []
    for stem in stems:
        s = by_stem[stem]
        img = pil_to_tensor(Image.open(s.path).convert("RGB"))
        labels = s.labels.tolist()
        if labels:
            img = draw_bounding_boxes(img, torch.from_numpy(s.boxes), labels=[ds.class_names[k - 1] for k in labels],
                                      colors=[colour(k) for k in labels], width=1)
        pictures.append(img)
    return pictures


def save_grid(data: Path, pictures: Path, names: list[str], path: Path) -> Path | None:
    """One PNG: a row of ground truth, then a row of each model's detections, on the same validation scenes."""
    if not names:
        return None
    stems = sorted(f.stem for f in (pictures / names[0]).glob("*.png"))
    rows = [("ground truth", ground_truth(data, stems))]
    rows += [(name, [pil_to_tensor(Image.open(pictures / name / f"{s}.png").convert("RGB")) for s in stems])
             for name in names]
    fig = Figure(figsize=(2.0 * len(stems) + 0.3, 2.0 * len(rows)), dpi=100)
    axes = fig.subplots(len(rows), len(stems), squeeze=False)
    for ax_row, (label, images) in zip(axes, rows):
        for ax, img in zip(ax_row, images):
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        ax_row[0].set_ylabel(label, fontsize=10)
    fig.tight_layout(pad=0.3)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    picture = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    # 6 bits per channel: the scenes' pixel noise would make the PNG three times as big, the difference invisible
    ImageOps.posterize(picture, 6).save(path, format="PNG", optimize=True)
    return path


def write_report(out: Path, rows: list[dict[str, Any]], commands: list[str], wall: float, args, info: dict,
                 loads: tuple, picture: Path | None) -> None:
    device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), {args.threads} thread(s)"
    versions = (f"Python {platform.python_version()}, torch {torch.__version__}, torchvision "
                f"{torchvision.__version__}, timm {timm.__version__}")
    load = "load average (1 min) {:.1f} at the start, {:.1f} at the end".format(loads[0][0], loads[1][0])
    counts = info.get("counts", {})
    summary = dict(device=device, versions=versions, load=load, wall_s=round(wall, 1), epochs=args.epochs,
                   scenes=counts, commands=commands, models=rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "README.md").write_text(render_readme(summary, sys.argv[1:], picture is not None))
    print(f"written {out / 'README.md'}")


def render_readme(summary: dict[str, Any], argv: list[str], picture: bool = True) -> str:
    """OUT/README.md from the summary.json dict."""
    rows, counts = summary["models"], summary["scenes"]
    warmup, steps = schedule(summary["epochs"])
    decays = f"lr x0.1 after epoch{'s' * (len(steps) > 1)} {' and '.join(map(str, steps))}" if steps else "no lr decay"
    train, val = counts.get("train2017", {}), counts.get("val2017", {})
    lines = ["# Faster R-CNN on Fashion-MNIST scenes (CPU)", "",
             "Written by `python scripts/detect_fashion_scenes.py " + " ".join(argv) + f"` on {summary['device']}, "
             f"{summary['versions']}; total wall time {summary['wall_s'] / 60:.1f} min (training in earlier `--reuse` "
             f"invocations included; {summary['load']}). "
             f"All backbones from scratch, one recipe (`detect-small`: Faster R-CNN, 64 FPN channels, AdamW lr 1e-3, "
             f"batch 8, short side 96/112/128 in training and 128 in evaluation; its 8-epoch schedule scaled to "
             f"{summary['epochs']}: warmup {warmup:g} epochs, {decays}), {summary['epochs']} epochs on {train.get('images', '?')} training scenes "
             f"({train.get('instances', '?')} garments); COCO box AP of the best epoch's checkpoint on the "
             f"{val.get('images', '?')} validation scenes ({val.get('instances', '?')} garments, from the "
             "Fashion-MNIST test images).", "",
             "| model | backbone | params (backbone) | box mAP | AP50 | AP75 | AP small | AP medium | best epoch "
             "| train time |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | " + " ".join([f"`{r['backbone']}`", *r["backbone_kwargs"]]) + " | "
                     f"{r['params'] / 1e6:.2f}M ({r['backbone_params'] / 1e6:.2f}M) | {r['bbox_mAP']:.2f} | "
                     f"{r['bbox_mAP_50']:.2f} | {r['bbox_mAP_75']:.2f} | {r['bbox_mAP_s']:.2f} | "
                     f"{r['bbox_mAP_m']:.2f} | {r['best_epoch']} / {r['epochs']} | {r['train_s'] / 60:.1f} min |")
    if rows:
        best = max(rows, key=lambda r: r["bbox_mAP"])
        lines += ["", f"Highest box mAP: {best['name']} ({best['bbox_mAP']:.2f}). Train time is the wall time of "
                  "`detect train` (validation after each epoch included) on this shared machine; the models are "
                  "trained briefly from scratch, so the table compares backbones early in training, not converged."]
    if picture:
        lines += ["", "Ground truth (top row) and each model's detections scoring at least 0.3 on the same "
                  "validation scenes (`detect predict --save-vis`):", "", "![predictions](predictions.png)"]
    lines += ["", "Per model: " + ", ".join(f"[{r['name']}]({r['name']}/detect_val.md)" for r in rows)
              + " (all COCO AP values; `summary.csv` and `curves.png` per epoch).",
              "", "Commands:", "", "```bash", *summary["commands"], "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
