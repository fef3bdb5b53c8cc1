"""`lstmvision download`: fetch released weights into the caches (the Hugging Face Hub's, torch.hub's) and verify
each file by loading it into its architecture, so that later `create_model(name, pretrained=True)` calls (also
with `HF_HUB_OFFLINE=1`) read them from the cache."""
from __future__ import annotations

from typing import Any, Sequence

from lstmvision.models.hub import weights_file
from lstmvision.models.loading import create_model
from lstmvision.models.registry import get_pretrained_cfg, list_pretrained, released_tag


def resolve_tags(names: Sequence[str]) -> list[str]:
    """'arch' (its default tag), 'arch.tag' or a pattern ('vil2_*', 'all') -> the tags, in order, without repeats."""
    tags: list[str] = []
    for name in names:
        if name == "all" or any(c in name for c in "*?["):
            found = list_pretrained(None if name == "all" else name)
            if not found:
                raise ValueError(f"no released weights match {name!r} (see `lstmvision models --pretrained`)")
        else:
            found = [released_tag(name)]  # unknown names and tags: one error with suggestions
        tags += [t for t in found if t not in tags]
    return tags


def download(names: Sequence[str], verify: bool = True) -> list[dict[str, Any]]:
    """Fetch (or find in the cache) the weights of every tag `names` stands for; with `verify`, load each into its
    architecture (every key and shape checked). Returns one row per tag: tag, file, MB, source, parameters."""
    rows = []
    for tag in resolve_tags(names):
        cfg = get_pretrained_cfg(tag)
        path = weights_file(cfg, tag, progress=True)
        row = dict(tag=tag, file=str(path), mb=round(path.stat().st_size / 2**20, 1),
                   source=_source(cfg, path))
        if verify:
            model = create_model(tag, pretrained=True)
            row["params"] = sum(p.numel() for p in model.parameters())
        rows.append(row)
    return rows


def _source(cfg: dict[str, Any], path) -> str:
    """Which of the tag's sources the file came from (the Hub cache lives under a `models--ORG--NAME` folder)."""
    if cfg.get("hf_hub_id") and "models--" in str(path):
        return f"hf-hub:{cfg['hf_hub_id']}"
    return str(cfg.get("url") or path)
