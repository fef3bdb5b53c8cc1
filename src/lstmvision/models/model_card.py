"""The model card (`README.md`) that `lstmvision.save_for_hf` writes next to a saved model: YAML front matter the
Hugging Face Hub reads (library, pipeline tag, tags, license, datasets, base model), the model's parameters, MACs
and input, the training recipe and final metrics when the model comes from a training run (its `config.yaml`
and `summary.csv`), and how to load it with lstmvision, timm and transformers.

The card names the model by where it will be read: `repo_id` (`hf-hub:ORG/NAME`, the Hub repo it is pushed to)
or, without one, the folder as given (`local-dir:FOLDER`), so that its snippets run as they are.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any, Sequence

import torch.nn as nn
import yaml

from lstmvision.constants import DETECTOR_PREFIX, TASK_MODELS, TIMM_PREFIX, UPERNET_PREFIX
from lstmvision.models.flops import count_macs, count_params
from lstmvision.models.registry import get_pretrained_cfg, is_model, split_tag
from lstmvision.outputs import RUN_FILES

README_NAME = "README.md"
CARD_MARK = "<!-- model card written by lstmvision.save_for_hf; it is rewritten by the next save -->"
PIPELINE_TAGS = {None: "image-classification", "segment": "image-segmentation", "detect": "object-detection"}
FAMILY_NAMES = {"vision-lstm": "Vision-LSTM (ViL)", "sequencer": "Sequencer"}
FAMILIES = (("vil", "vision-lstm"), ("v_sequencer", "sequencer"), ("sequencer", "sequencer"),
            ("gru_sequencer", "sequencer"), ("rnn_sequencer", "sequencer"))
# Hub dataset ids of the datasets a pretrained tag or a run names
TAG_DATASETS = (("in1k", "imagenet-1k"), ("in21k", "imagenet-21k"), ("in22k", "imagenet-21k"))
FASHION_MNIST = "zalando-datasets/fashion_mnist"
_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")  # the Hub's license ids: apache-2.0, mit, cc-by-4.0, other, ...
_RECIPE = ("model", "pretrained", "initial_checkpoint", "data", "task", "epochs", "batch_size", "img_size",
           "in_chans", "recipe", "opt", "lr", "weight_decay", "sched", "warmup_epochs", "smoothing", "mixup", "cutmix",
           "aa", "reprob", "drop_path", "ema", "amp", "seed")


def task_of(model: nn.Module) -> str | None:
    """'segment' or 'detect' for the models of those tasks (their cfg's `task`, else their name), else None."""
    task = (getattr(model, "pretrained_cfg", None) or {}).get("task")
    name = str(getattr(model, "model_name", ""))
    if task in TASK_MODELS:
        return task
    return "segment" if name.startswith(UPERNET_PREFIX) else "detect" if name.startswith(DETECTOR_PREFIX) else None


def is_classifier(model: nn.Module) -> bool:
    """A classification model (not a segmentation or detection one)."""
    return task_of(model) is None


def run_folder(model: nn.Module) -> Path | None:
    """The training run folder the model's weights come from (a run's best/ or last/), if any."""
    source = getattr(model, "weights_source", None)
    if not isinstance(source, str) or not source:
        return None
    run = Path(source).parent
    return run if all((run / f).is_file() for f in RUN_FILES) else None


def read_run(run: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A run folder's settings (`config.yaml`) and its rows of `summary.csv` (one per epoch)."""
    settings = yaml.safe_load((run / "config.yaml").read_text()) or {}
    with open(run / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return (settings if isinstance(settings, dict) else {}), rows


# --------------------------------------------------------------------------------------- front matter
def license_entries(license_text: str | None) -> dict[str, str]:
    """The Hub's license keys for a cfg's `license`: its id, else `other` with the text as `license_name`."""
    if not license_text:
        return {}
    text = str(license_text).strip()
    if _LICENSE_ID.match(text.lower()) and text.lower() == text:
        return {"license": text}
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64] or "other"
    return {"license": "other", "license_name": name}


def tag_datasets(tag: str | None) -> list[str]:
    """Hub dataset ids a pretrained tag names ('in1k_e400' -> ['imagenet-1k'])."""
    return [hub_id for prefix, hub_id in TAG_DATASETS if tag and tag.split("_")[0].startswith(prefix)][:1]


def run_datasets(settings: dict[str, Any]) -> list[str]:
    """The Hub dataset a run's `data` names: `hfds:ORG/NAME` / `hfids:ORG/NAME` (not a local path), or
    Fashion-MNIST (its IDX folder)."""
    data = str(settings.get("data") or "")
    kind, _, body = data.partition(":")
    if kind in ("hfds", "hfids"):
        name = body.split(":")[0]
        local = name.startswith((".", "/", "~")) or Path(name).exists()
        return [] if local or name.count("/") != 1 else [name]
    return [FASHION_MNIST] if Path(data).name.lower().replace("_", "-") == "fashion-mnist" else []


def base_of(settings: dict[str, Any]) -> tuple[str | None, str | None]:
    """(Hub repo id, description) of the weights a run started from: the released tag of `--pretrained` (a Hub
    id when the tag has one), or its `initial_checkpoint`."""
    if settings.get("pretrained") and settings.get("model"):
        try:
            cfg = get_pretrained_cfg(str(settings["model"]))
        except ValueError:
            return None, str(settings["model"])
        tag = f"{cfg.get('architecture')}.{cfg['tag']}" if cfg.get("tag") else str(settings["model"])
        hub_id = cfg.get("hf_hub_id")
        return (hub_id.partition("@")[0] if hub_id else None), tag
    checkpoint = settings.get("initial_checkpoint")
    if isinstance(checkpoint, str) and checkpoint.startswith("hf-hub:"):
        return checkpoint[len("hf-hub:"):].partition("@")[0], checkpoint
    return None, (str(checkpoint) if checkpoint else None)


def front_matter(meta: dict[str, Any], remote_code: bool) -> str:
    why = ("# library_name: transformers -- the folder loads in transformers (config.json: model_type timm_wrapper,\n"
           "# auto_map to modeling_lstmvision.py), so the Hub's 'Use this model' snippet for transformers,\n"
           "# pipeline('image-classification', model=REPO, trust_remote_code=True) with lstmvision installed, runs;\n"
           "# timm's snippet would fail for the architectures timm lacks, as timm.create_model needs\n"
           "# `import lstmvision` first. The `timm` tag lists it with timm's models.\n") if remote_code else (
           "# library_name: lstmvision -- neither timm nor transformers builds this model; lstmvision does.\n")
    return f"---\n{why}{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n"


# ------------------------------------------------------------------------------------------ the card
def _family(name: str) -> str | None:
    return next((family for prefix, family in FAMILIES if name.startswith(prefix)), None)


def _input(model: nn.Module) -> tuple[int, int, int]:
    chans, h, w = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
    return int(chans), int(h), int(w)


def _macs(model: nn.Module) -> int | None:
    try:
        return int(count_macs(model, _input(model))["total"])
    except Exception:  # noqa: BLE001 (a model the counter cannot trace gets no MACs line, never a failed save)
        return None


def _number(n: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _details(model: nn.Module, arch: str, weights: str, names: Sequence[str] | None) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    chans, h, w = _input(model)
    macs = _macs(model)
    classes = f"{model.num_classes}" + (f" ({', '.join(map(str, names[:5]))}{', ...' if len(names) > 5 else ''})"
                                         if names else "")
    rows = [("architecture", f"`{arch}`" + (f" ({cfg['paper']})" if cfg.get("paper") else "")),
            ("parameters", _number(count_params(model))),
            ("MACs", f"{_number(macs)} at {h} x {w}" if macs is not None else "not counted"),
            ("input", f"{chans} x {h} x {w}, mean {list(cfg.get('mean', []))}, std {list(cfg.get('std', []))}, "
                      f"crop_pct {cfg.get('crop_pct')}, {cfg.get('interpolation')} resize"),
            ("classes", classes), ("weights", weights)]
    if cfg.get("license"):
        rows.append(("license", str(cfg["license"])))
    return ["## Model details", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]


def _setting(key: str, value: Any) -> str:
    """A run setting for the card; a local path (data, initial checkpoint) by its last component only."""
    text = str(value)
    if key in ("data", "initial_checkpoint") and ("/" in text or os.sep in text) and not text.startswith("hf-hub:"):
        kind, sep, body = text.partition(":") if text.split(":")[0] in ("wds", "hfds", "hfids") else ("", "", text)
        if not (kind and body.count("/") == 1 and not Path(body).exists()):
            text = f"{kind}{sep}.../{Path(body.split(':')[0]).name}"
    return text


def _metric(key: str, value: str) -> str:
    try:
        return f"{float(value):.4f}" if "loss" in key else f"{float(value):.2f}"
    except ValueError:
        return value


def _training(run: Path, settings: dict[str, Any], rows: list[dict[str, str]]) -> list[str]:
    recipe = [f"| {k} | {_setting(k, settings[k])} |" for k in _RECIPE if settings.get(k) not in (None, "", [], {})]
    lines = ["## Training", "", f"Trained by `lstmvision train` (run `{run.name}`); the settings that shape the "
             "result, from the run's `config.yaml`:", "", "| setting | value |", "|---|---|", *recipe, ""]
    if rows:
        last = rows[-1]
        metrics = [k for k in last if k not in ("epoch", "lr", "img_s")]
        lines += ["Final metrics (last epoch of the run's `summary.csv`, validation set):", "",
                  "| epoch | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics),
                  f"| {last['epoch']} | " + " | ".join(_metric(k, last[k]) for k in metrics) + " |", ""]
    return lines


def _location(folder: str, repo_id: str | None) -> tuple[str, str]:
    """(name for lstmvision/timm, name for transformers) of the saved model."""
    return (f"hf-hub:{repo_id}", repo_id) if repo_id else (f"local-dir:{folder}", folder)


def _usage(model: nn.Module, folder: str, repo_id: str | None, remote_code: bool) -> list[str]:
    spec, hf_name = _location(folder, repo_id)
    chans, h, w = _input(model)
    mode = "L" if chans == 1 else "RGB"
    image = f'image = Image.new("{mode}", ({w + w // 7}, {h + h // 7}), 128)  # or Image.open("your-image.jpg")'
    if not is_classifier(model):
        run = ["with torch.no_grad():", f"    print(model(torch.rand(1, {chans}, {h}, {w})).shape)  # (1, classes, H, W)"]
        return ["## Usage", "", "### lstmvision", "", "```python", "import torch", "import lstmvision", "",
                f'model = lstmvision.create_model("{spec}", pretrained=True).eval()',
                *(run if task_of(model) == "segment" else []), "```", ""]
    lines = ["## Usage", "", "### lstmvision", "", "```python", "from PIL import Image", "import lstmvision", "",
             f'model = lstmvision.create_model("{spec}", pretrained=True).eval()',
             "classify = lstmvision.Classifier(model)  # the model's own preprocessing and labels", image,
             "print(classify(image).top_k)", "```", "",
             "### timm", "", "```python", "import lstmvision  # registers lstmvision's models in timm", "import timm",
             "import torch", "from PIL import Image", "",
             f'model = timm.create_model("{spec}", pretrained=True).eval()',
             "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))", image,
             "with torch.no_grad():", "    probs = model(transform(image).unsqueeze(0)).softmax(-1)",
             "print(probs.topk(min(5, probs.shape[-1])))", "```", ""]
    if remote_code:
        lines += ["### transformers", "",
                  "`trust_remote_code=True` runs the repo's `modeling_lstmvision.py`, which imports lstmvision "
                  "(`pip install lstmvision`); without it, `import lstmvision` first:", "",
                  "```python", "from PIL import Image", "from transformers import pipeline", "",
                  f'classify = pipeline("image-classification", model="{hf_name}", trust_remote_code=True)',
                  image, "print(classify(image))", "```", "",
                  "```python", "import lstmvision  # registers lstmvision's models in timm, which transformers uses",
                  "import torch", "from PIL import Image",
                  "from transformers import AutoImageProcessor, AutoModelForImageClassification", "",
                  f'processor = AutoImageProcessor.from_pretrained("{hf_name}")',
                  f'model = AutoModelForImageClassification.from_pretrained("{hf_name}").eval()', image,
                  "with torch.no_grad():",
                  '    logits = model(**processor(image, return_tensors="pt")).logits',
                  "print(model.config.id2label[int(logits.argmax(-1))])", "```", ""]
    return lines


def _weights(model: nn.Module, run: Path | None, base: str | None) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if run is not None:
        return f"trained by lstmvision (run `{run.name}`)" + (f", starting from {base}" if base else "")
    if getattr(model, "weights_source", None) and cfg.get("tag"):
        return f"released `{cfg.get('architecture')}.{cfg['tag']}`" + (
            f" (from {cfg['origin_url']})" if cfg.get("origin_url") else "")
    return "as saved (random initialisation unless trained)" if not getattr(model, "weights_source", None) else \
        f"loaded from `{Path(str(model.weights_source)).name}`"


def model_card(model: nn.Module, folder: str | os.PathLike, repo_id: str | None = None, remote_code: bool = False,
               license: str | None = None, datasets: Sequence[str] | None = None,  # noqa: A002 (the Hub's key)
               base_model: str | None = None, class_names: Sequence[str] | None = None) -> str:
    """The text of `README.md` for `model` saved in `folder` (see the module docstring). `license`, `datasets`
    and `base_model` replace what the card would otherwise read from the model's cfg and its run; `class_names`
    the model's own."""
    name = str(getattr(model, "model_name", type(model).__name__))
    arch = name.removeprefix(TIMM_PREFIX)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    run = run_folder(model)
    settings, rows = read_run(run) if run is not None else ({}, [])
    base_id, base_text = base_of(settings) if run is not None else (None, None)
    weights_from_tag = run is None and getattr(model, "weights_source", None) and cfg.get("tag")
    found = run_datasets(settings) if run is not None else tag_datasets(cfg.get("tag") if weights_from_tag else None)
    backbone = split_tag(arch.split(":")[-1])[0]  # a segmenter's or detector's backbone
    family = _family(backbone) if is_model(backbone) else None
    meta: dict[str, Any] = {"library_name": "transformers" if remote_code else "lstmvision",
                            "pipeline_tag": PIPELINE_TAGS[task_of(model)],
                            "tags": [t for t in ("lstmvision", "timm" if remote_code else None, family,
                                                 PIPELINE_TAGS[task_of(model)],
                                                 "pytorch", "safetensors") if t]}
    meta.update(license_entries(license or cfg.get("license")))
    if datasets is not None or found:
        meta["datasets"] = list(datasets if datasets is not None else found)
    base = base_model or base_id
    if base:
        meta["base_model"] = base
        meta["base_model_relation"] = "finetune"
    title = f"# {arch}" + (f" ({Path(str(folder)).name})" if Path(str(folder)).name not in ("", ".", arch) else "")
    kind = "image classifier" if is_classifier(model) else f"{meta['pipeline_tag'].replace('-', ' ')} model"
    summary = f"{FAMILY_NAMES.get(family or '', 'An')} {kind} `{name}` for PyTorch, built by lstmvision."
    lines = [front_matter(meta, remote_code), CARD_MARK, "", title, "", summary, "",
             *_details(model, name, _weights(model, run, base_text or base),
                       class_names or getattr(model, "class_names", None))]
    if run is not None:
        lines += _training(run, settings, rows)
    lines += _usage(model, str(folder), repo_id, remote_code)
    lines += ["## Files", "", "`model.safetensors` (weights) and `config.json` (timm's Hub layout: `architecture`, "
              "`model_args`, `pretrained_cfg`, `label_names`)" + (", `modeling_lstmvision.py` (transformers' "
              "`trust_remote_code` route)" if remote_code else "") + "; written by `lstmvision.save_for_hf`.", ""]
    return "\n".join(lines)
