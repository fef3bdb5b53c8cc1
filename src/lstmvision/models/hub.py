"""Where released weights come from, as timm resolves them: a local `file`, else the Hugging Face Hub
(`hf_hub_id`; `model.safetensors` first, then `pytorch_model.bin`; cached in `$HF_HOME/hub`), else a `url` (cached
in `$TORCH_HOME/hub/checkpoints`). With `HF_HUB_OFFLINE=1` only the caches are read, and a file missing from them
is one error that names it and says how to fetch it (`lstmvision download`)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import huggingface_hub
import torch.hub
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

from lstmvision.errors import first_line
from lstmvision.weights import CONFIG_NAME, WEIGHTS_NAME, WeightsError, save_pretrained

HF_WEIGHTS_NAMES = (WEIGHTS_NAME, "pytorch_model.bin")  # what a Hub repo may hold, in the order they are tried
_DOWNLOAD_ERRORS = (OSError, ValueError, RuntimeError)  # network, HTTP status and cache errors of both clients


def offline() -> bool:
    """True when downloads are off (`HF_HUB_OFFLINE=1`, as huggingface_hub and timm read it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def split_revision(repo: str) -> tuple[str, str | None]:
    """'org/name@rev' -> ('org/name', 'rev')."""
    repo_id, _, revision = repo.partition("@")
    return repo_id, (revision or None)


def hub_file(repo: str, filename: str) -> Path:
    """`filename` of Hub repo `repo` ('org/name[@rev]'), from the cache or downloaded into it."""
    repo_id, revision = split_revision(repo)
    return Path(huggingface_hub.hf_hub_download(repo_id, filename, revision=revision))


def hub_config_dir(repo: str) -> Path:
    """The local snapshot folder holding the `config.json` of Hub repo `repo` (timm's layout)."""
    return _fetch(f"hf-hub:{repo}", lambda: hub_file(repo, CONFIG_NAME), f"{repo}/{CONFIG_NAME}").parent


def _hub_weights(repo: str) -> Path:
    """The weights file of Hub repo `repo`: model.safetensors, else pytorch_model.bin."""
    for i, name in enumerate(HF_WEIGHTS_NAMES):
        try:
            return hub_file(repo, name)
        except (EntryNotFoundError, LocalEntryNotFoundError) as e:
            if i == len(HF_WEIGHTS_NAMES) - 1:
                raise e
    raise AssertionError("unreachable")


def url_cache_path(url: str, file_name: str | None = None) -> Path:
    """Where torch.hub keeps the download of `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / (file_name or Path(urlparse(url).path).name)


def _url_weights(url: str, file_name: str | None, progress: bool) -> Path:
    path = url_cache_path(url, file_name)
    if path.is_file():
        return path
    if offline():
        raise LocalEntryNotFoundError(f"{path} is not in the torch.hub cache and downloads are off")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(path), progress=progress)
    return path


def _fetch(name: str, get, what: str):
    try:
        return get()
    except (LocalEntryNotFoundError, EntryNotFoundError, RepositoryNotFoundError) + _DOWNLOAD_ERRORS as e:
        raise WeightsError(_missing(name, [f"{what}: {first_line(e)}"])) from None


def _missing(name: str, reasons: list[str]) -> str:
    if offline():
        fix = (f"downloads are off (HF_HUB_OFFLINE=1): run `lstmvision download {name}` where the internet is "
               "reachable (it fills the same caches), or pass the file with pretrained_cfg_overlay=dict(file=PATH)")
    else:
        fix = ("check the network, or download the file by hand and pass it with "
               "pretrained_cfg_overlay=dict(file=PATH) (CLI: --initial-checkpoint PATH)")
    return f"no weights for {name}: {'; '.join(reasons)}. {fix}"


def weights_file(cfg: dict[str, Any], name: str, progress: bool = True) -> Path:
    """The local file of the weights `cfg` describes: `file` (a file or a folder holding model.safetensors /
    pytorch_model.bin), else `hf_hub_id`, else `url`; downloaded into the caches when not there yet."""
    if cfg.get("file"):
        path = Path(cfg["file"])
        if path.is_dir():
            path = next((path / n for n in HF_WEIGHTS_NAMES if (path / n).is_file()), path / WEIGHTS_NAME)
        if not path.is_file():
            raise WeightsError(f"no weights for {name}: {path} does not exist")
        return path
    reasons = []
    if cfg.get("hf_hub_id"):
        try:
            return _hub_weights(cfg["hf_hub_id"])
        except (LocalEntryNotFoundError, EntryNotFoundError, RepositoryNotFoundError) + _DOWNLOAD_ERRORS as e:
            reasons.append(f"Hugging Face Hub {cfg['hf_hub_id']}/{WEIGHTS_NAME}: {first_line(e)}")
    if cfg.get("url"):
        try:
            return _url_weights(cfg["url"], cfg.get("file_name"), progress)
        except (LocalEntryNotFoundError,) + _DOWNLOAD_ERRORS as e:
            reasons.append(f"{cfg['url']}: {first_line(e)}")
    if not reasons:
        raise WeightsError(f"{name} has no released weights (see `lstmvision models --pretrained`)")
    raise WeightsError(_missing(name, reasons))


def push_to_hf_hub(model: Any, repo_id: str, private: bool = False, commit_message: str = "Add model",
                   class_names: list[str] | None = None) -> str:
    """Save `model` in timm's Hub layout (`save_for_hf`) and upload it to Hub repo `repo_id` (created if
    missing); returns the commit URL. Needs a Hub token (`huggingface-cli login` or HF_TOKEN)."""
    api = huggingface_hub.HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, class_names=class_names)
        return str(api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message))
