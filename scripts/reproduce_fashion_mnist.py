"""Small-scale reproduction of the Sequencer / ViL analysis claims on Fashion-MNIST (issue 6).

Trains four models of similar size with ONE engine recipe - a Sequencer2D, a ViL (v2), a DeiT and a ConvNeXt (the
last two from timm) - at 32 px (Fashion-MNIST's 28 px images resized, 1 channel), then runs the analysis tools on
the run folders' best/ checkpoints: resolution sweep (0.5x-2x), ERF maps, ImageNet-C-style robustness (CE vs the
ConvNeXt baseline) with FGSM, and peak memory / throughput vs resolution. Everything lands in OUT (default
results/fashion_mnist/{full,medium,quick}) with a summary.md naming the device and the time taken.

    scripts/reproduce_fashion_mnist.sh            # full: GPU recommended (time not measured yet)
    scripts/reproduce_fashion_mnist.sh --quick    # CI scale: tiny models and subsets, ~2 min on 2 CPU cores
    scripts/reproduce_fashion_mnist.sh --medium   # the quick models on 8000 images, ~10 min on 2 CPU cores

The quick mode only proves the pipeline end to end: its numbers are NOT a reproduction of anything. The medium
mode gives small but real numbers on a CPU; the full mode is the reproduction.

Training: every model is trained by the engine, in-process, exactly as the command line does it:
`lstmvision train --recipe sequencer-small --model ARCH [--model-kwargs ...] OVERRIDES --output OUT/runs
--experiment NAME`. OVERRIDES are the per-mode settings in OVERRIDES below (epochs, batch size, image size, data
limits and, for the one-epoch modes, a shorter warm-up); everything else is the recipe's. Each run folder
(OUT/runs/NAME, git-ignored: it holds the weights) keeps the engine's config.yaml, summary.csv, curves.png and
best/ + last/ checkpoints; the first three are copied to OUT/training/NAME/ for the record.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lstmvision import cli  # noqa: E402
from lstmvision.analysis import common as C  # noqa: E402
from lstmvision.engine.recipes import get_recipe  # noqa: E402
from lstmvision.engine.trainer import read_summary  # noqa: E402
from lstmvision.runtime import cpu_threads, find_checkpoint, load_model, resolve_device  # noqa: E402
from lstmvision.weights import read_config  # noqa: E402

RECIPE = "sequencer-small"
NATIVE = 32

# name -> (registered architecture, model kwargs); "timm:" architectures are built by timm through the engine.
# The "full" models are of similar size (0.7-1.2 M parameters); sequencer2d_small32 is used as registered.
MODELS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "full": {
        "sequencer2d": ("sequencer2d_small32", {}),
        "vil": ("vil2_tiny", dict(patch_size=4, embed_dim=112, depth=8)),
        "deit": ("timm:deit_tiny_patch16_224", dict(patch_size=4, embed_dim=112, depth=6, num_heads=4)),
        "convnext": ("timm:convnext_atto", dict(depths=[2, 2, 4, 2], dims=[32, 64, 128, 160])),
    },
    "quick": {
        "sequencer2d": ("sequencer2d_tiny", dict(layers=[1, 1], embed_dims=[32, 64], hidden_sizes=[16, 32])),
        "vil": ("vil2_tiny", dict(patch_size=4, embed_dim=48, depth=2)),
        "deit": ("timm:deit_tiny_patch16_224", dict(patch_size=4, embed_dim=48, depth=2, num_heads=2)),
        "convnext": ("timm:convnext_atto", dict(depths=[1, 1, 1, 1], dims=[16, 32, 64, 64])),
    },
}
ERF_LAYERS = {
    "full": {"sequencer2d": ["stages.0", "stages.1"], "vil": ["blocks.3", "blocks.7"], "deit": ["blocks.2", "blocks.5"],
             "convnext": ["stages.1", "stages.2"]},
    "quick": {"sequencer2d": ["stages.0", "stages.1"], "vil": ["blocks.1"], "deit": ["blocks.1"],
              "convnext": ["stages.1"]},
}
# The recipe settings each mode overrides (engine setting -> value); every other setting is the recipe's.
OVERRIDES: dict[str, dict[str, Any]] = {
    "full": dict(epochs=30, batch_size=128, img_size=NATIVE),
    # CPU-sized: the quick models trained on more data; one epoch, so the warm-up is a tenth of it, not all of it
    "medium": dict(epochs=1, batch_size=64, img_size=NATIVE, limit_train=8000, limit_val=1000, warmup_epochs=0.1),
    "quick": dict(epochs=1, batch_size=64, img_size=NATIVE, limit_train=640, limit_val=200, warmup_epochs=0.1),
}
# Analysis sizes per mode (robustness / ERF / memory subsets); the resolution sweep uses the validation limit.
SCALE = {
    "full": dict(erf_images=64, rob_limit=2000, corruptions=None, severities=None, mem_sizes=[32, 64, 128, 256, 384],
                 mem_batch=16, mem_iters=10),
    "medium": dict(erf_images=16, rob_limit=100, corruptions=None, severities=[3], mem_sizes=[32, 64, 128],
                   mem_batch=4, mem_iters=3),
    "quick": dict(erf_images=4, rob_limit=64, corruptions=["gaussian_noise", "contrast"], severities=[3],
                  mem_sizes=[32, 64], mem_batch=2, mem_iters=1),
}


def train_argv(arch: str, kwargs: dict[str, Any], overrides: dict[str, Any], runs: Path, name: str,
               data: str, device: str, workers: int) -> list[str]:
    """`lstmvision train` arguments for one model: the recipe, the model, the mode's overrides, where to write."""
    argv = ["train", "--recipe", RECIPE, "--model", arch]
    if kwargs:
        argv += ["--model-kwargs", *(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in kwargs.items())]
    for key, value in overrides.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    return argv + ["--data", data, "--device", device, "--workers", str(workers), "--output", str(runs),
                   "--experiment", name]


def finished(run: Path, arch: str, kwargs: dict[str, Any], overrides: dict[str, Any]) -> bool:
    """Whether `run` holds a complete run of exactly this model and these settings (for --reuse)."""
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file() or not (run / "best").is_dir():
        return False
    saved = yaml.safe_load(cfg_file.read_text())
    wanted = dict(overrides, model=arch, model_kwargs=kwargs, recipe=RECIPE)
    differ = [k for k, v in wanted.items() if saved.get(k) != v]
    if differ:
        raise SystemExit(f"{run} is a run with other settings ({', '.join(differ)}); remove it or use another --out")
    return len(read_summary(run)) >= overrides["epochs"]


def train_model(name: str, arch: str, kwargs: dict[str, Any], overrides: dict[str, Any], out: Path, args,
                device: str, workers: int) -> dict[str, Any]:
    """Train `name` through `lstmvision train` (or reuse / resume its run with --reuse); record it in OUT/training."""
    run, record = out / "runs" / name, out / "training" / name
    argv = train_argv(arch, kwargs, overrides, out / "runs", name, args.data, device, workers)
    reused = args.reuse and finished(run, arch, kwargs, overrides)
    record.mkdir(parents=True, exist_ok=True)
    if not reused:
        resumed = (run / "last").exists()
        if resumed and not args.reuse:
            raise SystemExit(f"{run} already holds a run: pass --reuse to reuse or finish it, or remove it")
        if resumed:
            argv += ["--resume", str(run)]
        t0 = time.time()
        rc = cli.main(argv)
        if rc:
            raise SystemExit(f"training {name} failed with exit status {rc}")
        C.write_json(record / "train.json", dict(command=shlex.join(["lstmvision", *argv]), resumed=resumed,
                                                 seconds=round(time.time() - t0, 1)))
    for f in ("summary.csv", "config.yaml", "curves.png"):
        if (run / f).is_file():
            shutil.copy2(run / f, record / f)
    return describe(name, arch, kwargs, run, record, reused)


def describe(name: str, arch: str, kwargs: dict[str, Any], run: Path, record: Path, reused: bool) -> dict[str, Any]:
    """The summary entry of a trained model, read back from its run folder (best/ checkpoint and summary.csv)."""
    model = load_model(str(run))
    saved_arch = read_config(find_checkpoint(run, prefer="best"))["architecture"]
    if saved_arch != arch:  # the label is the checkpoint's own architecture name, never a hand-typed one
        raise SystemExit(f"{run}/best holds {saved_arch!r}, not {arch!r}")
    rows = read_summary(run)
    best = max(rows, key=lambda r: r["top1"])
    log = json.loads((record / "train.json").read_text()) if (record / "train.json").is_file() else {}
    return dict(name=name, architecture=saved_arch, model_kwargs=kwargs,
                params=sum(p.numel() for p in model.parameters()), top1=round(best["top1"], 2),
                best_epoch=best["epoch"], epochs=len(rows), final_train_loss=round(rows[-1]["train_loss"], 4),
                train_s=log.get("seconds"), command=log.get("command"), run=str(run), reused=reused)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="CI scale (tiny models and subsets, CPU minutes)")
    g.add_argument("--medium", action="store_true", help="the quick models on more data (~10 min on 2 CPU cores)")
    p.add_argument("--reuse", "--reuse-checkpoints", dest="reuse", action="store_true",
                   help="skip training where OUT/runs/NAME holds a finished run of the same settings; resume an "
                        "unfinished one")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", help="output folder (default results/fashion_mnist/{full,medium,quick})")
    p.add_argument("--device", help="cpu or cuda for training and the analyses (default: cuda if available)")
    p.add_argument("--workers", type=int,
                   help="data-loading processes for training and the analyses (default 0 quick/medium, 4 full)")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "medium" if args.medium else "full"
    scale, overrides = SCALE[mode], OVERRIDES[mode]
    arch_mode = "full" if mode == "full" else "quick"  # medium trains the quick architectures
    out = Path(args.out or ROOT / "results" / "fashion_mnist" / mode)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    workers = args.workers if args.workers is not None else (4 if mode == "full" else 0)
    dev = ["--device", str(device)]
    jobs = ["--workers", str(workers)]
    t_start = time.time()
    timings: dict[str, float] = {}

    models = []
    for name, (arch, kw) in MODELS[arch_mode].items():
        models.append(train_model(name, arch, kw, overrides, out, args, str(device), workers))
        print(f"trained {name}: {models[-1]}")
    timings["train"] = round(time.time() - t_start, 1)
    ckpts = {m["name"]: m["run"] for m in models}
    if device.type == "cpu":  # the analyses run in this process too: the project's thread rule, as for training
        torch.set_num_threads(cpu_threads(workers))

    def step(key, argv):
        t = time.time()
        rc = cli.main(argv)
        timings[key] = round(time.time() - t, 1)
        if rc:
            raise SystemExit(f"{key} failed with exit status {rc}")

    lim = ["--limit", str(overrides["limit_val"])] if overrides.get("limit_val") else []
    step("resolution", ["resolution-sweep", "--checkpoint", *ckpts.values(), "--data", args.data,
                        "--factors", "0.5", "1", "1.5", "2", "--interpolation", "bilinear", *lim,
                        "-o", str(out / "resolution"), *dev, *jobs])
    layers = [f"{n}={l}" for n, ls in ERF_LAYERS[arch_mode].items() for l in ls]
    step("erf", ["erf", "--checkpoint", *ckpts.values(), "--layers", *layers, "--data", args.data,
                 "--images", str(scale["erf_images"]), "--interpolation", "bilinear", "-o", str(out / "erf"), *dev, *jobs])
    rob = ["--limit", str(scale["rob_limit"])]
    if scale["corruptions"]:
        rob += ["--corruptions", *scale["corruptions"]]
    if scale["severities"]:
        rob += ["--severities", *map(str, scale["severities"])]
    for name, ck in ckpts.items():
        extra = [] if name == "convnext" else ["--baseline", ckpts["convnext"]]
        step(f"robustness_{name}", ["robustness", "--checkpoint", ck, "--data", args.data, *rob, *extra,
                                    "--attack", "fgsm", "--eps", "1/255", "--interpolation", "bilinear",
                                    "-o", str(out / "robustness" / name), *dev, *jobs])
    step("memory", ["memory", "--checkpoint", *ckpts.values(), "--sizes", *map(str, scale["mem_sizes"]),
                    "--batch-size", str(scale["mem_batch"]), "--iters", str(scale["mem_iters"]), "--warmup", "1",
                    "-o", str(out / "memory"), *dev])
    step("memory_vil_chunkwise", ["memory", "--checkpoint", ckpts["vil"], "--mlstm-backend", "chunkwise",
                                  "--sizes", *map(str, scale["mem_sizes"]), "--batch-size", str(scale["mem_batch"]),
                                  "--no-throughput", "-o", str(out / "memory_vil_chunkwise"), *dev])
    timings["total"] = round(time.time() - t_start, 1)
    for m in models:  # relative paths in the record: the folder may be moved or committed
        m["run"] = str(Path(m["run"]).relative_to(out))
    summary = dict(mode=mode, device=C.device_description(device), timings_s=timings, recipe=RECIPE,
                   recipe_overrides=overrides, models=models)
    C.write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(summary_md(out, summary))
    print((out / "summary.md").read_text())
    return 0


def summary_md(out: Path, s: dict) -> str:
    head = ("# Fashion-MNIST analyses - " + {
        "quick": "CI-scale QUICK run (pipeline check only; numbers mean nothing)",
        "medium": "MEDIUM CPU run (tiny models, 1 epoch on 8000 images, subsets; not the full reproduction)",
        "full": "full run"}[s["mode"]] + "\n\n")
    models = s["models"]
    timing = f"{s['timings_s']['total']} s (training {s['timings_s']['train']} s)"
    reused = [m["name"] for m in models if m["reused"]]
    if reused:
        timing += f"; the training of {', '.join(reused)} was reused from an earlier invocation"
    recipe = get_recipe(s["recipe"])
    rest = ", ".join(f"{k}={v}" for k, v in recipe.items() if k not in s["recipe_overrides"] and k not in ("model", "workers"))
    overrides = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in s["recipe_overrides"].items())
    val = s["recipe_overrides"].get("limit_val") or "all 10000"
    lines = [head, f"- device: {s['device']}\n- total time: {timing}\n",
             f"- training: the engine (`lstmvision train`), recipe `{s['recipe']}` for every model, with this mode's "
             f"overrides `{overrides}`; the rest of the recipe: {rest}. Per-model commands in summary.json; "
             "per-epoch logs in training/NAME/summary.csv\n\n## Models\n\n",
             C.markdown_table(["model", "architecture", "model kwargs", "params", f"best top-1 % ({val} test images)",
                               "best epoch", "final train loss", "train s"],
                              [[m["name"], m["architecture"], _kwargs(m["model_kwargs"]), m["params"], m["top1"],
                                m["best_epoch"], m["final_train_loss"], m["train_s"]] for m in models]),
             "\n## Claims, as this run measured them\n\n", claims_md(out, s),
             "\n## Resolution sweep\n\n", (out / "resolution" / "resolution.md").read_text(),
             "\n![resolution](resolution/resolution.png)\n\n## ERF\n\n", (out / "erf" / "erf.md").read_text(),
             "\n![erf](erf/erf.png)\n\n## Robustness\n\n"]
    for name in (m["name"] for m in models):
        r = json.loads((out / "robustness" / name / "robustness.json").read_text())
        adv = r.get("adversarial", {})
        lines.append(f"- {name}: clean {r['clean_top1']:.2f}%, mean corruption error {r['mean_error']:.2f}%"
                     + (f", CE vs convnext {r['mce_vs_baseline']:.1f}, relative CE {r['relative_mce_vs_baseline']:.1f}"
                        if "mce_vs_baseline" in r else "")
                     + (f", FGSM(1/255) top-1 {adv['top1']:.2f}%" if adv else "") + "\n")
    lines += ["\n## Memory and throughput vs resolution\n\n", (out / "memory" / "memory.md").read_text(),
              "\n![memory](memory/memory.png)\n\nViL with the chunkwise mLSTM at every size (the default switches "
              "from parallel to chunkwise above 256 tokens):\n\n", (out / "memory_vil_chunkwise" / "memory.md").read_text()]
    return "".join(lines)


def _kwargs(kwargs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "(as registered)"


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else str(v)


def claims_md(out: Path, s: dict) -> str:
    """One line per paper claim, computed from the JSON outputs (whatever they show)."""
    lines = []
    res = json.loads((out / "resolution" / "resolution.json").read_text())["results"]
    drops, at1 = {}, {}
    for r in res:
        a1, a2 = r["top1"].get(str(r["native_size"])), r["top1"].get(str(2 * r["native_size"]))
        if a1 is not None and a2 is not None:
            drops[r["model"]], at1[r["model"]] = a1 - a2, a1
    if drops:
        best = min(drops, key=drops.get)
        lines.append(f"- Resolution (Sequencer degrades least at 2x): drop in top-1 points from 1x to 2x: "
                     + ", ".join(f"{m} {d:.1f} (from {at1[m]:.1f}%)" for m, d in drops.items())
                     + f" -> least: {best}; claim {'holds' if best == 'sequencer2d' else 'does not hold'} here"
                     + " (a flat curve from a low 1x accuracy says little).")
    erf = json.loads((out / "erf" / "erf.json").read_text())["maps"]
    first = {}
    for e in erf:
        first.setdefault(e["model"], e)
    lines.append("- ERF (cross-shaped for Sequencer): on-cross / off-cross gradient at equal distances, first listed layer (1 = isotropic, inf = nothing off the cross, nan = too compact): "
                 + ", ".join(f"{m} {e['layer']} {_fmt(e['cross_ratio'])}" for m, e in first.items())
                 + "; see erf.png.")
    mem = json.loads((out / "memory" / "memory.json").read_text())
    sizes = sorted({int(k) for m in mem["models"] for k in m["results"]})
    lo, hi = str(sizes[0]), str(sizes[-1])
    growth = {m["model"]: (m["results"][hi]["peak_mib"] / m["results"][lo]["peak_mib"])
              for m in mem["models"] if m["results"].get(hi, {}).get("peak_mib") and m["results"].get(lo, {}).get("peak_mib")}
    peak_hi = {m["model"]: m["results"][hi]["peak_mib"] for m in mem["models"] if m["results"].get(hi, {}).get("peak_mib")}
    if growth:
        lowest = min(peak_hi, key=peak_hi.get)
        lines.append(f"- Memory (LSTM mixing economical at high resolution; ViL linear in tokens): peak forward memory "
                     f"at {hi} px / at {lo} px ({(int(hi) / int(lo)) ** 2:.0f}x the tokens): "
                     + ", ".join(f"{m} {g:.1f}x" for m, g in growth.items())
                     + f"; lowest peak at {hi} px: {lowest} ({peak_hi[lowest]:.1f} MiB). Parameters differ: compare "
                       "growth factors more than absolute values.")
    ck = out / "memory_vil_chunkwise" / "memory.json"
    if ck.is_file():
        r = json.loads(ck.read_text())["models"][0]["results"]
        if r.get(hi, {}).get("peak_mib") and r.get(lo, {}).get("peak_mib"):
            lines.append(f"- ViL with the chunkwise mLSTM forced at every size: peak memory at {hi} px / at {lo} px = "
                         f"{r[hi]['peak_mib'] / r[lo]['peak_mib']:.1f}x for {(int(hi) / int(lo)) ** 2:.0f}x the tokens "
                         "(linear scaling would be about the token ratio).")
    rob = {n: json.loads((out / "robustness" / n / "robustness.json").read_text()) for n in (m["name"] for m in s["models"])}
    lines.append("- Robustness (not a paper claim on Fashion-MNIST; reported): mean corruption error "
                 + ", ".join(f"{n} {r['mean_error']:.1f}%" for n, r in rob.items()) + ".")
    if s["mode"] == "quick":
        lines.append("- QUICK run: the models are barely trained, so none of these lines tests a claim.")
    elif s["mode"] == "medium":
        lines.append("- MEDIUM run: tiny models (40-115 k parameters) after one short epoch; indicative only.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
