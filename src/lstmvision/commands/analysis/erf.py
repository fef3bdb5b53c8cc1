"""`lstmvision erf`: effective receptive fields by the Sequencer paper's protocol (sequencer.md §4.7).

For every layer named by `--layers` (dotted module paths, e.g. `stages.1` for Sequencer, `blocks.3` for ViL or
a timm ViT, `stages.2` for a timm ConvNeXt; without `--layers`, `default_layers`: the output of every stage - its
last block - of a hierarchical model, four evenly spaced blocks ending with the last of an isotropic one):
1. a forward hook takes the layer output and sums the feature at the central position over batch and channels;
2. that scalar is backpropagated to the input; per image p = ReLU(d/d input) (eval mode, RNNs in train mode as
   the official `train_rnn`; the RNNs have no dropout so nothing changes);
3. the map is log10(sum over **exactly N** images and over channels of p + 1), shape (H_in, W_in), saved as
   `<model>__<layer>.npy` (the official loop processes N + 2 images; that off-by-one is not reproduced);
4. all maps of one run are min-max scaled jointly and drawn in one PNG grid (cmap 'pink', as the official
   `visualize_erf.py`).

Centre position: (H//2 - 1, W//2 - 1) of the layer's spatial grid, as the official code does for 4-D outputs.
Layouts: 4-D outputs are NHWC for models whose `output_fmt` is 'NHWC' (Sequencer, ViL) and NCHW otherwise
(timm CNNs; `--layout` overrides); 3-D (B, N, C) token outputs drop the model's prefix (class) tokens, recover
the grid from the input's aspect ratio and take the same (H//2 - 1, W//2 - 1) token. (The official 3-D rule,
token N//2 - sqrt(N)//2, is the same point for a ViT with one class token but one column to the right for a
square grid without one; we use one rule for all layouts so maps are comparable.)

Images: the paper draws them from the *training* loader (random-resized crop, flip, colour jitter). Here the
evaluation transform (resize to `--img-size`) is the default so runs are deterministic; `--train-aug` applies a
random-resized crop + flip instead. Gradients are per image even in batches: the models are in eval mode, so no
operation mixes samples.

`cross_ratio` (in erf.json) quantifies "cross-shaped": in rings of equal distance from the layer's centre cell,
the mean gradient on that cell's rows and columns divided by the mean off them, summed over rings from the cell
size outwards (about 1 for an isotropic ERF, > 1 for a cross, 'inf' when nothing lies off the cross, 'nan' for
an ERF too compact to have a shape). Compare the maps, not only the number.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from torchvision import transforms as T
from tqdm import tqdm

from lstmvision.commands.analysis import common as C
from lstmvision.data.loaders import limit
from lstmvision.device import resolve_device
from lstmvision.outputs import atomic_write, check_outputs


# ------------------------------------------------------------------------------------------ core
def output_grid(out: torch.Tensor, layout: str, input_hw: tuple[int, int], prefix_tokens: int = 0) -> tuple[int, int]:
    """(h, w) of a layer output (4-D NHWC/NCHW or 3-D tokens)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() == 4:
        return (out.shape[1], out.shape[2]) if layout == "nhwc" else (out.shape[2], out.shape[3])
    n = out.shape[1] - prefix_tokens
    h = max(1, round(math.sqrt(n * input_hw[0] / input_hw[1])))
    return h, n // h


def centre_scalar(out: torch.Tensor, layout: str, input_hw: tuple[int, int], prefix_tokens: int = 0) -> torch.Tensor:
    """Sum over batch and channels of the feature at the central position (H//2-1, W//2-1) of `out`."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() == 4:
        if layout == "nhwc":
            h, w = out.shape[1], out.shape[2]
            return out[:, max(h // 2 - 1, 0), max(w // 2 - 1, 0), :].sum()
        h, w = out.shape[2], out.shape[3]
        return out[:, :, max(h // 2 - 1, 0), max(w // 2 - 1, 0)].sum()
    if out.dim() == 3:
        n = out.shape[1] - prefix_tokens
        H, W = input_hw
        h = max(1, round(math.sqrt(n * H / W)))
        w = n // h
        if h * w != n:
            raise ValueError(f"cannot recover a token grid from {n} tokens for a {H}x{W} input")
        idx = prefix_tokens + max(h // 2 - 1, 0) * w + max(w // 2 - 1, 0)
        return out[:, idx, :].sum()
    raise ValueError(f"layer output of shape {tuple(out.shape)} is neither 4-D (NHWC/NCHW) nor 3-D (B, N, C)")


def layout_of(model: nn.Module, layout: str) -> str:
    if layout != "auto":
        return layout
    return "nhwc" if getattr(model, "output_fmt", "NCHW") == "NHWC" else "nchw"


def erf_maps(model: nn.Module, layers: list[str], images, layout: str = "auto",
             grids: dict[str, tuple[int, int]] | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Raw ERF sums {layer: (H, W) = sum over images and channels of ReLU(grad)} and the image count.

    `images` yields input batches (B, C, H, W) already normalised for the model; `grids`, if given, receives
    each layer's output grid (h, w).
    """
    modules = dict(model.named_modules())
    missing = [l for l in layers if l not in modules]
    if missing:
        names = [n for n in modules if n and n.count(".") <= 1][:30]
        raise ValueError(f"{getattr(model, 'label', 'model')} has no layer {missing[0]!r}; top-level layers: "
                         f"{', '.join(names)}")
    layout = layout_of(model, layout)
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    captured: dict[str, torch.Tensor] = {}
    handles = [modules[l].register_forward_hook(lambda m, a, o, l=l: captured.__setitem__(l, o)) for l in layers]
    sums: dict[str, torch.Tensor] = {}
    count = 0
    try:
        with C.rnns_in_train_mode(model):
            for x in images:
                x = x.detach().requires_grad_(True)
                captured.clear()
                model(x)
                for i, l in enumerate(layers):
                    if grids is not None:
                        grids[l] = output_grid(captured[l], layout, tuple(x.shape[-2:]), prefix)
                    s = centre_scalar(captured[l], layout, tuple(x.shape[-2:]), prefix)
                    (g,) = torch.autograd.grad(s, x, retain_graph=i < len(layers) - 1)
                    p = g.clamp_min(0).sum(dim=(0, 1)).double().cpu()
                    sums[l] = sums[l] + p if l in sums else p
                count += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    return {l: v.numpy() for l, v in sums.items()}, count


def log_map(raw: np.ndarray) -> np.ndarray:
    return np.log10(raw + 1.0)


def joint_minmax(maps: list[np.ndarray]) -> list[np.ndarray]:
    lo = min(float(m.min()) for m in maps)
    hi = max(float(m.max()) for m in maps)
    span = hi - lo if hi > lo else 1.0
    return [(m - lo) / span for m in maps]


def cross_ratio(raw: np.ndarray, cell: tuple[int, int, int, int] | None = None) -> float:
    """How cross-shaped an ERF is: in rings of equal Euclidean distance from the centre cell (1 px wide, from the
    cell size outwards), the mean gradient on the cell's rows and columns (the cross) is compared with the mean
    off them; the ratio of the sums over rings is about 1 for an isotropic ERF and > 1 for a cross ('inf' when
    nothing lies off the cross). `cell` = (top, left, height, width) of the layer's centre cell in input pixels
    (default: the peak pixel). 'nan' when under 10 % of the gradient lies beyond the cell size (compact ERF)."""
    H, W = raw.shape
    total = float(raw.sum())
    if total <= 0:
        return float("nan")
    if cell is None:
        cy, cx = (int(v) for v in np.unravel_index(int(np.argmax(raw)), raw.shape))
        cell = (cy, cx, 1, 1)
    y0, x0, sy, sx = cell
    yc, xc = y0 + (sy - 1) / 2, x0 + (sx - 1) / 2
    yy, xx = np.mgrid[0:H, 0:W]
    on = ((yy >= y0) & (yy < y0 + sy)) | ((xx >= x0) & (xx < x0 + sx))
    r = np.hypot(yy - yc, xx - xc)
    start = max(sy, sx, 2)
    if float(raw[r >= start - 0.5].sum()) < 0.1 * total:
        return float("nan")
    ring = np.floor(r + 0.5).astype(int)
    num = den = 0.0
    for k in range(start, int(ring.max()) + 1):
        a, b = (ring == k) & on, (ring == k) & ~on
        if a.any() and b.any():
            num += float(raw[a].mean())
            den += float(raw[b].mean())
    if den > 0:
        return num / den
    return float("inf") if num > 0 else float("nan")


def centre_cell(grid: tuple[int, int], input_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Input-pixel box (top, left, height, width) of the grid cell (h//2 - 1, w//2 - 1)."""
    (h, w), (H, W) = grid, input_hw
    sy, sx = H // h, W // w
    return max(h // 2 - 1, 0) * sy, max(w // 2 - 1, 0) * sx, sy, sx


def _json_number(v: float) -> float | str:
    return round(v, 4) if math.isfinite(v) else str(v)  # strict JSON has no inf/nan


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ---------------------------------------------------------------------------------------------- report
def _image_batches(model: nn.Module, data: C.EvalImages, size: int, train_aug: bool, seed: int,
                   device: torch.device):
    mean, std = C.model_norm(model)
    in_chans = C.model_in_chans(model)
    if train_aug:
        torch.manual_seed(seed)
        aug = T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0)), T.RandomHorizontalFlip()])

        def fn(img, _i):
            return C.to_model_tensor(aug(img.convert("RGB")), in_chans)
    else:
        def fn(img, _i):
            return C.to_model_tensor(data.resize(img, size), in_chans)

    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    for x, _ in data.batches(fn):
        yield ((x - m) / s).to(device)


DEFAULT_ISOTROPIC_LAYERS = 4


def _feature_modules(model: nn.Module) -> list[tuple[str, int | None]]:
    """(module name, reduction) of the model's feature_info entries that name a module with children (a stage or
    a block; a stem activation such as a timm ResNet's `act1` is no stage), in order."""
    info = getattr(model, "feature_info", None)
    info = getattr(info, "info", info)  # timm's FeatureInfo (features_only models) keeps the dicts in .info
    modules = dict(model.named_modules())
    out = []
    for f in info if isinstance(info, (list, tuple)) else []:
        name = f.get("module") if isinstance(f, dict) else None
        if name in modules and any(True for _ in modules[name].children()):
            out.append((name, f.get("reduction")))
    return out


def evenly_spaced(n_blocks: int, count: int = DEFAULT_ISOTROPIC_LAYERS) -> list[int]:
    """`count` block indices spread evenly over `n_blocks`, ending with the last (8 -> 1 3 5 7, 6 -> 1 2 4 5)."""
    count = max(1, min(count, n_blocks))
    return [int((k + 1) * n_blocks / count + 0.5) - 1 for k in range(count)]


def default_layers(model: nn.Module, count: int = DEFAULT_ISOTROPIC_LAYERS) -> list[str]:
    """The layers whose ERF `lstmvision erf` draws when `--layers` is not given.

    From the model's `feature_info` (timm's contract, which Sequencer and ViL follow): a hierarchical model
    (entries at more than one reduction) gives the output of every stage, i.e. of its last block - `stages.0`
    ... for Sequencer and ConvNeXt, `layer1` ... `layer4` for a ResNet (its stem is no stage); an isotropic
    one (one reduction: ViL, ViT/DeiT) gives `count` evenly spaced blocks ending with the last. Without
    feature_info, a `stages` container counts as hierarchical and a `blocks` one as isotropic.
    """
    feats = _feature_modules(model)
    if feats:
        if len({r for _, r in feats}) > 1:  # hierarchical: the last entry of each resolution
            last: dict[Any, str] = {}
            for name, r in feats:
                last.pop(r, None)
                last[r] = name
            return list(last.values())
        return [feats[i][0] for i in evenly_spaced(len(feats), count)]
    for attr, hierarchical in (("stages", True), ("blocks", False), ("layers", False)):
        seq = getattr(model, attr, None)
        if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
            idx = range(len(seq)) if hierarchical else evenly_spaced(len(seq), count)
            return [f"{attr}.{i}" for i in idx]
    raise ValueError(f"cannot choose ERF layers for {getattr(model, 'label', type(model).__name__)} (no "
                     "feature_info, stages or blocks): give --layers")


def layers_for(model: nn.Module, layers: list[str] | None) -> list[str]:
    """The entries of `layers` that apply to `model`: 'LAYER' for every model, 'LABEL=LAYER' for one; no
    `layers` (None or empty): `default_layers(model)`."""
    if not layers:
        return default_layers(model)
    label = getattr(model, "label", "")
    chosen = [l.split("=", 1)[-1] for l in layers if "=" not in l or l.split("=", 1)[0] == label]
    if not chosen:
        raise ValueError(f"no --layers apply to {label} (use 'LAYER' or '{label}=LAYER')")
    return chosen


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add .npy to the temporary name
        np.save(f, array)


def erf_report(models: list[nn.Module], data: C.EvalImages, layers: list[str] | None, images: int,
               output: str | Path, img_size: int | None = None, layout: str = "auto", train_aug: bool = False,
               seed: int = 0, device: torch.device | None = None, overwrite: bool = False,
               reads: Sequence[str | Path] = ()) -> dict:
    """ERF maps of `layers` of each model (with `.label`, from `models.loading.create_model`; None: `default_layers` of
    each) over exactly `images` random images of `data`; writes the .npy maps, erf.png, erf.json and erf.md to
    `output` and returns the report."""

    if images < 1:
        raise ValueError(f"--images must be at least 1, got {images}")
    if images > len(data.dataset):
        raise ValueError(f"--images {images} but the {data.split} set has only {len(data.dataset)} images")
    data = replace(data, dataset=limit(data.dataset, images, seed))
    device = device or resolve_device(None)
    out = C.report_folder(output, "erf", overwrite, reads)
    t0 = time.time()
    entries = []
    for model in tqdm(models, desc="models"):
        chosen = layers_for(model, layers)
        size = img_size or C.model_native_size(model)
        grids: dict[str, tuple[int, int]] = {}
        batches = _image_batches(model.to(device), data, size, train_aug, seed, device)
        maps, n = erf_maps(model, chosen, batches, layout, grids)
        if n != images:
            raise RuntimeError(f"summed {n} images, expected {images}")
        for l in chosen:
            lm = log_map(maps[l])
            fname = f"{_safe(model.label)}__{_safe(l)}.npy"
            check_outputs([out / fname], reads, overwrite)
            atomic_write(out / fname, lambda p, m=lm: _save_npy(p, m))
            entries.append(dict(model=model.label, layer=l, file=fname, size=size, images=n,
                                grid=list(grids[l]),
                                cross_ratio=_json_number(cross_ratio(maps[l], centre_cell(grids[l], (size, size)))),
                                map=lm))
    scaled = joint_minmax([e["map"] for e in entries])
    plot_grid(entries, scaled, out / "erf.png")
    report = dict(data=data.name, images=images, train_aug=train_aug, centre="(H//2-1, W//2-1)",
                  layers="given" if layers else "default (every stage's output; evenly spaced blocks if isotropic)",
                  seconds=round(time.time() - t0, 1),
                  maps=[{k: v for k, v in e.items() if k != "map"} for e in entries])
    C.write_report(out, "erf", report, table(report))
    return report


def table(report: dict) -> str:
    rows = [[e["model"], e["layer"], e["size"], e["images"], e["cross_ratio"]] for e in report["maps"]]
    return C.markdown_table(["model", "layer", "input px", "images", "cross ratio (on/off cross, equal distance)"],
                            rows)


def plot_grid(entries: list[dict], scaled: list[np.ndarray], path: Path) -> None:
    models = list(dict.fromkeys(e["model"] for e in entries))
    ncol = max(sum(e["model"] == m for e in entries) for m in models)
    with C.figure(path, len(models), ncol, figsize=(2.2 * ncol, 2.3 * len(models)), squeeze=False) as (_, axes):
        for ax in axes.flat:
            ax.axis("off")
        for r, m in enumerate(models):
            for c, (e, s) in enumerate([(e, s) for e, s in zip(entries, scaled) if e["model"] == m]):
                axes[r][c].imshow(s, cmap="pink", vmin=0, vmax=1)
                axes[r][c].set_title(f"{m}\n{e['layer']}", fontsize=7)
