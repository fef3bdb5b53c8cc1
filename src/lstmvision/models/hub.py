"""Where released weights come from, as timm resolves them: a local `file`, else the Hugging Face Hub
(`hf_hub_id`; `model.safetensors` first, then `pytorch_model.bin`; cached in `$HF_HOME/hub`), else a `url` (cached
in `$TORCH_HOME/hub/checkpoints`). With `HF_HUB_OFFLINE=1` only the caches are read, and a file missing from them
is one error that names it and says how to fetch it (`lstmvision download`).

And the way back: `save_for_hf` writes a model as a Hub repo folder that timm, transformers and the Hub read, and
`push_to_hf_hub` uploads one."""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

import huggingface_hub
import torch.hub
import torch.nn as nn
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from lstmvision.errors import first_line
from lstmvision.models.model_card import CARD_MARK, README_NAME, is_classifier, model_card
from lstmvision.outputs import atomic_write
from lstmvision.weights import CONFIG_NAME, WEIGHTS_NAME, WEIGHTS_NAMES, WeightsError, save_pretrained

HF_HUB_PREFIX = "hf-hub:"
HF_WEIGHTS_NAMES = WEIGHTS_NAMES  # what a Hub repo may hold, in the order they are tried
_DOWNLOAD_ERRORS = (OSError, ValueError, RuntimeError)  # network, HTTP status and cache errors of both clients
_LOCAL_COPY = "give a local copy: pretrained=PATH (CLI: --initial-checkpoint PATH)"
_MAX_REASON = 120  # characters of a client's own error message kept in ours


def offline() -> bool:
    """True when downloads are off (`HF_HUB_OFFLINE=1`, as huggingface_hub and timm read it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def split_revision(repo: str) -> tuple[str, str | None]:
    """'org/name@rev' -> ('org/name', 'rev')."""
    repo_id, _, revision = repo.partition("@")
    return repo_id, (revision or None)


def hub_repo(repo: str) -> tuple[str, str | None]:
    """'org/name[@rev]' -> ('org/name', 'rev'), after huggingface_hub's own repo id check: an empty id, '..',
    a path or more than one '/' is a ValueError before any cache or network lookup."""
    repo_id, revision = split_revision(repo)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ValueError(f"{HF_HUB_PREFIX}{repo} does not name a Hugging Face Hub repo: expected "
                         f"{HF_HUB_PREFIX}ORG/NAME[@REVISION] (letters, digits, '-', '_', '.'; at most one '/'; "
                         "no '..' or '--'; at most 96 characters)") from None
    return repo_id, revision


def hub_file(repo: str, filename: str) -> Path:
    """`filename` of Hub repo `repo` ('org/name[@rev]'), from the cache or downloaded into it."""
    repo_id, revision = hub_repo(repo)
    return Path(huggingface_hub.hf_hub_download(repo_id, filename, revision=revision))


def hub_config_dir(repo: str) -> Path:
    """The local snapshot folder holding the `config.json` of Hub repo `repo` (timm's layout)."""
    hub_repo(repo)
    try:
        return hub_file(repo, CONFIG_NAME).parent
    except (RepositoryNotFoundError, EntryNotFoundError) + _DOWNLOAD_ERRORS as e:
        raise WeightsError(_missing(HF_HUB_PREFIX + repo, [(f"{repo} (HF Hub)", _reason(e, CONFIG_NAME))],
                                    released=False)) from None


def _hub_weights(repo: str) -> Path:
    """The weights file of Hub repo `repo`: model.safetensors, else pytorch_model.bin."""
    for i, name in enumerate(HF_WEIGHTS_NAMES):
        try:
            return hub_file(repo, name)
        except EntryNotFoundError as e:  # also LocalEntryNotFoundError: a file not in the cache
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
        raise LocalEntryNotFoundError(f"{path} is not in the torch.hub cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(path), progress=progress)
    return path


def _reason(e: BaseException, files: str = "file") -> str:
    """Why a download failed, in a few words (`files`: what the repo was asked for)."""
    if isinstance(e, LocalEntryNotFoundError):  # before EntryNotFoundError, its base class
        # the client says this for any failed lookup; an HTTP status it got instead of the file is the real why
        status = getattr(getattr(e.__cause__, "response", None), "status_code", None)
        return f"the Hub answered HTTP {status} for {files}" if status else "not cached, and the Hub is unreachable"
    if isinstance(e, GatedRepoError):
        return "a gated repo: accept its terms on the Hub and log in (`hf auth login`)"
    if isinstance(e, RepositoryNotFoundError):
        return "no such repo (a private one needs `hf auth login`)"
    if isinstance(e, RevisionNotFoundError):
        return "no such revision"
    if isinstance(e, EntryNotFoundError):
        return f"the repo has no {files}"
    if isinstance(e, URLError) and not isinstance(e, HTTPError):  # '<urlopen error ...>' around the why
        e = e.reason if isinstance(e.reason, BaseException) else OSError(str(e.reason))
    text = first_line(e)
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON - 3] + "..."


def _missing(name: str, tried: list[tuple[str, str]], released: bool = True) -> str:
    """One line for weights that could not be found: what was tried, and the fix. `tried` holds (what, why)
    pairs; offline, the why is always 'not in the cache' and said once."""
    if name.startswith(HF_HUB_PREFIX):
        repo_id, revision = split_revision(name[len(HF_HUB_PREFIX):])
        rev = f" --revision {revision}" if revision else ""
        fetch = f"run `hf download {repo_id}{rev}` with network access (it fills the same cache)"
        local = "load a copy of the repo's files as local-dir:FOLDER"
        check = "Check the repo id and the network"
    else:
        fetch = f"run `lstmvision download {name}`" if released else "fetch the file"
        fetch += " with network access"
        local = _LOCAL_COPY
        check = "Check the network"
    if offline():
        looked = " and ".join(what for what, _ in tried)
        verb = "is" if len(tried) == 1 else "are"
        return (f"no weights for {name}: {looked} {verb} not cached and downloads are off (HF_HUB_OFFLINE=1); "
                f"{fetch}, or {local}")
    reasons = "; ".join(f"{what}: {why}" for what, why in tried)
    return f"no weights for {name}: {reasons}. {check}, or {local}"


def weights_file(cfg: dict[str, Any], name: str, progress: bool = True, released: bool = True) -> Path:
    """The local file of the weights `cfg` describes: `file` (a file or a folder holding model.safetensors /
    pytorch_model.bin), else `hf_hub_id`, else `url`; downloaded into the caches when not there yet. `released`:
    `name` is a released tag that `lstmvision download NAME` fetches (said in the error when it is missing)."""
    if cfg.get("file"):
        path = Path(cfg["file"])
        if path.is_dir():
            path = next((path / n for n in HF_WEIGHTS_NAMES if (path / n).is_file()), path / WEIGHTS_NAME)
        if not path.is_file():
            raise WeightsError(f"no weights for {name}: {path} does not exist")
        return path
    tried = []
    if cfg.get("hf_hub_id"):
        hub_repo(cfg["hf_hub_id"])
        try:
            return _hub_weights(cfg["hf_hub_id"])
        except (RepositoryNotFoundError, EntryNotFoundError) + _DOWNLOAD_ERRORS as e:
            tried.append((f"{cfg['hf_hub_id']} (HF Hub)", _reason(e, " or ".join(HF_WEIGHTS_NAMES))))
    if cfg.get("url"):
        try:
            return _url_weights(cfg["url"], cfg.get("file_name"), progress)
        except _DOWNLOAD_ERRORS as e:  # LocalEntryNotFoundError is an OSError
            url = urlparse(cfg["url"])
            tried.append((f"{Path(url.path).name} ({url.netloc})", _reason(e)))
    if not tried:
        raise WeightsError(f"{name} has no released weights (see `lstmvision models --pretrained`)")
    raise WeightsError(_missing(name, tried, released))


# ------------------------------------------------------------------------------- saving for the Hub
REMOTE_CODE_NAME = "modeling_lstmvision.py"  # the copy of lstmvision/models/hf_remote.py in a saved folder
_REMOTE_SOURCE = Path(__file__).with_name("hf_remote.py")
# config.json keys transformers reads: a model type it knows (so it loads the folder without remote code, through
# timm), the image processor, and the folder's own classes for trust_remote_code=True
TRANSFORMERS_CONFIG = dict(
    model_type="timm_wrapper",
    image_processor_type="TimmWrapperImageProcessor",
    auto_map={
        "AutoConfig": "modeling_lstmvision.LstmVisionConfig",
        "AutoModel": "modeling_lstmvision.LstmVisionModel",
        "AutoModelForImageClassification": "modeling_lstmvision.LstmVisionForImageClassification",
        "AutoImageProcessor": "modeling_lstmvision.LstmVisionImageProcessor",
    },
)


def save_for_hf(model: nn.Module, folder: str | os.PathLike, class_names: list[str] | None = None, *,
                repo_id: str | None = None, license: str | None = None,  # noqa: A002 (the Hub's key)
                datasets: list[str] | None = None, base_model: str | None = None) -> Path:
    """Save `model` as a Hugging Face Hub repo folder: `save_pretrained`'s files (timm's layout), for a classifier
    also the keys and the `modeling_lstmvision.py` that transformers reads (`AutoModelForImageClassification`,
    `AutoImageProcessor` and `pipeline` load the folder: after `import lstmvision`, or in any process with
    `trust_remote_code=True`), and a model card `README.md` (`lstmvision.models.model_card`). A model loaded from
    a training run folder (`create_model("runs/NAME")`) gets the run's recipe and final metrics in its card.

    `repo_id`: the Hub repo the folder is for (the card's snippets name it; `push_to_hf_hub` passes it);
    `license`, `datasets`, `base_model` replace what the card reads from the model and its run. An existing folder
    is written into; a README.md that lstmvision did not write is kept (a warning says so)."""
    if isinstance(model, (str, os.PathLike)):
        raise ValueError(f"save_for_hf takes a model, not {str(model)!r}: lstmvision.create_model({str(model)!r}) "
                         "builds the model of a saved folder or of a training run (its best/ checkpoint)")
    remote_code = is_classifier(model)
    folder = save_pretrained(model, folder, class_names, config_extra=TRANSFORMERS_CONFIG if remote_code else None)
    if remote_code:
        atomic_write(folder / REMOTE_CODE_NAME, lambda p: shutil.copyfile(_REMOTE_SOURCE, p))
    readme = folder / README_NAME
    if readme.is_file() and CARD_MARK not in readme.read_text(errors="replace"):
        warnings.warn(f"{readme} was not written by lstmvision: kept as it is (delete it for a new model card)",
                      stacklevel=2)
        return folder
    names = class_names or getattr(model, "class_names", None)
    text = model_card(model, str(folder), repo_id, remote_code, license, datasets, base_model, class_names=names)
    atomic_write(readme, lambda p: Path(p).write_text(text))
    return folder


def push_to_hf_hub(model: Any, repo_id: str, private: bool = False, commit_message: str = "Add model",
                   class_names: list[str] | None = None) -> str:
    """Save `model` as a Hub repo folder (`save_for_hf`, its card naming `repo_id`) and upload it to Hub repo
    `repo_id` (created if missing); returns the commit URL. Needs a Hub token (`hf auth login` or HF_TOKEN)."""
    api = huggingface_hub.HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hf(model, tmp, class_names=class_names, repo_id=repo_id)
        return str(api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message))
