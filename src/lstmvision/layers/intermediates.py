"""timm's feature-extraction contract (`forward_intermediates`, `prune_intermediate_layers`) written once for a
model that runs a stack of steps (stages or blocks) over an NHWC token map.

A model mixes in `FeatureIntermediates`, names its stack in `intermediate_steps` and says what differs between
families through four hooks: how the input becomes the running state (`_begin`), how one step advances it
(`_step`), which NHWC map of the state a taken step yields (`_feature_map`) and what the final features are
(`_finish`). The state is whatever the model carries between steps (a map, or a map and class tokens).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models._features import feature_take_indices

OUTPUT_FORMATS = ("NCHW", "NHWC")


class FeatureIntermediates:
    """Mixin for an nn.Module with a `feature_info` entry per step, a `norm` after the steps and
    `reset_classifier(num_classes, global_pool)`."""

    intermediate_steps = "blocks"  # the attribute holding the stack (nn.ModuleList or nn.Sequential)

    def _begin(self, x: torch.Tensor) -> Any:
        """The state before the first step, from the input images."""
        raise NotImplementedError

    def _step(self, step: nn.Module, state: Any) -> Any:
        raise NotImplementedError

    def _feature_map(self, state: Any, index: int, norm: bool) -> torch.Tensor:
        """The (B, h, w, C) map of step `index`'s output; `norm`: as asked of forward_intermediates."""
        raise NotImplementedError

    def _finish(self, state: Any, complete: bool) -> torch.Tensor:
        """The final features; `complete` is False when stop_early ended the stack before its last step."""
        raise NotImplementedError

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The maps of the steps in `indices` (NCHW by default, or NHWC) and, unless `intermediates_only`, the
        final features; `stop_early` runs no step past the last one taken."""
        if output_fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        steps = getattr(self, self.intermediate_steps)
        take, max_index = feature_take_indices(len(steps), indices)
        run = steps[: max_index + 1] if stop_early else steps
        state = self._begin(x)
        intermediates = []
        for j, step in enumerate(run):
            state = self._step(step, state)
            if j in take:
                y = self._feature_map(state, j, norm)
                # (B, h, w, C) -> (B, C, h, w)
                intermediates.append(y.permute(0, 3, 1, 2) if output_fmt == "NCHW" else y)
        if intermediates_only:
            return intermediates
        return self._finish(state, len(run) == len(steps)), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the steps after the last one in `indices` (and the final norm, the head); returns the taken
        indices."""
        steps = getattr(self, self.intermediate_steps)
        take, max_index = feature_take_indices(len(steps), indices)
        setattr(self, self.intermediate_steps, steps[: max_index + 1])
        self.feature_info = self.feature_info[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take
