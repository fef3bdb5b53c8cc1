"""Classification preprocessing: timm's evaluation transform, the check of its settings, and normalisation
values fitted to a model's input channels."""
from __future__ import annotations

from typing import Sequence

from timm.data import create_transform

from lstmvision.constants import INTERPOLATIONS


def check_eval_settings(crop_pct: float | None, interpolation: str | None) -> None:
    """--crop-pct in (0, 1] and a resize interpolation timm knows, as one clear error."""
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise ValueError(f"--crop-pct must be in (0, 1], got {crop_pct}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ValueError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}")


def create_eval_transform(input_size, mean, std, crop_pct: float = 1.0, interpolation: str = "bicubic",
                          crop_mode: str = "center"):
    """timm's eval transform; `crop_mode` 'squash' resizes to the input size ignoring the aspect ratio."""
    check_eval_settings(crop_pct, interpolation)
    return create_transform(input_size, is_training=False, mean=mean, std=std, crop_pct=crop_pct,
                            interpolation=interpolation, crop_mode=crop_mode)


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
