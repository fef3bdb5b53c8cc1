"""Runtime choices shared by every command: which device and how many CPU threads, timing steps on it, finding
checkpoints and loading a model from any spec (name, `timm:NAME`, saved/run folder, name + weights file)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

TIMM_PREFIX = "timm:"
UPERNET_PREFIX = "upernet:"  # a segmentation model saved by `lstmvision segment train`: UperNet on a backbone


def create_timm_model(name: str, num_classes: int | None, in_chans: int | None, img_size: int | None,
                      kwargs: dict[str, Any] | None = None) -> nn.Module:
    """timm model `name` (no download), any input size where the architecture allows; `model_name` is
    'timm:NAME' and `model_kwargs` what rebuilds it."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
    kw: dict[str, Any] = dict(kwargs or {})
    if num_classes is not None:
        kw["num_classes"] = num_classes
    if in_chans is not None:
        kw["in_chans"] = in_chans
    cfg = timm.get_pretrained_cfg(name)
    fixed = bool(getattr(cfg, "fixed_input_size", False)) if cfg is not None else False
    if img_size is not None and fixed:
        kw.setdefault("img_size", img_size)
    try:  # ViT-style models: let them take any input size (position embeddings interpolated)
        model = timm.create_model(name, pretrained=False, dynamic_img_size=True, **kw)
    except TypeError:
        model = timm.create_model(name, pretrained=False, **kw)
    model.model_name = TIMM_PREFIX + name
    model.model_kwargs = {k: v for k, v in kw.items() if k != "num_classes"}
    return model


def resolve_device(name: str | None) -> torch.device:
    """`name` ('cpu', 'cuda', 'cuda:1', ...) checked for availability; None: CUDA if present, else CPU."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"--device {name!r} is not supported: use cpu, cuda or cuda:N")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA GPU is available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_threads(workers: int, local_world: int = 1) -> int:
    """Compute threads per process on CPU: the cores left after the data workers (at least one core is left
    for the data pipeline / the rest of the system), shared by the local ranks.

    Oversubscribing cores is very costly for the LSTM kernels (OpenMP barriers): measured on a busy 2-core
    machine, 2 threads took 4.8 s per step where 1 thread took 0.3 s.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(local_world, 1) - max(workers, 1))


def fit_channels(values: Sequence[float], chans: int) -> tuple[float, ...]:
    """Per-channel normalisation values for a `chans`-channel input: repeated from one value, averaged to one."""
    values = tuple(float(v) for v in values)
    if len(values) == chans:
        return values
    if len(values) == 1:
        return values * chans
    if chans == 1:
        return (sum(values) / len(values),)
    raise ValueError(f"normalisation has {len(values)} values but the model takes {chans} channels")


def choose_device(name: str | None, workers: int = 0) -> torch.device:
    """`resolve_device(name)`; on CPU also the thread count `cpu_threads(workers)` (oversubscription is very slow
    for the LSTM kernels)."""
    device = resolve_device(name)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(workers))
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], Any], iters: int, device: torch.device, warmup: int = 0) -> float:
    """Seconds taken by `iters` calls of `step`, after `warmup` untimed calls; synchronised on CUDA before and
    after the timed calls so that queued work is counted."""
    for _ in range(warmup):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize(device)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------ checkpoints and models
CHECKPOINT_NAMES = ("best", "last", ".best.old", ".last.old")  # the checkpoint folders of a training run


def _checkpoint_order(prefer: str) -> tuple[str, ...]:
    # `.<name>.old` is the previous checkpoint when a save was interrupted mid-swap (engine.checkpoint)
    if prefer == "last":
        return "last", ".last.old"
    if prefer == "best":
        return "best", ".best.old", "last", ".last.old"
    raise ValueError(f"prefer must be 'best' or 'last', got {prefer!r}")


def find_checkpoint(path: str | os.PathLike, prefer: str = "last") -> Path:
    """The checkpoint folder (config.json + weights) that `path` names: the folder itself, the folder of a file in
    it, or in a training run folder its `prefer` checkpoint (`last/`: resuming, the default; `best/`: evaluating,
    else `last/`). Any fallback (no best/, an interrupted save) is said in one line on stderr."""
    from lstmvision.weights import CONFIG_NAME

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_file():
        path = path.parent
    if (path / CONFIG_NAME).is_file():
        return path
    order = _checkpoint_order(prefer)
    for name in order:
        if (path / name / CONFIG_NAME).is_file():
            if name != order[0]:
                print(f"lstmvision: {path} has no {order[0]}/ checkpoint; using {path / name}", file=sys.stderr)
            return path / name
    inside = "best/ or last/" if prefer == "best" else "last/"
    raise FileNotFoundError(f"{path} holds no checkpoint (expected config.json + model.safetensors, or {inside})")


def _is_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or Path(spec).exists()


def _head_classes(state: dict[str, torch.Tensor], classifier: Any) -> int | None:
    """Classes of the classifier weights in a state dict (own, timm or official key layout), if found."""
    names = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
    keys = [f"{n}.weight" for n in names if n] + ["head.fc.weight", "head.weight"]
    head = next((state[k] for k in keys if k in state), None)
    return int(head.shape[0]) if head is not None and head.dim() == 2 else None


def _label(folder: Path) -> str:
    folder = folder.resolve()
    return folder.parent.name if folder.name in CHECKPOINT_NAMES else folder.name


def _load_folder(folder: Path, num_classes: int | None, kwargs: dict[str, Any]) -> nn.Module:
    """A model saved by `save_pretrained` (a lstmvision or a `timm:` architecture)."""
    from lstmvision.models import create_model
    from lstmvision.weights import load_state_dict_into, read_config, read_state_dict

    saved = read_config(folder)
    arch = str(saved.get("architecture", ""))
    if arch.startswith(UPERNET_PREFIX):
        from lstmvision.models.upernet import create_segmenter

        model = create_segmenter(num_classes=saved.get("num_classes"), **{**(saved.get("kwargs") or {}), **kwargs})
        load_state_dict_into(model, read_state_dict(folder), source=str(folder))
        model.pretrained_cfg = {**dict(model.pretrained_cfg or {}), **(saved.get("pretrained_cfg") or {})}
        model.class_names = saved.get("class_names")
        return model
    if not arch.startswith(TIMM_PREFIX):
        return create_model(pretrained=folder, num_classes=num_classes, **kwargs)
    model = create_timm_model(arch[len(TIMM_PREFIX):], saved.get("num_classes"), None, None,
                              {**(saved.get("kwargs") or {}), **kwargs})
    load_state_dict_into(model, read_state_dict(folder), source=str(folder))
    model.pretrained_cfg = {**dict(model.pretrained_cfg or {}), **(saved.get("pretrained_cfg") or {})}
    model.class_names = saved.get("class_names")
    return model


def _load_named(name: str, pretrained: str | os.PathLike | None, num_classes: int | None, img_size: int | None,
                kwargs: dict[str, Any]) -> nn.Module:
    """A registered or `timm:` architecture, with weights from a file or a (run/checkpoint) folder if given."""
    from lstmvision.models import create_model, get_pretrained_cfg
    from lstmvision.weights import convert_state_dict, load_state_dict_into, read_state_dict

    timm_name = name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else None
    weights = None
    if pretrained is not None:
        weights = Path(pretrained)
        if not weights.exists():
            raise FileNotFoundError(f"pretrained weights not found: {weights}")
        if weights.is_dir():
            weights = find_checkpoint(weights, prefer="best")
    if timm_name is None and (weights is None or weights.is_dir()):
        return create_model(name, pretrained=weights, num_classes=num_classes, **kwargs)
    state = read_state_dict(weights) if weights is not None else None
    if timm_name is not None:
        import timm

        if num_classes is None and state is not None:
            cfg = timm.get_pretrained_cfg(timm_name) if timm.is_model(timm_name) else None
            num_classes = _head_classes(state, getattr(cfg, "classifier", None))
        model = create_timm_model(timm_name, num_classes, None, img_size, kwargs)
    else:
        if num_classes is None:
            num_classes = _head_classes(state, get_pretrained_cfg(name).get("classifier"))
        model = create_model(name, num_classes=num_classes, **kwargs)
    if state is not None:
        load_state_dict_into(model, convert_state_dict(state, model), source=str(weights))
    return model


def load_model(spec: str | os.PathLike, pretrained: str | os.PathLike | None = None, num_classes: int | None = None,
               in_chans: int | None = None, img_size: int | None = None, **kwargs: Any) -> nn.Module:
    """The model `spec` names, in eval mode, with `.label` (a short name for tables) set. `spec` is one of:

    - a registered name (`sequencer2d_s`), random init unless `pretrained` (a weights file in any supported
      layout, or a save_pretrained / checkpoint / training run folder) gives weights;
    - `timm:NAME`, built by timm without downloading (`pretrained` as above);
    - a folder written by `save_pretrained`, or a training run folder (its best/, else last/, said on stderr).

    A weights file without classes given gives the model its classifier's size. `img_size` matters only for
    timm models with a fixed input size; `in_chans` and `kwargs` override the architecture.
    """
    from lstmvision.models import is_model

    spec = str(spec)
    if in_chans:
        kwargs = {**kwargs, "in_chans": in_chans}
    if not (spec.startswith(TIMM_PREFIX) or is_model(spec)) and _is_path(spec):
        path = Path(spec)
        if path.is_file():
            raise ValueError(f"{path} is a weights file: say which architecture it holds "
                             f"(--model NAME --pretrained {path})")
        if pretrained is not None:
            raise ValueError(f"{path} is a saved model with its own weights: give either it or pretrained weights "
                             "for a model name, not both")
        folder = find_checkpoint(path, prefer="best")
        model = _load_folder(folder, num_classes, kwargs)
        model.label = _label(folder)
    else:
        model = _load_named(spec, pretrained, num_classes, img_size, kwargs)
        model.label = spec[len(TIMM_PREFIX):] if spec.startswith(TIMM_PREFIX) else spec
    return model.eval()
