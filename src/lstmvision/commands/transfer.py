"""The VTAB-1K transfer protocol (vision-lstm.md §4.4) on top of the training engine.

Per task (a dataset folder that `lstmvision.data.resolve_dataset` reads): draw `train_size` + `val_size`
images from the task's training split (seeded), fine-tune on the train part for every lr x seed and score on
the val part, pick the lr with the best mean val top-1, retrain with it on train + val and test on the task's
test split. Every fit is one `lstmvision.engine.trainer.train` run in its own run folder, so a rerun skips finished
runs and resumes unfinished ones through the engine's resume.

Layout under `output/`: `protocol.json` (the settings the runs depend on), per task `<task>/split.json` (the
drawn indices), `<task>/data_sweep/` and `<task>/data_final/` (the drawn subsets as datasets: symlinks for
image folders, small idx files for idx data), the run folders `<task>/sweep_lr<lr>_seed<s>/` and
`<task>/final_lr<lr>_seed<s>/` (the latter with `test.json`), and the tables `transfer.md` + `transfer.json`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lstmvision.constants import VTAB_LRS
from lstmvision.data.classification import create_eval_transform
from lstmvision.data.images import (
    DataError,
    IdxDataset,
    ImageFolderDataset,
    find_idx_files,
    require_readable,
)
from lstmvision.data.loaders import build_loader
from lstmvision.data.shards import is_sharded, parse_spec
from lstmvision.data.sources import resolve_dataset, to_image_folders
from lstmvision.device import resolve_device
from lstmvision.engine.checkpoint import STATE_NAME
from lstmvision.engine.recipes import DEFAULTS
from lstmvision.engine.summary import read_summary
from lstmvision.engine.trainer import train
from lstmvision.errors import first_line, os_reason
from lstmvision.models import create_model, get_pretrained_cfg
from lstmvision.outputs import atomic_write
from lstmvision.tasks.classify import evaluate
from lstmvision.weights import CONFIG_NAME, find_checkpoint, read_config

LR_SCALE_BATCH = 64  # the protocol's lr_scale_factor: lr = lr * batch / 64


@contextlib.contextmanager
def _writing(path: Path):
    """A file-system refusal while writing `path` as one line naming it, without errno."""
    try:
        yield
    except OSError as e:
        raise PermissionError(f"cannot write {path}: {os_reason(e)}") from None


@dataclass
class Protocol:
    """Settings of the protocol (defaults: the paper's, except `seeds`: the paper used 5)."""

    epochs: int = 50
    lrs: tuple[float, ...] = VTAB_LRS
    seeds: int = 1
    train_size: int = 800
    val_size: int = 200
    split_seed: int = 0
    batch_size: int = 64
    layer_decay: float = 0.65
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    # how to run (not part of the results)
    device: str | None = None
    amp: str = "none"
    workers: int = 2
    threads: int | None = None

    def check(self) -> None:
        for key in ("epochs", "seeds", "train_size", "val_size", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be a positive integer, got {value!r}")
        if not self.lrs:
            raise ValueError("--lrs needs at least one learning rate")
        bad = [lr for lr in self.lrs if not (math.isfinite(lr) and lr > 0)]
        if bad:
            raise ValueError(f"--lrs must be positive numbers, got {', '.join(map(str, bad))}")
        if len(set(self.lrs)) != len(self.lrs):
            raise ValueError(f"--lrs lists a learning rate twice: {' '.join(f'{lr:g}' for lr in self.lrs)}")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"--warmup-frac must be in [0, 1), got {self.warmup_frac}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"--layer-decay must be in (0, 1], got {self.layer_decay}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {self.workers!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {self.threads!r}")

    def fingerprint(self) -> dict[str, Any]:
        """The settings a finished run depends on (lrs and seeds only add or pick runs)."""
        keep = ("epochs", "train_size", "val_size", "split_seed", "batch_size", "layer_decay", "weight_decay",
                "warmup_frac")
        return {k: getattr(self, k) for k in keep}


@dataclass
class Backbone:
    """What to fine-tune: a registered architecture, its weights (None: from scratch) and its input settings."""

    model: str
    weights: str | None
    img_size: int | None = None
    in_chans: int | None = None  # None: from the data
    mean: list[float] | None = None  # None: the engine's choice for the channels
    std: list[float] | None = None
    interpolation: str = "bicubic"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # architecture arguments (e.g. a narrowed model)


# set per fit by the engine (input size, channels) or by the protocol (no drop-path/dropout), not architecture
_NOT_ARCHITECTURE = ("img_size", "in_chans", "num_classes", "drop_path_rate", "drop_rate")


def backbone_from_folder(folder: str | os.PathLike, img_size: int | None = None, scratch: bool = False) -> Backbone:
    """The model saved in `folder` (a `save_pretrained` folder, e.g. a run's best/) at its own input size; with
    `scratch` the same architecture, channels, input size and normalisation, randomly initialised (the baseline)."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{folder} holds no saved model (config.json + model.safetensors)")
    saved = read_config(folder)
    pcfg = {**get_pretrained_cfg(saved["architecture"]), **saved["pretrained_cfg"]}
    in_chans, _, size = pcfg["input_size"]
    kwargs = {k: v for k, v in saved["kwargs"].items() if k not in _NOT_ARCHITECTURE}
    return Backbone(saved["architecture"], None if scratch else str(folder.resolve()), int(img_size or size),
                    int(in_chans), list(pcfg["mean"]), list(pcfg["std"]), pcfg.get("interpolation") or "bicubic",
                    kwargs)


def backbone_from_name(name: str, img_size: int | None = None) -> Backbone:
    """The registered model `name` from scratch, at its default input size; channels from the data."""

    pcfg = get_pretrained_cfg(name)
    return Backbone(name, None, int(img_size or pcfg["input_size"][-1]),
                    interpolation=pcfg.get("interpolation") or "bicubic")


# ---------------------------------------------------------------------------------------------- tasks
@dataclass
class TransferTask:
    name: str
    root: Path
    class_names: list[str]
    n_available: int  # images in the task's training split
    train_idx: list[int] = field(default_factory=list)
    val_idx: list[int] = field(default_factory=list)
    warning: str | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def task_names(roots: Sequence[str | os.PathLike]) -> list[str]:
    names = [Path(r).resolve().name for r in roots]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two task folders share the name {dup[0]!r}; each task needs its own folder name")
    return names


EVAL_FOLDERS = ("val", "validation", "valid", "test")  # the evaluation splits of an image-folder task


def check_task_splits(root: Path, name: str) -> None:
    """Every split of the task (train, and val / validation / valid / test of an image-folder tree, or the t10k
    idx files) present, not empty, readable and with no class the train split lacks: checked before the first
    fit, as one DataError naming the task and the split."""
    if find_idx_files(root, "train") is not None:
        if find_idx_files(root, "val") is None:
            raise DataError(f"task {name} ({root}): no test split (t10k-images-idx3-ubyte + t10k-labels-idx1-ubyte)")
        try:
            n_classes = len(IdxDataset.from_folder(root, "train").class_names)
            test = IdxDataset.from_folder(root, "val")
        except DataError as e:
            raise DataError(f"task {name}: {first_line(e)}") from None
        if len(test) == 0:
            raise DataError(f"task {name}: the test split (t10k idx files in {root}) is empty")
        if int(test.labels.max()) >= n_classes:
            raise DataError(f"task {name}: the test split (t10k idx files in {root}) has label {int(test.labels.max())}"
                            f" but the train split only {n_classes} classes")
        return
    if not (root / "train").is_dir():
        raise DataError(f"task {name} ({root}): no train split (train/ class folders or MNIST idx files)")
    classes = ImageFolderDataset(root / "train").class_names
    evals = [v for v in EVAL_FOLDERS if (root / v).is_dir()]
    if not evals:
        raise DataError(f"task {name} ({root}): no test split ({', '.join(f'{v}/' for v in EVAL_FOLDERS)} class "
                        "folders)")
    for split in ["train", *evals]:
        folder = root / split
        extra = sorted(d.name for d in folder.iterdir()
                       if d.is_dir() and not d.name.startswith(".") and d.name not in classes)
        if extra:
            raise DataError(f"task {name}: the {split} split ({folder}) has classes the train split lacks: "
                            f"{', '.join(extra[:5])}")
        ds = ImageFolderDataset(folder, class_names=classes)
        if len(ds) == 0:
            raise DataError(f"task {name}: the {split} split ({folder}) has no images")
        try:
            require_readable(ds, folder)
        except DataError as e:
            raise DataError(f"task {name}, {split} split: {first_line(e)}") from None


def open_task(root: str | os.PathLike, name: str, protocol: Protocol) -> TransferTask:
    """The task at `root` with its seeded train/val draw from the training split (every split checked first)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"task data not found: {root}") if not root.exists() else \
            NotADirectoryError(f"task data must be a folder: {root}")
    check_task_splits(root, name)  # fail now, not after the sweep, when a split is missing or has other classes
    train = resolve_dataset(root, "train")
    n = len(train)
    n_train, n_val, warning = protocol.train_size, protocol.val_size, None
    if n < n_train + n_val:
        n_val = round(n * n_val / (n_train + n_val))
        n_train = n - n_val
        if n_train < 1 or n_val < 1:
            raise ValueError(f"task {name} ({root}) has only {n} training images; the protocol needs "
                             f"{protocol.train_size} + {protocol.val_size}")
        warning = (f"task {name} has {n} training images, fewer than {protocol.train_size} + "
                   f"{protocol.val_size}: using {n_train} train / {n_val} val")
    g = torch.Generator().manual_seed(protocol.split_seed)
    perm = torch.randperm(n, generator=g).tolist()
    return TransferTask(name, root, list(train.class_names), n, sorted(perm[:n_train]), sorted(perm[n_train:n_train + n_val]),
                warning)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def _write_subset(task: TransferTask, folder: Path, train_idx: list[int], val_idx: list[int]) -> None:
    """`folder` as a dataset of the task's training images `train_idx` (train split) and `val_idx` (val split)."""
    files = find_idx_files(task.root, "train")
    if files is not None:
        full = IdxDataset.from_folder(task.root, "train")
        for (img, lab), idx in ((("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), train_idx),
                                (("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), val_idx)):
            _write_idx(folder / img, full.images[idx])
            _write_idx(folder / lab, full.labels[idx].astype(np.uint8))
        return
    full = ImageFolderDataset(task.root / "train")
    for split, idx in (("train", train_idx), ("val", val_idx)):
        for c in full.class_names:  # every class folder, also empty ones: the same class list everywhere
            (folder / split / c).mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(idx):
            path, label = full.samples[i]
            link = folder / split / full.class_names[label] / f"{k:05d}_{path.name}"
            try:
                link.symlink_to(path.resolve())
            except OSError:
                shutil.copy2(path, link)


def materialise(task: TransferTask, folder: Path, train_idx: list[int], val_idx: list[int]) -> Path:
    """The subset dataset at `folder`, written once (built aside, then renamed into place)."""
    if folder.is_dir():
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with _writing(folder):
        tmp.mkdir(parents=True)
        _write_subset(task, tmp, train_idx, val_idx)
        os.replace(tmp, folder)
    return folder


def task_test_split(task: TransferTask, img_mode: str):
    """The task's test split: `test/` of an image-folder tree when present, else what resolve_dataset calls val."""
    if find_idx_files(task.root, "train") is None and (task.root / "test").is_dir():
        return ImageFolderDataset(task.root / "test", img_mode, task.class_names)
    return resolve_dataset(task.root, "val", img_mode=img_mode, class_names=task.class_names)


# ----------------------------------------------------------------------------------------------- runs
def lr_tag(lr: float) -> str:
    return f"{lr:g}"


def run_config(backbone: Backbone, protocol: Protocol, task: TransferTask, data: Path, lr: float, seed: int,
               run_dir: Path) -> dict[str, Any]:
    """The engine config of one fit: full fine-tuning, no augmentation, a new head of the task's classes."""
    cfg = dict(DEFAULTS)
    cfg.update(
        model=backbone.model, pretrained=False, initial_checkpoint=backbone.weights, num_classes=task.n_classes,
        in_chans=backbone.in_chans,
        model_kwargs=dict(backbone.model_kwargs), data=str(data), limit_train=None, limit_val=None,
        epochs=protocol.epochs, cooldown_epochs=0, batch_size=protocol.batch_size, grad_accum=1,
        lr=None, lr_base=lr, lr_base_size=LR_SCALE_BATCH, opt="adamw", weight_decay=protocol.weight_decay,
        layer_decay=protocol.layer_decay, clip_grad=None, sched="cosine",
        warmup_epochs=protocol.warmup_frac * protocol.epochs, warmup_lr=0.0, min_lr=0.0,  # from 0, down to 0
        img_size=backbone.img_size, crop_pct=1.0, interpolation=backbone.interpolation,
        train_interpolation=backbone.interpolation, mean=backbone.mean, std=backbone.std,
        no_aug=True, crop_mode="squash", hflip=0.0, color_jitter=0.0, aa=None, reprob=0.0, mixup=0.0, cutmix=0.0,
        smoothing=0.0,
        drop_path=0.0, drop=0.0, ema=False, amp=protocol.amp, device=protocol.device, workers=protocol.workers,
        threads=protocol.threads, seed=seed, output=str(run_dir.parent), experiment=run_dir.name, resume=None,
        checkpoint_steps=0,
    )
    if resumable(run_dir):  # an unfinished run: the engine resumes it with its own weights
        cfg.update(resume=str(run_dir), initial_checkpoint=None)
    return cfg


def resumable(run_dir: Path) -> bool:
    """Whether `run_dir` holds a checkpoint the engine can resume from (also after a crash inside a commit)."""
    try:
        return (find_checkpoint(run_dir) / STATE_NAME).is_file()
    except FileNotFoundError:
        return False


def finished_rows(run_dir: Path, epochs: int) -> list[dict[str, Any]] | None:
    rows = read_summary(run_dir)
    return rows if (run_dir / "last").is_dir() and len(rows) >= epochs else None


class Progress:
    """Counts the fits of the whole transfer for the progress lines ("fit 3/12")."""

    def __init__(self, n_tasks: int, protocol: Protocol, log: Callable[[str], None]):
        self.total = n_tasks * (len(protocol.lrs) + 1) * protocol.seeds
        self.done, self.log = 0, log

    def next(self) -> str:
        self.done += 1
        return f"fit {self.done}/{self.total}"


def fit_run(cfg: dict[str, Any], progress: Progress) -> list[dict[str, Any]]:
    """The summary rows of the run `cfg` describes: read if it finished before, else trained (or resumed)."""

    run_dir = Path(cfg["output"]) / cfg["experiment"]
    rows = finished_rows(run_dir, cfg["epochs"])
    if rows is not None:
        progress.log(f"transfer: {progress.next()}: {run_dir} finished before; skipped")
        return rows
    progress.log(f"transfer: {progress.next()}: {'resuming' if cfg['resume'] else 'training'} {run_dir}")
    train(cfg)
    rows = finished_rows(run_dir, cfg["epochs"])
    if rows is None:
        raise RuntimeError(f"the run {run_dir} ended without finishing its {cfg['epochs']} epochs")
    return rows


def score_on_test(run_dir: Path, task: TransferTask, protocol: Protocol) -> dict[str, Any]:
    """Top-1 of the run's end-of-training weights (last/) on the task's test split; cached in test.json."""
    out = run_dir / "test.json"
    if out.is_file():
        return json.loads(out.read_text())
    device = resolve_device(protocol.device)
    model = create_model(pretrained=run_dir / "last").to(device)
    pcfg = model.pretrained_cfg
    in_chans = pcfg["input_size"][0]
    dataset = task_test_split(task, "L" if in_chans == 1 else "RGB")
    tf = create_eval_transform(tuple(pcfg["input_size"]), tuple(pcfg["mean"]), tuple(pcfg["std"]), 1.0,
                               pcfg["interpolation"], crop_mode="squash")
    loader = build_loader(dataset, tf, protocol.batch_size * 2, False, protocol.workers,
                          pin_memory=device.type == "cuda")
    metrics = evaluate(model, loader, device, protocol.amp)
    result = dict(top1=metrics["top1"], top5=metrics["top5"], loss=metrics["loss"], count=metrics["count"])
    with _writing(out):
        atomic_write(out, lambda p: Path(p).write_text(json.dumps(result, indent=2)))
    return result


# ----------------------------------------------------------------------------------------------- main
def check_output(output: Path, backbone: Backbone, protocol: Protocol) -> None:
    """`output/protocol.json`: written on the first call; a later call must use the same settings."""
    want = dict(backbone=asdict(backbone), protocol=protocol.fingerprint())
    want = json.loads(json.dumps(want))  # tuples → lists, as read back
    f = output / "protocol.json"
    if f.is_file():
        have = json.loads(f.read_text())
        have.get("backbone", {}).setdefault("model_kwargs", {})  # written before Backbone had model_kwargs
        if have != want:
            diff = sorted(k for part in ("backbone", "protocol") for k in want[part]
                          if have.get(part, {}).get(k) != want[part][k])
            raise ValueError(f"{output} holds a transfer run with other settings ({', '.join(diff)}); "
                             "use another --output or the same settings")
        return
    with _writing(f):
        output.mkdir(parents=True, exist_ok=True)
        atomic_write(f, lambda p: Path(p).write_text(json.dumps(want, indent=2)))


def save_split(task: TransferTask, folder: Path) -> None:
    """`split.json` of the task: the drawn indices (the same on every rerun with the same settings)."""
    f = folder / "split.json"
    data = dict(root=str(task.root.resolve()), n_available=task.n_available, train=task.train_idx, val=task.val_idx)
    if f.is_file() and json.loads(f.read_text()) != data:
        raise ValueError(f"{f} holds another draw of task {task.name} (was the task's data changed?); "
                         "use another --output")
    with _writing(f):
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(f, lambda p: Path(p).write_text(json.dumps(data)))


def pick_lr(lrs: Sequence[float], val_top1: dict[str, float]) -> float:
    """The lr with the highest mean val top-1 (`val_top1` keyed by `lr_tag`); the first listed of equal ones."""
    return max(lrs, key=lambda lr: val_top1[lr_tag(lr)])


def sweep_task(task: TransferTask, backbone: Backbone, protocol: Protocol, folder: Path,
               progress: Progress) -> dict[str, list[float]]:
    """Val top-1 (last epoch) of every lr x seed, trained on the drawn train part; keyed by `lr_tag`, per seed."""
    data = materialise(task, folder / "data_sweep", task.train_idx, task.val_idx)
    val: dict[str, list[float]] = {}
    for lr in protocol.lrs:
        for seed in range(protocol.seeds):
            run_dir = folder / f"sweep_lr{lr_tag(lr)}_seed{seed}"
            rows = fit_run(run_config(backbone, protocol, task, data, lr, seed, run_dir), progress)
            val.setdefault(lr_tag(lr), []).append(rows[-1]["top1"])
            progress.log(f"transfer: {task.name} lr {lr_tag(lr)} seed {seed}: val top-1 {rows[-1]['top1']:.2f}")
    return val


def final_task(task: TransferTask, backbone: Backbone, protocol: Protocol, folder: Path, lr: float,
               progress: Progress) -> list[float]:
    """Test top-1 per seed of `lr` retrained on the drawn train + val images."""
    data = materialise(task, folder / "data_final", sorted(task.train_idx + task.val_idx), task.val_idx)
    tests = []
    for seed in range(protocol.seeds):
        run_dir = folder / f"final_lr{lr_tag(lr)}_seed{seed}"
        fit_run(run_config(backbone, protocol, task, data, lr, seed, run_dir), progress)
        tests.append(score_on_test(run_dir, task, protocol)["top1"])
        progress.log(f"transfer: {task.name} final lr {lr_tag(lr)} seed {seed}: test top-1 {tests[-1]:.2f}")
    return tests


def run_task(task: TransferTask, backbone: Backbone, protocol: Protocol, output: Path, progress: Progress) -> dict[str, Any]:
    """Sweep, pick, retrain and test one task; its row of the results table."""
    folder = output / task.name
    save_split(task, folder)
    if task.warning:
        progress.log(f"transfer: warning: {task.warning}")
    val = sweep_task(task, backbone, protocol, folder, progress)
    val_mean = {k: float(np.mean(v)) for k, v in val.items()}
    best_lr = pick_lr(protocol.lrs, val_mean)
    progress.log(f"transfer: {task.name}: best lr {lr_tag(best_lr)} (val top-1 {val_mean[lr_tag(best_lr)]:.2f})")
    tests = final_task(task, backbone, protocol, folder, best_lr, progress)
    return dict(task=task.name, data=str(task.root.resolve()), n_classes=task.n_classes, n_train=len(task.train_idx),
                n_val=len(task.val_idx), final_train_images=len(task.train_idx) + len(task.val_idx),
                best_lr=best_lr, val_top1=val_mean, val_top1_per_seed=val, test_top1=float(np.mean(tests)),
                test_top1_per_seed=tests, warning=task.warning)


def local_tasks(tasks: Sequence[str | os.PathLike], output: str | os.PathLike) -> list[str | os.PathLike]:
    """The task folders, a sharded source (`wds:`, `hfds:`, `hfids:`) written once as an image-folder task under
    `output/sources/<its name>` (the seeded subsets are drawn from files)."""
    return [to_image_folders(str(t), Path(output) / "sources" / Path(parse_spec(str(t))[1]).name.split("{")[0])
            if is_sharded(t) else t for t in tasks]


def open_tasks(tasks: Sequence[str | os.PathLike], protocol: Protocol) -> list[TransferTask]:
    """Every task folder opened and checked (`open_task`), named by its folder."""
    if not tasks:
        raise ValueError("give at least one task folder with --data")
    return [open_task(root, name, protocol) for root, name in zip(tasks, task_names(tasks))]


def transfer(tasks: Sequence[str | os.PathLike], backbone: Backbone, protocol: Protocol,
             output: str | os.PathLike, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the protocol on every task folder in `tasks`; writes and returns the results (see the module doc)."""
    protocol.check()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("transfer runs in one process (many small fits); start it without torchrun")
    if not tasks:
        raise ValueError("give at least one task folder with --data")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"cannot write to {output}: it is a file, not a folder")
    opened = open_tasks(local_tasks(tasks, output), protocol)  # all checked before training
    check_output(output, backbone, protocol)
    progress = Progress(len(opened), protocol, log)
    rows: list[dict[str, Any]] = []
    for task in opened:
        rows.append(run_task(task, backbone, protocol, output, progress))
        result = write_results(output, backbone, protocol, rows)  # the table so far, after every task
    return result


def write_results(output: Path, backbone: Backbone, protocol: Protocol, rows: list[dict[str, Any]]) -> dict[str, Any]:
    result = dict(backbone=asdict(backbone), protocol=asdict(protocol), tasks=rows,
                  mean_test_top1=float(np.mean([r["test_top1"] for r in rows])) if rows else None)
    with _writing(output / "transfer.json"):
        atomic_write(output / "transfer.json", lambda p: Path(p).write_text(json.dumps(result, indent=2)))
    with _writing(output / "transfer.md"):
        atomic_write(output / "transfer.md", lambda p: Path(p).write_text(transfer_table(result)))
    return result


def transfer_table(result: dict[str, Any]) -> str:
    proto, rows = result["protocol"], result["tasks"]
    lrs = [lr_tag(lr) for lr in proto["lrs"]]
    weights = result["backbone"]["weights"] or "none (from scratch)"
    kwargs = result["backbone"].get("model_kwargs") or {}
    arch = result["backbone"]["model"] + (f" ({' '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else "")
    lines = [f"# Transfer: {arch} (weights: {weights})", "",
             f"{proto['train_size']} train / {proto['val_size']} val per task, {proto['epochs']} epochs, "
             f"{proto['seeds']} seed(s), batch {proto['batch_size']}, layer decay {proto['layer_decay']}, "
             f"wd {proto['weight_decay']}. Val top-1 is the mean over seeds; test top-1 is of the best lr "
             "retrained on train + val.", "",
             "| task | classes | train / val | best lr | " + " | ".join(f"val@{lr}" for lr in lrs) + " | test top-1 |",
             "|---|---|---|---|" + "---|" * len(lrs) + "---|"]
    for r in rows:
        vals = " | ".join(f"{r['val_top1'][lr]:.2f}" if lr in r["val_top1"] else "" for lr in lrs)
        lines.append(f"| {r['task']} | {r['n_classes']} | {r['n_train']} / {r['n_val']} | {lr_tag(r['best_lr'])} | "
                     f"{vals} | {r['test_top1']:.2f} |")
    if rows:
        empty = " | " * (len(lrs) + 4)
        lines.append(f"| **mean**{empty}**{result['mean_test_top1']:.2f}** |")
    return "\n".join(lines) + "\n"
