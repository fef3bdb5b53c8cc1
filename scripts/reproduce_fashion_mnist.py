"""Small-scale reproduction of the Sequencer / ViL analysis claims on Fashion-MNIST (issue 6).

Trains four models of similar size with one recipe - a Sequencer2D, a ViL (v2), a DeiT and a ConvNeXt (the last
two from timm) - at 32 px (Fashion-MNIST's 28 px images resized, 1 channel), then runs the analysis tools:
resolution sweep (0.5x-2x), ERF maps, ImageNet-C-style robustness (CE vs the ConvNeXt baseline) with FGSM, and
peak memory / throughput vs resolution. Everything lands in OUT (default results/fashion_mnist/full, or
results/fashion_mnist/quick with --quick) with a summary.md naming the device and the time taken.

    scripts/reproduce_fashion_mnist.sh            # full: GPU recommended (time not measured yet)
    scripts/reproduce_fashion_mnist.sh --quick    # CI scale: tiny models and subsets, ~1.5 min on 2 CPU cores
    scripts/reproduce_fashion_mnist.sh --medium   # the quick models on 8000 images, ~10 min on 2 CPU cores

The quick mode only proves the pipeline end to end: its numbers are NOT a reproduction of anything. The medium
mode gives small but real numbers on a CPU; the full mode is the reproduction.

Training recipe (identical for the four models): AdamW lr 2e-3, weight decay 0.05, cosine schedule with one
warm-up epoch, label smoothing 0.1, random-resized crop (scale 0.75-1, ratio 0.9-1.1) + horizontal flip,
normalisation mean 0.5 / std 0.5, batch 128 (64 in quick mode). It follows the engine's `sequencer-small`
recipe; the loop is local because `lstmvision train` builds registered lstmvision models only, not timm ones.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lstmvision import cli  # noqa: E402
from lstmvision.analysis import common as C  # noqa: E402
from lstmvision.weights import save_pretrained  # noqa: E402

NATIVE = 32
CFG = dict(mean=(0.5,), std=(0.5,), input_size=(1, NATIVE, NATIVE), crop_pct=1.0, interpolation="bilinear")

# name -> (builder kind, architecture, kwargs); "full" models are of similar size (0.7-1.2 M parameters)
MODELS = {
    "full": {
        "sequencer2d": ("lstmvision", "sequencer2d_s", dict(layers=(2, 2), patch_sizes=(4, 2), embed_dims=(64, 128),
                                                           hidden_sizes=(32, 64), mlp_ratios=2.0)),
        "vil": ("lstmvision", "vil2_tiny", dict(patch_size=4, embed_dim=112, depth=8)),
        "deit": ("timm", "deit_tiny_patch16_224", dict(img_size=NATIVE, patch_size=4, embed_dim=112, depth=6,
                                                       num_heads=4)),
        "convnext": ("timm", "convnext_atto", dict(depths=(2, 2, 4, 2), dims=(32, 64, 128, 160))),
    },
    "quick": {
        "sequencer2d": ("lstmvision", "sequencer2d_s", dict(layers=(1, 1), patch_sizes=(4, 2), embed_dims=(32, 64),
                                                           hidden_sizes=(16, 32), mlp_ratios=2.0)),
        "vil": ("lstmvision", "vil2_tiny", dict(patch_size=4, embed_dim=48, depth=2)),
        "deit": ("timm", "deit_tiny_patch16_224", dict(img_size=NATIVE, patch_size=4, embed_dim=48, depth=2,
                                                       num_heads=2)),
        "convnext": ("timm", "convnext_atto", dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 64))),
    },
}
ERF_LAYERS = {
    "full": {"sequencer2d": ["stages.0", "stages.1"], "vil": ["blocks.3", "blocks.7"], "deit": ["blocks.2", "blocks.5"],
             "convnext": ["stages.1", "stages.2"]},
    "quick": {"sequencer2d": ["stages.0", "stages.1"], "vil": ["blocks.1"], "deit": ["blocks.1"],
              "convnext": ["stages.1"]},
}
SCALE = {
    "full": dict(epochs=30, batch=128, train_limit=None, eval_limit=None, erf_images=64, rob_limit=2000,
                 corruptions=None, severities=None, mem_sizes=[32, 64, 128, 256, 384], mem_batch=16, mem_iters=10),
    # CPU-sized: the quick models trained on more data, most corruptions; a real (small) result, not the full run
    "medium": dict(epochs=1, batch=64, train_limit=8000, eval_limit=1000, erf_images=16, rob_limit=100,
                   corruptions=None, severities=[3], mem_sizes=[32, 64, 128], mem_batch=4, mem_iters=3),
    "quick": dict(epochs=1, batch=64, train_limit=640, eval_limit=200, erf_images=4, rob_limit=64,
                  corruptions=["gaussian_noise", "contrast"], severities=[3], mem_sizes=[32, 64], mem_batch=2,
                  mem_iters=1),
}


def build(kind: str, arch: str, kwargs: dict):
    if kind == "lstmvision":
        from lstmvision.models import create_model

        model = create_model(arch, num_classes=10, in_chans=1, img_size=NATIVE, **kwargs)
    else:
        import timm

        kw = dict(kwargs, num_classes=10, in_chans=1)
        dyn = {"dynamic_img_size": True} if "patch_size" in kw else {}
        model = timm.create_model(arch, pretrained=False, **kw, **dyn)
        model.model_name = C.TIMM_PREFIX + arch
        model.model_kwargs = {k: v for k, v in kw.items() if k != "num_classes"}
    model.pretrained_cfg = {**dict(getattr(model, "pretrained_cfg", {}) or {}), **CFG}
    return model


def train(model, data: str, scale: dict, device: torch.device, workers: int = 0, seed: int = 0) -> dict:
    """The shared recipe (module docstring). Returns a small log."""
    from torchvision import transforms as T
    from tqdm import tqdm

    torch.manual_seed(seed)
    ds = C.open_dataset(data, "train")
    idx = C.subset_indices(len(ds), scale["train_limit"], seed)
    aug = T.Compose([T.RandomResizedCrop(NATIVE, scale=(0.75, 1.0), ratio=(0.9, 1.1),
                                         interpolation=T.InterpolationMode.BILINEAR), T.RandomHorizontalFlip()])
    tds = C.MappedDataset(ds, idx, lambda img, i: (C.to_model_tensor(aug(img), 1) - 0.5) / 0.5)
    dl = torch.utils.data.DataLoader(tds, batch_size=scale["batch"], shuffle=True, drop_last=True,
                                     num_workers=workers, persistent_workers=workers > 0)
    steps = scale["epochs"] * len(dl)
    warm = min(len(dl), steps // 10 + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(steps - warm, 1))))
    model.train()
    t0, step, loss_ema = time.time(), 0, None
    for epoch in range(scale["epochs"]):
        for x, y in tqdm(dl, desc=f"{model.model_name} epoch {epoch + 1}/{scale['epochs']}", leave=False):
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_ema = loss.item() if loss_ema is None else 0.9 * loss_ema + 0.1 * loss.item()
    model.eval()
    return dict(steps=step, final_loss=round(loss_ema or float("nan"), 4), seconds=round(time.time() - t0, 1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="CI scale (tiny models and subsets, CPU minutes)")
    g.add_argument("--medium", action="store_true", help="the quick models on more data (~10 min on 2 CPU cores)")
    p.add_argument("--reuse-checkpoints", action="store_true",
                   help="skip training where OUT/checkpoints/NAME holds a model and its train_log.json")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", help="output folder (default results/fashion_mnist/{full,quick})")
    p.add_argument("--device", help="cpu or cuda for the analyses (training runs on the same device)")
    p.add_argument("--workers", type=int,
                   help="data-loading processes for training and the analyses (default 0 quick, 4 full)")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "medium" if args.medium else "full"
    scale = SCALE[mode]
    arch_mode = "full" if mode == "full" else "quick"  # medium trains the quick architectures
    out = Path(args.out or ROOT / "results" / "fashion_mnist" / mode)
    out.mkdir(parents=True, exist_ok=True)
    device = C.resolve_device(args.device)
    workers = args.workers if args.workers is not None else (4 if mode == "full" else 0)
    dev = ["--device", str(device)]
    jobs = ["--workers", str(workers)]
    t_start = time.time()
    timings, trained = {}, {}

    ckpts = {}
    for name, (kind, arch, kw) in MODELS[arch_mode].items():
        ckpts[name] = out / "checkpoints" / name
        log_file = ckpts[name] / "train_log.json"
        if args.reuse_checkpoints and log_file.is_file():
            model = C.load_model(str(ckpts[name]))
            log = dict(json.loads(log_file.read_text()), reused=True)
        else:
            torch.manual_seed(0)  # the same initialisation stream for every model, every run
            model = build(kind, arch, kw).to(device)
            log = train(model, args.data, scale, device, workers)
            save_pretrained(model.cpu(), ckpts[name])
            log_file.write_text(json.dumps(log))
        trained[name] = dict(architecture=arch, kwargs={k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
                             params=sum(p.numel() for p in model.parameters()), **log)
        print(f"trained {name}: {trained[name]}")
    timings["train"] = round(time.time() - t_start, 1)

    def step(key, argv):
        t = time.time()
        rc = cli.main(argv)
        timings[key] = round(time.time() - t, 1)
        if rc:
            raise SystemExit(f"{key} failed with exit status {rc}")

    lim = ["--limit", str(scale["eval_limit"])] if scale["eval_limit"] else []
    step("resolution", ["resolution-sweep", "--checkpoint", *map(str, ckpts.values()), "--data", args.data,
                        "--factors", "0.5", "1", "1.5", "2", "--interpolation", "bilinear", *lim,
                        "-o", str(out / "resolution"), *dev, *jobs])
    layers = [f"{n}={l}" for n, ls in ERF_LAYERS[arch_mode].items() for l in ls]
    step("erf", ["erf", "--checkpoint", *map(str, ckpts.values()), "--layers", *layers, "--data", args.data,
                 "--images", str(scale["erf_images"]), "--interpolation", "bilinear", "-o", str(out / "erf"), *dev, *jobs])
    rob = ["--limit", str(scale["rob_limit"])]
    if scale["corruptions"]:
        rob += ["--corruptions", *scale["corruptions"]]
    if scale["severities"]:
        rob += ["--severities", *map(str, scale["severities"])]
    for name, ck in ckpts.items():
        extra = [] if name == "convnext" else ["--baseline", str(ckpts["convnext"])]
        step(f"robustness_{name}", ["robustness", "--checkpoint", str(ck), "--data", args.data, *rob, *extra,
                                    "--attack", "fgsm", "--eps", "1/255", "--interpolation", "bilinear",
                                    "-o", str(out / "robustness" / name), *dev, *jobs])
    step("memory", ["memory", "--checkpoint", *map(str, ckpts.values()), "--sizes", *map(str, scale["mem_sizes"]),
                    "--batch-size", str(scale["mem_batch"]), "--iters", str(scale["mem_iters"]), "--warmup", "1",
                    "-o", str(out / "memory"), *dev])
    step("memory_vil_chunkwise", ["memory", "--checkpoint", str(ckpts["vil"]), "--mlstm-backend", "chunkwise",
                                  "--sizes", *map(str, scale["mem_sizes"]), "--batch-size", str(scale["mem_batch"]),
                                  "--no-throughput", "-o", str(out / "memory_vil_chunkwise"), *dev])
    timings["total"] = round(time.time() - t_start, 1)
    summary = dict(mode=mode, device=C.device_description(device), timings_s=timings, models=trained,
                   recipe="AdamW 2e-3, wd 0.05, cosine + 1 warm-up epoch, label smoothing 0.1, RRC(0.75-1)+flip, 32 px",
                   epochs=scale["epochs"], batch=scale["batch"], train_images=scale["train_limit"] or "all")
    C.write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(summary_md(out, summary))
    print((out / "summary.md").read_text())
    return 0


def summary_md(out: Path, s: dict) -> str:
    head = ("# Fashion-MNIST analyses - " + {
        "quick": "CI-scale QUICK run (pipeline check only; numbers mean nothing)",
        "medium": "MEDIUM CPU run (tiny models, 1 epoch on 8000 images, subsets; not the full reproduction)",
        "full": "full run"}[s["mode"]] + "\n\n")
    reused = any(m.get("reused") for m in s["models"].values())
    train_s = round(sum(m["seconds"] for m in s["models"].values()), 1)
    timing = (f"analyses {round(s['timings_s']['total'] - s['timings_s']['train'], 1)} s in this invocation; training "
              f"{train_s} s in an earlier one (checkpoints reused)" if reused else
              f"{s['timings_s']['total']} s (training {s['timings_s']['train']} s)")
    lines = [head, f"- device: {s['device']}\n- total time: {timing}\n- recipe: {s['recipe']}; {s['epochs']} epoch(s), batch "
             f"{s['batch']}, train images: {s['train_images']}\n\n## Models\n\n",
             C.markdown_table(["model", "architecture", "params", "train steps", "final train loss", "train s"],
                              [[n, m["architecture"], m["params"], m["steps"], m["final_loss"], m["seconds"]]
                               for n, m in s["models"].items()]),
             "\n## Claims, as this run measured them\n\n", claims_md(out, s),
             "\n## Resolution sweep\n\n", (out / "resolution" / "resolution.md").read_text(),
             "\n![resolution](resolution/resolution.png)\n\n## ERF\n\n", (out / "erf" / "erf.md").read_text(),
             "\n![erf](erf/erf.png)\n\n## Robustness\n\n"]
    for name in s["models"]:
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
    rob = {n: json.loads((out / "robustness" / n / "robustness.json").read_text()) for n in s["models"]}
    lines.append("- Robustness (not a paper claim on Fashion-MNIST; reported): mean corruption error "
                 + ", ".join(f"{n} {r['mean_error']:.1f}%" for n, r in rob.items()) + ".")
    if s["mode"] == "quick":
        lines.append("- QUICK run: the models are barely trained, so none of these lines tests a claim.")
    elif s["mode"] == "medium":
        lines.append("- MEDIUM run: tiny models (40-115 k parameters) after one short epoch; indicative only.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
